"""RM training throughput: rmexp vs TRL's RewardTrainer, side by side, same model and same data.

    python benchmarks/rm_throughput.py --preset cpu-tiny            # here, 2 CPU cores, < 2 min
    python benchmarks/rm_throughput.py --preset gpu --json out.json # one CUDA GPU (Qwen2-0.5B shape, bf16)

Workload: a Qwen2-shaped `AutoModelForSequenceClassification(num_labels=1)` built from a `Qwen2Config` with random
init (no hub access), preference pairs of random token ids whose chosen and rejected lengths are each uniform in
[min_len, max_len], `pairs_per_step` pairs an optimizer step. Each implementation trains a fresh copy of the same
init (same seed) on the same pairs, exactly one pass over them (`warmup + steps` optimizer steps).

Metric: real (non-padding) tokens of chosen + rejected per second over the timed steps, i.e. from the end of the
last warmup step to the end of the last step (steady state: it includes every per-step cost of each
implementation: batch assembly and collation, logging, optimizer, CUDA sync). Setup (model build, Trainer init,
dataset preparation) and the warmup steps are excluded. `in-step tok/s` is the same token count over the sum of
step-begin -> step-end windows only (for TRL, what a TrainerCallback sees; it leaves out TRL's data fetch and
logging, which happen outside the on_step_begin/on_step_end window). `median-step tok/s` is the median over timed
steps of (step tokens / step cycle time): a check that resists short bursts of load from other jobs.
Each row runs `--repeats` times, interleaved with the other rows, and reports its fastest repeat (all are kept
in the JSON). The load average is printed: on shared cores, a competing job can slow a 2-thread run 10x or more.

Rows:
- rmexp / padded: rmexp's padded training step (`train.packing=false`; rmexp.rm: bucketed_batches, pair_forward =
  chosen and rejected in one forward, pairwise_loss, fused AdamW, cosine schedule, grad clip 1.0,
  per-step .item() logging as in train_reward_model).
- rmexp / packed: the packed step (`train.packing=true`, rmexp.packing): fixed budgets of 2 x pairs_per_step x
  max_len tokens (the memory of the largest padded batch) filled with as many pairs as fit, attention kept
  inside each sequence (varlen flash attention on CUDA, a block-diagonal mask elsewhere), no padding.
- rmexp / packed+compile (`--compile`): the same with the base model compiled once (static shapes).
- dense / ceiling (`--compile`): the same model on fixed dense [2 x pairs_per_step, max_len] batches of real
  tokens, plain causal attention, compiled: what the hardware does with no packing overhead at all.
  Compiled rows are optional; a failure is printed and recorded, never fatal.
- trl / default: `trl.RewardTrainer` + `RewardConfig` defaults (gradient checkpointing ON, linear schedule,
  fused AdamW, grad clip 1.0, logging every 10 steps, random sampler), with only what parity and the benchmark
  need pinned: lr, batch size, max_steps, seed, precision, no saving/reporting/tqdm, dataloader_num_workers=0.
- trl / no-grad-ckpt: the same with gradient_checkpointing=False.

Precision: `fp32`, or `bf16` = autocast mixed precision with fp32 master weights on both sides (what
RewardConfig(bf16=True) does through accelerate; the gpu preset's setting). Note TRL's default is bf16=True even on
CPU; cpu-tiny pins fp32 on both sides so both run the same arithmetic.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
FIRST_TOKEN_ID = 3  # random ids are drawn from [3, vocab): never pad, so "last non-pad token" is the last real one


# ----------------------------------------------------------------------------------------------------------------
# Configuration
@dataclass
class BenchConfig:
    preset: str = "cpu-tiny"
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vocab: int = 512
    min_len: int = 16
    max_len: int = 64
    pairs_per_step: int = 8
    steps: int = 40            # timed optimizer steps
    warmup: int = 5            # untimed optimizer steps before them
    lr: float = 1e-4           # same on both sides (RewardConfig's default learning rate)
    precision: str = "fp32"    # fp32 | bf16 (autocast, fp32 master weights)
    seed: int = 0
    threads: int = 2
    device: str = "auto"       # auto | cpu | cuda

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def n_pairs(self) -> int:
        return self.total_steps * self.pairs_per_step


PRESETS: dict[str, dict] = {
    # tiny Qwen2 shape; finishes in well under 2 minutes on 2 cores
    "cpu-tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=256, vocab=512, min_len=16, max_len=64,
                     pairs_per_step=8, steps=40, warmup=5, precision="fp32", device="auto"),
    # Qwen2-0.5B shape, as DESIGN.md's H100 measurement (TRL 27.1k tok/s default, 46.3k without grad ckpt)
    "gpu": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936, min_len=128,
                max_len=1024, pairs_per_step=8, steps=20, warmup=5, precision="bf16", device="cuda"),
}


# 2 shared CPU cores are noisy (a competing job can slow a 2-thread run 10x or more): interleave 5 rounds, take the best
DEFAULT_REPEATS = {"cpu-tiny": 5, "gpu": 1}
DEFAULT_BUDGET_S = {"cpu-tiny": 75.0, "gpu": None}  # no new round of repeats starts after this many seconds


def make_config(preset: str = "cpu-tiny", **overrides) -> BenchConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = BenchConfig(preset=preset, **{**PRESETS[preset], **overrides})
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={cfg.precision!r}: allowed fp32, bf16")
    if not 1 <= cfg.min_len <= cfg.max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={cfg.min_len}, max_len={cfg.max_len}")
    if cfg.steps < 1 or cfg.warmup < 1:
        raise ValueError(f"need steps >= 1 and warmup >= 1 (timing starts at the end of warmup), got "
                         f"steps={cfg.steps}, warmup={cfg.warmup}")
    if cfg.vocab <= FIRST_TOKEN_ID:
        raise ValueError(f"vocab={cfg.vocab} must exceed {FIRST_TOKEN_ID}")
    return cfg


def resolve_device(cfg: BenchConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"preset {cfg.preset!r} wants device={cfg.device!r} but torch {torch.__version__} sees no "
                         "CUDA device (install a CUDA build of torch, or pass --device cpu to force a slow CPU run)")
    return torch.device(cfg.device)


# ----------------------------------------------------------------------------------------------------------------
# Workload: model and data
def build_model(cfg: BenchConfig, seed: int):
    """A fresh random-init Qwen2 sequence-classification RM (same seed -> same weights)."""
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    config = Qwen2Config(
        vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.intermediate,
        max_position_embeddings=max(2 * cfg.max_len, 32768 if cfg.preset == "gpu" else 0),
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,  # use_cache: config default, as
        # a hub checkpoint would have it (rmexp's forward does not pass use_cache=False; TRL's does)
        num_labels=1, pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    model.config.pad_token_id = PAD_ID
    return model


def make_pairs(cfg: BenchConfig) -> list[tuple[list[int], list[int]]]:
    """`n_pairs` (chosen, rejected) pairs of random token ids, each length uniform in [min_len, max_len]."""
    rng = np.random.default_rng(cfg.seed)
    pairs = []
    for _ in range(cfg.n_pairs):
        lc, lr = rng.integers(cfg.min_len, cfg.max_len + 1, size=2)
        pairs.append((rng.integers(FIRST_TOKEN_ID, cfg.vocab, size=lc).tolist(),
                      rng.integers(FIRST_TOKEN_ID, cfg.vocab, size=lr).tolist()))
    return pairs


def real_tokens(pairs) -> int:
    return sum(len(c) + len(r) for c, r in pairs)


# ----------------------------------------------------------------------------------------------------------------
# Timing
@dataclass
class RunResult:
    impl: str
    setting: str
    steps: int = 0                 # timed steps
    warmup_steps: int = 0
    total_steps: int = 0
    total_tokens: int = 0          # real tokens over all steps (warmup included)
    timed_tokens: int = 0          # real tokens over the timed steps
    seconds: float = 0.0           # end of warmup -> end of last step
    tokens_per_s: float | None = None
    step_window_seconds: float = 0.0
    step_window_tokens_per_s: float | None = None
    median_step_tokens_per_s: float | None = None   # median over timed steps of tokens_i / cycle_i (robust to bursts)
    step_seconds: list = field(default_factory=list)  # cycle time of each timed step (end_{i-1} -> end_i)
    step_tokens: list = field(default_factory=list)   # real tokens of each timed step
    cpu_seconds: float = 0.0       # process CPU time over the same window as `seconds`
    tokens_per_cpu_s: float | None = None  # with --threads 1 a load-insensitive measure of work per token
    padded_tokens: int = 0         # tokens the model actually ran on (padding included), all steps
    threads: int = 0
    peak_memory_gib: float | None = None  # CUDA only: torch's peak allocated memory over the row (set-up included)
    error: str | None = None
    extra: dict = field(default_factory=dict)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _finish(res: RunResult, begins: list[float], ends: list[float], tokens: list[int], warmup: int,
            cpu_ends: list[float]) -> RunResult:
    n = len(ends)
    if n <= warmup or len(tokens) < n:
        raise RuntimeError(f"{res.impl}/{res.setting}: recorded {n} steps and {len(tokens)} token counts, "
                           f"need more than warmup={warmup}")
    res.total_steps, res.warmup_steps, res.steps = n, warmup, n - warmup
    res.total_tokens = int(sum(tokens[:n]))
    res.timed_tokens = int(sum(tokens[warmup:n]))
    res.seconds = ends[-1] - ends[warmup - 1]
    res.tokens_per_s = res.timed_tokens / res.seconds
    res.cpu_seconds = cpu_ends[n - 1] - cpu_ends[warmup - 1]
    res.tokens_per_cpu_s = res.timed_tokens / res.cpu_seconds if res.cpu_seconds > 0 else None
    res.step_window_seconds = sum(e - b for b, e in zip(begins[warmup:n], ends[warmup:n]))
    res.step_window_tokens_per_s = res.timed_tokens / res.step_window_seconds
    res.step_seconds = [ends[i] - ends[i - 1] for i in range(warmup, n)]
    res.step_tokens = [int(t) for t in tokens[warmup:n]]
    res.median_step_tokens_per_s = statistics.median(t / s for t, s in zip(res.step_tokens, res.step_seconds))
    res.threads = torch.get_num_threads()
    return res


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------------------
# rmexp
def run_rmexp(cfg: BenchConfig, pairs, device: torch.device) -> RunResult:
    """rmexp's padded RM training step (train.packing=false), as in rmexp.rm.train_reward_model, timed per step."""
    from rmexp.rm import bucketed_batches, lr_factor, make_optimizer, train_step

    res = RunResult("rmexp", "padded")
    model = build_model(cfg, cfg.seed).to(device)
    model.train()
    opt = make_optimizer(model, cfg.lr)
    lengths = [max(len(c), len(r)) for c, r in pairs]
    batches = bucketed_batches(lengths, cfg.pairs_per_step, random.Random(f"batches-{cfg.seed}"))
    total = len(batches)
    warmup_lr = max(1, round(0.05 * total))  # rmexp default: cosine, warmup_ratio 0.05, grad_clip 1.0
    begins, ends, cpu_ends, tokens, padded = [], [], [], [], 0
    history = []
    _sync(device)
    for step, batch_idx in enumerate(batches):
        begins.append(time.perf_counter())
        batch = [pairs[i] for i in batch_idx]
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, total, warmup_lr, "cosine")
        # rmexp's own step (one forward for chosen and rejected, loss, clip, AdamW); it moves the batch to the device.
        loss, rc, rr = train_step(model, opt, batch, PAD_ID, grad_clip=1.0, autocast=_autocast(device, cfg.precision))
        history.append((loss.item(), (rc > rr).float().mean().item(), (rc - rr).mean().item()))
        _sync(device)
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
        tokens.append(real_tokens(batch))
        padded += 2 * len(batch) * max(max(len(c), len(r)) for c, r in batch)
    res.padded_tokens = padded
    res.extra["final_loss"] = history[-1][0]
    return _finish(res, begins, ends, tokens, cfg.warmup, cpu_ends)


def budget_layout(cfg: BenchConfig, device: torch.device):
    """The packed rows' fixed budget: 2 x pairs_per_step x max_len tokens, the memory of the largest padded
    batch (one flat row under varlen attention on CUDA in bf16, rows of max_len elsewhere)."""
    from rmexp import packing
    from rmexp.rm import PackLayout

    budget = 2 * cfg.pairs_per_step * cfg.max_len
    flat = device.type == "cuda" and packing.varlen_attn is not None and cfg.precision == "bf16"  # = use_varlen
    rows, row_len = (1, budget) if flat else (budget // cfg.max_len, cfg.max_len)
    return PackLayout(rows, row_len, packing.max_segments(rows, row_len, cfg.min_len, cfg.max_len), cfg.max_len)


def run_rmexp_packed(cfg: BenchConfig, pairs, device: torch.device, compile_model: bool = False) -> RunResult:
    """rmexp's packed step (train.packing=true): fixed token budgets filled with as many pairs as fit, attention
    kept inside each sequence; with `compile_model` the base model is compiled once (static shapes)."""
    from rmexp import packing
    from rmexp.rm import compile_base, lr_factor, make_optimizer, train_step

    res = RunResult("rmexp", "packed+compile" if compile_model else "packed")
    model = build_model(cfg, cfg.seed).to(device)
    packing.enable_packed_attention(model)
    model.train()
    compiled = compile_base(model) if compile_model else None  # what train.compile=true does
    opt = make_optimizer(model, cfg.lr)
    layout = budget_layout(cfg, device)
    batches = layout.batches(pairs, random.Random(f"batches-{cfg.seed}"))
    total = len(batches)
    warmup_lr = max(1, round(0.05 * total))
    begins, ends, cpu_ends, tokens = [], [], [], []
    history = []
    _sync(device)
    for step, batch_idx in enumerate(batches):
        begins.append(time.perf_counter())
        batch = [pairs[i] for i in batch_idx]
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, total, warmup_lr, "cosine")
        loss, rc, rr = train_step(model, opt, batch, PAD_ID, grad_clip=1.0, autocast=_autocast(device, cfg.precision),
                                  layout=layout, compiled_base=compiled)
        history.append((loss.item(), (rc > rr).float().mean().item(), (rc - rr).mean().item()))
        _sync(device)
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
        tokens.append(real_tokens(batch))
    res.padded_tokens = total * layout.rows * layout.row_len
    res.extra.update(final_loss=history[-1][0], budget_tokens=layout.rows * layout.row_len, rows=layout.rows,
                     pairs_per_step_mean=len(pairs) / total)
    return _finish(res, begins, ends, tokens, cfg.warmup, cpu_ends)


def run_dense(cfg: BenchConfig, device: torch.device, compile_model: bool = True) -> RunResult:
    """The ceiling: the same model on fixed dense [2 x pairs_per_step, max_len] batches (every token real, plain
    causal attention, no mask), compiled, same optimizer and step; as many steps as the packed row runs."""
    from rmexp.rm import lr_factor, make_optimizer, pairwise_loss

    res = RunResult("dense", "ceiling")
    model = build_model(cfg, cfg.seed).to(device)
    model.train()
    if compile_model:  # always, except in the structure test
        model.base_model.compile(dynamic=False)
    opt = make_optimizer(model, cfg.lr)
    rows = 2 * cfg.pairs_per_step
    steps = cfg.total_steps
    g = torch.Generator().manual_seed(cfg.seed)
    begins, ends, cpu_ends, tokens = [], [], [], []
    _sync(device)
    for step in range(steps):
        begins.append(time.perf_counter())
        ids = torch.randint(FIRST_TOKEN_ID, cfg.vocab, (rows, cfg.max_len), generator=g).to(device)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, steps, 1, "cosine")
        with _autocast(device, cfg.precision):
            hidden = model.base_model(input_ids=ids, use_cache=False)[0][:, -1]
            r = model.score(hidden).squeeze(-1).float()
        loss = pairwise_loss(r[:cfg.pairs_per_step], r[cfg.pairs_per_step:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        _sync(device)
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
        tokens.append(rows * cfg.max_len)
    res.padded_tokens = sum(tokens)
    return _finish(res, begins, ends, tokens, cfg.warmup, cpu_ends)


# ----------------------------------------------------------------------------------------------------------------
# TRL
def _tiny_tokenizer():
    """A minimal tokenizer: RewardTrainer needs a processing_class with a pad token in its vocab (data is
    pre-tokenized, so it never tokenizes text; without one it would try to download the model's tokenizer)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD_ID, "<eos>": EOS_ID, "<unk>": UNK_ID}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@contextlib.contextmanager
def _removed_after(path: str):
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_trl(cfg: BenchConfig, pairs, device: torch.device, gradient_checkpointing: bool | None = None) -> RunResult:
    """trl.RewardTrainer on the same model init and pairs; `gradient_checkpointing=None` keeps TRL's default."""
    import datasets
    import transformers
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    res = RunResult("trl", "default" if gradient_checkpointing is None else
                    ("grad-ckpt" if gradient_checkpointing else "no-grad-ckpt"))
    model = build_model(cfg, cfg.seed)
    # TRL 1.16's canonical pre-tokenized columns are chosen_ids / rejected_ids (chosen_input_ids /
    # rejected_input_ids are accepted with a FutureWarning and renamed).
    ds = datasets.Dataset.from_dict({"chosen_ids": [c for c, _ in pairs], "rejected_ids": [r for _, r in pairs]})

    class CountingCollator(DataCollatorForPreference):
        """TRL's own collator; records the real tokens (attention_mask sum) of every batch it builds, in order."""
        counts: list = []
        padded: list = []

        def torch_call(self, examples):
            out = super().torch_call(examples)
            self.counts.append(int(out["attention_mask"].sum()))
            self.padded.append(int(out["attention_mask"].numel()))
            return out

    collator = CountingCollator(pad_token_id=PAD_ID)
    collator.counts, collator.padded = [], []

    class StepClock(TrainerCallback):
        def __init__(self):
            self.begins, self.ends, self.cpu_ends = [], [], []

        def on_step_begin(self, args, state, control, **kw):
            _sync(device)
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            _sync(device)
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())

    clock = StepClock()
    out_dir = tempfile.mkdtemp(prefix="rm_throughput_trl_")  # nothing is saved there (save_strategy="no")
    kwargs = dict(
        output_dir=out_dir,
        max_steps=cfg.total_steps, per_device_train_batch_size=cfg.pairs_per_step, learning_rate=cfg.lr,
        seed=cfg.seed, bf16=cfg.precision == "bf16", report_to="none", save_strategy="no",
        dataloader_num_workers=0, disable_tqdm=True, use_cpu=device.type == "cpu",
    )
    if gradient_checkpointing is not None:
        kwargs["gradient_checkpointing"] = gradient_checkpointing
    with warnings.catch_warnings(), _removed_after(out_dir):
        warnings.simplefilter("ignore")
        args = RewardConfig(**kwargs)
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=_tiny_tokenizer(),
                                data_collator=collator, callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # it prints the log dict every logging_steps; logging still runs
        res.extra["gradient_checkpointing"] = bool(trainer.args.gradient_checkpointing)
        name = lambda v: str(getattr(v, "value", v))  # noqa: E731 - enum -> its string
        res.extra["optim"] = name(trainer.args.optim)
        res.extra["lr_scheduler"] = name(trainer.args.lr_scheduler_type)
        res.extra["max_grad_norm"] = trainer.args.max_grad_norm
        res.extra["logging_steps"] = trainer.args.logging_steps
        trainer.train()
    n = len(clock.ends)
    res.padded_tokens = int(sum(collator.padded[:n]))
    trl_count = getattr(trainer, "_total_train_tokens", None)  # TRL's own running count, as a cross-check
    if trl_count is not None:
        res.extra["trl_total_train_tokens"] = int(trl_count)
    res = _finish(res, clock.begins, clock.ends, collator.counts, cfg.warmup, clock.cpu_ends)
    del trainer
    return res


# ----------------------------------------------------------------------------------------------------------------
# Orchestration
def _cleanup(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"cpu ({name}, {os.cpu_count()} logical cores)"


def versions() -> dict:
    import transformers
    v = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
         "trl": "not importable"}  # the TRL rows then report their own ImportError; the other rows still count
    with contextlib.suppress(ImportError):
        import trl
        v["trl"] = trl.__version__
    with contextlib.suppress(ImportError):
        import accelerate
        v["accelerate"] = accelerate.__version__
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
    return v


def run_benchmark(cfg: BenchConfig, compile_model: bool = False, repeats: int = 1, log=print,
                  budget_s: float | None = None) -> dict:
    """Runs every row `repeats` times, interleaved (A B C, A B C: load drift hits all rows alike); a row reports
    its fastest repeat. Returns the JSON-able report."""
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg)
    pairs = make_pairs(cfg)
    load_start = os.getloadavg()
    runners = [("rmexp", "padded", lambda: run_rmexp(cfg, pairs, device)),
               ("rmexp", "packed", lambda: run_rmexp_packed(cfg, pairs, device)),
               ("trl", "default", lambda: run_trl(cfg, pairs, device)),
               ("trl", "no-grad-ckpt", lambda: run_trl(cfg, pairs, device, gradient_checkpointing=False))]
    if compile_model:
        runners.append(("rmexp", "packed+compile", lambda: run_rmexp_packed(cfg, pairs, device, compile_model=True)))
        runners.append(("dense", "ceiling", lambda: run_dense(cfg, device)))
    runs: dict[tuple[str, str], list[RunResult]] = {(i, s): [] for i, s, _ in runners}
    t_all = time.perf_counter()
    skip = set()
    rounds = 0
    for rep in range(repeats):
        if rep and budget_s is not None and time.perf_counter() - t_all > budget_s:
            log(f"  time budget {budget_s:.0f}s spent after {rep} round(s): stopping repeats")
            break
        rounds += 1
        for impl, setting, fn in runners:
            if (impl, setting) in skip:
                continue
            t0 = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                r = fn()
                torch.set_num_threads(cfg.threads)  # in case a library changed it
                if device.type == "cuda":
                    r.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
            except Exception as e:  # noqa: BLE001 - one failing row must not kill the others
                r = RunResult(impl, setting, error=f"{type(e).__name__}: {e}")
                log(f"[{impl}/{setting}] FAILED: {r.error}")
                log(traceback.format_exc(limit=3))
            _cleanup(device)
            runs[(impl, setting)].append(r)
            tps = f"{r.tokens_per_s:,.0f} tok/s" if r.tokens_per_s else "failed"
            log(f"  repeat {rep + 1}/{repeats} {impl:5s} {setting:13s} {tps:>16s}  ({time.perf_counter() - t0:.1f}s "
                f"incl. setup, load {os.getloadavg()[0]:.2f})")
            if r.error and (setting.endswith("compile") or impl == "dense"):
                skip.add((impl, setting))  # a compile failure is reported once, not retried
    rows = []
    for (impl, setting), rs in runs.items():
        ok = [r for r in rs if r.error is None]
        # best of the repeats: other people's jobs only ever slow a run down, so the fastest run of a row is
        # the least contaminated estimate (as timeit's min); every repeat's number is kept in the JSON.
        row = asdict(max(ok, key=lambda r: r.tokens_per_s) if ok else rs[0])
        row["repeats_tokens_per_s"] = [r.tokens_per_s for r in rs]
        row["repeats_median_step_tokens_per_s"] = [r.median_step_tokens_per_s for r in rs]
        row["padding_efficiency"] = (row["total_tokens"] / row["padded_tokens"]) if row["padded_tokens"] else None
        rows.append(row)
    warns = []
    cores = os.cpu_count() or 1
    if device.type == "cpu" and load_start[0] > cores - cfg.threads + 0.5:
        warns.append(f"load average {load_start[0]:.2f} at start on {cores} cores with {cfg.threads} torch "
                     "threads: other jobs may be competing for the cores, which can slow a run 10x or more; "
                     "if a row looks off, rerun when the machine is quiet, or use --threads 1")
    for r in rows:
        reps = [x for x in r["repeats_tokens_per_s"] if x]
        if len(reps) > 1 and max(reps) > 2 * min(reps):
            warns.append(f"{r['impl']}/{r['setting']}: repeats vary more than 2x "
                         f"({', '.join(f'{x:,.0f}' for x in reps)} tok/s): the machine was busy")
    base = next((r["tokens_per_s"] for r in rows if (r["impl"], r["setting"]) == ("trl", "default")), None)
    for r in rows:
        r["ratio_vs_trl_default"] = (r["tokens_per_s"] / base) if (base and r["tokens_per_s"]) else None
    return {
        "benchmark": "rm_throughput", "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "preset": cfg.preset, "config": asdict(cfg), "device": device_name(device), "device_type": device.type,
        "versions": versions(), "threads": torch.get_num_threads(), "repeats": rounds,
        "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
        "data": {"n_pairs": len(pairs), "real_tokens": real_tokens(pairs)},
        "wall_seconds": time.perf_counter() - t_all, "rows": rows, "warnings": warns,
    }


def format_table(report: dict) -> str:
    cfg = report["config"]
    v = report["versions"]
    la = lambda x: "/".join(f"{a:.2f}" for a in x)  # noqa: E731
    lines = [
        f"RM training throughput  preset={report['preset']}  date={report['date']}",
        f"device: {report['device']}   threads: {report['threads']}   load avg (1/5/15 min): start "
        f"{la(report['loadavg_start'])}, end {la(report['loadavg_end'])}",
        f"versions: torch {v['torch']}, transformers {v['transformers']}, trl {v['trl']}"
        + (f", accelerate {v['accelerate']}" if "accelerate" in v else ""),
        f"model: Qwen2 hidden={cfg['hidden']} layers={cfg['layers']} heads={cfg['heads']}/{cfg['kv_heads']}kv "
        f"ffn={cfg['intermediate']} vocab={cfg['vocab']}, {cfg['precision']}; data: {report['data']['n_pairs']} "
        f"pairs, lengths {cfg['min_len']}..{cfg['max_len']}, {cfg['pairs_per_step']} pairs/step, "
        f"{cfg['warmup']} warmup + {cfg['steps']} timed steps, repeats={report['repeats']} (best of)",
        "",
    ]
    header = ["impl", "setting", "steps", "real tokens/s", "ratio vs TRL default", "in-step tok/s",
              "median-step tok/s", "pad eff.", "peak GiB"]
    body = []
    for r in report["rows"]:
        if r["tokens_per_s"] is None:
            body.append([r["impl"], r["setting"], "-", "FAILED", "-", "-", "-", "-", (r["error"] or "")[:60]])
            continue
        body.append([r["impl"], r["setting"], str(r["steps"]), f"{r['tokens_per_s']:,.0f}",
                     f"{r['ratio_vs_trl_default']:.2f}x" if r["ratio_vs_trl_default"] else "-",
                     f"{r['step_window_tokens_per_s']:,.0f}", f"{r['median_step_tokens_per_s']:,.0f}",
                     f"{r['padding_efficiency']:.2f}" if r["padding_efficiency"] else "-",
                     f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    fmt = lambda cells: " | ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    lines += [fmt(header), "-+-".join("-" * w for w in widths), *map(fmt, body)]
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)


def ratio_line(report: dict) -> str:
    """The headline: rmexp packed vs TRL's defaults, and (with --compile) packed+compile vs the dense ceiling."""
    tps = {(r["impl"], r["setting"]): r["tokens_per_s"] for r in report["rows"]}
    parts = []
    for a, b in ((("rmexp", "packed"), ("trl", "default")), (("rmexp", "packed+compile"), ("trl", "default")),
                 (("rmexp", "packed+compile"), ("trl", "no-grad-ckpt")), (("rmexp", "packed+compile"), ("dense", "ceiling"))):
        if tps.get(a) and tps.get(b):
            parts.append(f"{' '.join(a)} / {' '.join(b)} = {tps[a] / tps[b]:.2f}x")
    return "ratio: " + ("; ".join(parts) if parts else "n/a (a row failed)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-tiny", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int, help="timed optimizer steps (preset default)")
    p.add_argument("--warmup", type=int, help="untimed optimizer steps first (preset default)")
    p.add_argument("--pairs-per-step", type=int, dest="pairs_per_step")
    p.add_argument("--min-len", type=int, dest="min_len")
    p.add_argument("--max-len", type=int, dest="max_len")
    for name in ("hidden", "layers", "heads", "kv-heads", "intermediate", "vocab"):
        p.add_argument(f"--{name}", type=int, dest=name.replace("-", "_"), help="model shape override")
    p.add_argument("--lr", type=float)
    p.add_argument("--precision", choices=["fp32", "bf16"])
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda (preset default)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, same for both implementations")
    p.add_argument("--repeats", type=int, help="run every row this many times, interleaved, and report the best "
                   f"(default: {DEFAULT_REPEATS})")
    p.add_argument("--budget-s", type=float, dest="budget_s",
                   help=f"start no new round of repeats after this many seconds (default: {DEFAULT_BUDGET_S})")
    p.add_argument("--compile", action="store_true", help="also measure rmexp packed+compile and the dense ceiling "
                   "(both compiled once, static shapes)")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    a = p.parse_args(argv)
    overrides = {k: getattr(a, k) for k in ("steps", "warmup", "pairs_per_step", "min_len", "max_len", "hidden",
                                            "layers", "heads", "kv_heads", "intermediate", "vocab", "lr",
                                            "precision", "seed", "device", "threads")}
    try:
        cfg = make_config(a.preset, **overrides)
    except ValueError as e:
        p.error(str(e))
    repeats = DEFAULT_REPEATS[a.preset] if a.repeats is None else a.repeats
    if repeats < 1:
        p.error(f"--repeats must be >= 1, got {repeats}")
    budget = DEFAULT_BUDGET_S[a.preset] if a.budget_s is None else a.budget_s
    report = run_benchmark(cfg, compile_model=a.compile, repeats=repeats, budget_s=budget)
    print()
    print(format_table(report))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {a.json}")
    print(ratio_line(report))  # the last line
    required_failed = [r for r in report["rows"] if r["tokens_per_s"] is None and not r["setting"].endswith("compile")
                       and r["impl"] != "dense"]
    return 1 if required_failed else 0


if __name__ == "__main__":
    sys.exit(main())
