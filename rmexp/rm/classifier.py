"""Reward-model training and scoring.

An RM is `AutoModelForSequenceClassification(num_labels=1)` on a base model; its reward is the score head
applied to the hidden state of the last real token (right padding). Chosen and rejected go through the
model in one forward pass; the loss is `-logsigmoid(r_c - r_r - margin)` (margin: `train.margin` plus the row's
own from `data.margin_column`) plus an optional centering term
`center_coef * mean((r_c + r_r)^2)`. After training, rewards are normalised so that the mean reward over
the training set is 0; the offset is stored with the model and applied by `RewardModel.score`.

Batches of `batch_size` pairs are length-bucketed and right-padded (the default: toy dialogues bucket to 0.90
padding efficiency, and on CPU the packed path's block-diagonal mask costs more attention than that saves).
With `train.packing=true` chosen and rejected sequences are packed back to back into fixed token budgets of
about `batch_size` pairs each, attention kept inside each sequence (rmexp.packing): the path for ragged data
and for GPUs (varlen flash attention when the model runs in half precision; static shapes for torch.compile).
`train.compile=true` (packing only) compiles the base model for the training step once: every budget has the
same shapes, so it compiles at the first step and never again; evaluation and scoring stay eager.
Scoring packs where varlen attention runs (`score_texts`).

The kind `rm=classifier` (the default): its options are the shared `train.*` keys, so `conf/rm/classifier.yaml`
holds only the selector. Trained RMs are cached (`rmexp.cache`) by the base's content id, the preference rows,
the train config, the device and the backbone options. The backbone on real models (dtype, attention kernel,
gradient checkpointing, LoRA with the head saved, loading it back) is rmexp.rm.backbone. Over 400 lines because
the trainer, the scorer and the kind share the encoding and batching helpers above.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from transformers import AutoTokenizer

from rmexp import guards
from rmexp import packing
from rmexp.progress import progress_bar
from rmexp.rm import backbone
from rmexp.rm.base import RMContext, RMKind, ValueInit, base_identity, register_rm_kind, rows_identity
from rmexp.rm import scoring

RM_VERSION = 4  # bump when training changes, so cached RMs are retrained (4: fused AdamW on CPU)


# ---------------------------------------------------------------------------------------------------
# Text formatting and encoding
def format_dialogue(tok, prompt: str, response: str) -> str:
    """The text an RM scores: the tokenizer's chat template when it has one."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": response}], tokenize=False)
    return f"{prompt}\n\n{response}{tok.eos_token or ''}"


def encode(tok, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids per text, cut from the left to max_length (the score is read at the end, so the end
    of the response is what must survive); returns the ids and how many texts were cut."""
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    cut = sum(len(x) > max_length for x in ids)
    return [x[-max_length:] for x in ids], cut


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s in seqs])


def last_token_rewards(model, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Score head on the last real token of each right-padded row (the head runs on B vectors, not B*T)."""
    device = next(model.parameters()).device
    ids = ids.to(device)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long().to(device)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)[0]
    last = hidden[torch.arange(ids.shape[0], device=ids.device), (lengths - 1).to(ids.device)]
    return model.score(last).squeeze(-1).float()


@torch.no_grad()
def sorted_scores(model, ids: list[list[int]], pad_id: int, batch_tokens: int) -> torch.Tensor:
    """Rewards of token sequences (input order), sorted by length and cut into right-padded batches of at most
    `batch_tokens` tokens (padding included)."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(len(ids), dtype=torch.float32)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(ids[order[end]]) <= batch_tokens:
            end += 1
        idx = order[start:end]
        x, lengths = pad_batch([ids[i] for i in idx], pad_id)
        out[idx] = last_token_rewards(model, x, lengths).cpu()
        start = end
    return out


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float | torch.Tensor = 0.0,
                  center_coef: float = 0.0) -> torch.Tensor:
    """Mean of -logsigmoid(r_c - r_r - margin); `margin` a number or one per pair (data.margin_column)."""
    loss = -F.logsigmoid(r_chosen - r_rejected - margin).mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss


def bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort by length inside windows of 32 batches, cut batches, shuffle the batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------------
# The trained model, as the other stages use it
@dataclass
class RewardModel:
    model: torch.nn.Module
    tok: object
    offset: float = 0.0          # subtracted from raw scores: mean training reward becomes 0
    max_length: int = 64
    path: Path | None = None
    info: dict = field(default_factory=dict)
    kind: ClassVar[str] = "classifier"

    def describe(self) -> dict:
        return {"kind": self.kind, "params": sum(p.numel() for p in self.model.parameters()),
                "metrics": dict(self.info.get("metrics", {})),
                "history": {k: [tuple(x) for x in v] for k, v in self.info.get("history", {}).items()}}

    def value_init(self) -> ValueInit:
        """PPO's value model starts as this RM: the score head read at every token, minus the same offset."""
        return ValueInit(model=self.model, offset=self.offset)

    @torch.no_grad()
    def score_texts(self, texts: list[str], batch_tokens: int = 4096) -> np.ndarray:
        """Normalised rewards of formatted texts, in batches of at most `batch_tokens` tokens. Packed (no
        padding, fixed shapes; rmexp.packing) where varlen attention runs (CUDA, half precision), in flat budgets
        of at least `packing.VARLEN_SCORE_TOKENS` (small ones leave the GPU idle between launches); elsewhere
        distinct texts in groups of one length, no mask, the last layer on the last token only
        (rmexp.rm.scoring; benchmarks/scoring.py: 2.2x-3.1x padded batches on CPU, the masked packed path ~1.3x)."""
        self.model.eval()
        ids, _ = encode(self.tok, texts, self.max_length)
        if not ids:
            return np.zeros(0)
        if packing.use_varlen(self.model, next(self.model.parameters()).device):
            packing.enable_packed_attention(self.model)
            scores = packing.packed_scores(self.model, ids, self.tok.pad_token_id,
                                           max(batch_tokens, packing.VARLEN_SCORE_TOKENS))
        else:
            scores = scoring.grouped_scores(self.model, ids, batch_tokens)
        return scores.double().numpy() - self.offset

    def score(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> np.ndarray:
        return self.score_texts([format_dialogue(self.tok, p, r) for p, r in zip(prompts, responses)], batch_tokens)


def resolve_device(name: str) -> torch.device:
    """cpu | cuda | auto (cuda when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device (is the CUDA build of torch installed?)")
    return torch.device(name)


def load_reward_model(path: Path | str, trust_remote_code: bool = False, device: str = "cpu") -> RewardModel:
    """A trained RM directory: full weights, or a LoRA adapter with the head on its base (rmexp.rm.backbone)."""
    path = Path(path)
    info = json.loads((path / "rmexp_rm.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    dev = resolve_device(device)
    model = backbone.load_backbone(path, info, dev, trust_remote_code)
    model.config.pad_token_id = tok.pad_token_id
    return RewardModel(model.to(dev).eval(), tok, offset=info["offset"], max_length=info["max_length"],
                       path=path, info=info)


# ---------------------------------------------------------------------------------------------------
# Training
def split_pairs(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Held-out pairs by prompt, so eval/acc never scores a prompt seen in training."""
    keys = sorted({r.get("prompt_key", r["prompt"]) for r in rows})
    random.Random(f"evalsplit-{seed}").shuffle(keys)
    held = set(keys[:round(eval_fraction * len(keys))])
    train = [r for r in rows if r.get("prompt_key", r["prompt"]) not in held]
    return train, [r for r in rows if r.get("prompt_key", r["prompt"]) in held]


def _orient_by_gold(row: dict) -> dict:
    if "gold_chosen" in row and row["gold_chosen"] < row["gold_rejected"]:
        return {**row, "chosen": row["rejected"], "rejected": row["chosen"],
                "gold_chosen": row["gold_rejected"], "gold_rejected": row["gold_chosen"]}
    return row


def encode_pairs(tok, rows: list[dict], max_length: int,
                 overlong: str) -> tuple[list[tuple[list[int], list[int]]], dict, list[int]]:
    """Token ids of each row's (chosen, rejected) dialogue; overlong pairs cut from the left or dropped. Returns the
    pairs, counts of both, and the index of the row each kept pair came from."""
    chosen, _ = encode(tok, [format_dialogue(tok, r["prompt"], r["chosen"]) for r in rows], 10 ** 9)
    rejected, _ = encode(tok, [format_dialogue(tok, r["prompt"], r["rejected"]) for r in rows], 10 ** 9)
    pairs, kept, truncated, dropped = [], [], 0, 0
    for i, (c, r) in enumerate(zip(chosen, rejected)):
        if max(len(c), len(r)) > max_length:
            if overlong == "drop":
                dropped += 1
                continue
            truncated += 1
            c, r = c[-max_length:], r[-max_length:]
        pairs.append((c, r))
        kept.append(i)
    return pairs, {"data/truncated": float(truncated), "data/dropped": float(dropped)}, kept


def pair_margins(rows: list[dict], kept: list[int], margin: float) -> torch.Tensor | None:
    """Per-pair loss margins, `train.margin` + the row's own (data.margin_column); None when no row has one."""
    if not any("margin" in r for r in rows):
        return None
    return torch.tensor([margin + rows[i].get("margin", 0.0) for i in kept], dtype=torch.float32)


def pair_forward(model, pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected of a batch in ONE forward pass: rows [c_0..c_B, r_0..r_B]."""
    ids, lengths = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], pad_id)
    rewards = last_token_rewards(model, ids, lengths)
    return rewards[:len(pairs)], rewards[len(pairs):]


@dataclass(frozen=True)
class PackLayout:
    """A fixed token budget: `rows` x `row_len` tokens, `segments` entries of cu_seqlens, `max_seqlen` the
    longest sequence (all static, so a compiled model sees one shape)."""
    rows: int
    row_len: int
    segments: int
    max_seqlen: int

    @classmethod
    def for_pairs(cls, pairs, pairs_per_step: int, max_length: int, flat: bool) -> "PackLayout":
        """`flat`: one row for varlen attention (CUDA, half precision), else rows of max_length."""
        lengths = [(len(c), len(r)) for c, r in pairs]
        rows, row_len = packing.train_layout(lengths, pairs_per_step, max_length, flat)
        shortest = min(min(c, r) for c, r in lengths)
        return cls(rows, row_len, packing.max_segments(rows, row_len, shortest, max_length), max_length)

    def batches(self, pairs, rng: random.Random) -> list[list[int]]:
        order = list(range(len(pairs)))
        rng.shuffle(order)
        return packing.budget_batches([(len(c), len(r)) for c, r in pairs], order, self.rows, self.row_len)

    def pack(self, batch, pad_id: int, device) -> packing.Packed:
        return packing.pack_pairs(batch, pad_id, self.row_len, self.rows, self.segments, self.max_seqlen).to(device)


def make_optimizer(model, lr: float, weight_decay: float = 0.0, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW with the fused kernel (one multi-tensor kernel instead of a loop over parameters) on CPU and CUDA;
    `fused=False` for the plain loop. Same arithmetic: after 30 steps the parameters agree to 1e-5
    (tests/test_packing.py) and the tiny preset's metrics agree to 5 decimals. Over the default RM's ~450 steps
    the two drift apart as any ulp-level change does, and eval/acc moves by as much as a new seed moves it
    (benchmarks/optimizer_seeds.py, benchmarks/README.md): the 0.62 vs 0.76 once blamed on fused was that."""
    if fused is None:
        fused = next(model.parameters()).device.type in ("cpu", "cuda")
    trainable = [p for p in model.parameters() if p.requires_grad]  # all of them, except under LoRA
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, fused=fused)


def compile_base(model) -> torch.nn.Module:
    """The transformer under the score head, compiled for one set of shapes (`dynamic=False`): the packed step's
    budgets all have the same shapes, so it compiles at the first step and never again. It shares `model`'s
    parameters (training through it trains `model`); `model` itself stays eager for evaluation's other shapes.
    Compiled arithmetic is not eager's to the last bit (fused kernels), so it is part of an RM's identity."""
    import torch._dynamo

    # A sweep's trial process trains many RMs: each new budget shape would count towards dynamo's recompile limit,
    # past which it runs eager in silence (an RM keyed as compiled, trained eager). Each RM compiles afresh, and a
    # recompile inside one RM's training, whose shapes never change, is an error rather than a fallback.
    torch._dynamo.reset()
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(model.base_model, dynamic=False, fullgraph=True)  # a graph break is an error, not eager


def train_step(model, opt, batch: list[tuple[list[int], list[int]]], pad_id: int, margin: float | torch.Tensor = 0.0,
               center_coef: float = 0.0, grad_clip: float = 1.0, autocast=None,
               layout: PackLayout | None = None, compiled_base: torch.nn.Module | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch of pairs; returns (loss, r_chosen, r_rejected), detached.

    `margin` is a number or one per pair; `autocast` is an optional context manager for the forward (e.g. bf16
    on a GPU); `layout` packs the batch into a fixed token budget (rmexp.packing) instead of padding it;
    `compiled_base` (`compile_base(model)`, packed steps only) runs the packed forward."""
    if compiled_base is not None and layout is None:
        raise ValueError("a compiled base needs packed steps (layout): padded batches change shape every step")
    with autocast if autocast is not None else contextlib.nullcontext():
        if layout is None:
            rc, rr = pair_forward(model, batch, pad_id)
        else:
            rc, rr = packing.packed_pair_rewards(model, layout.pack(batch, pad_id, next(model.parameters()).device),
                                                 compiled_base)
    loss = pairwise_loss(rc, rr, margin, center_coef)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach(), rc.detach(), rr.detach()


@torch.no_grad()
def pair_accuracy(model, pairs, pad_id: int, batch_size: int = 64,
                  packed_row_len: int | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Share of pairs with r_chosen > r_rejected, and the rewards; packed into rows of `packed_row_len`
    tokens when given (no padding), else right-padded."""
    model.eval()
    rc, rr = [], []
    device = next(model.parameters()).device
    for i in range(0, len(pairs), batch_size):
        if packed_row_len:
            c, r = packing.packed_pair_rewards(model, packing.pack_pairs(pairs[i:i + batch_size], pad_id,
                                                                           packed_row_len).to(device))
        else:
            c, r = pair_forward(model, pairs[i:i + batch_size], pad_id)
        rc.append(c)
        rr.append(r)
    if not rc:
        return float("nan"), np.zeros(0), np.zeros(0)
    rc, rr = torch.cat(rc).double().cpu().numpy(), torch.cat(rr).double().cpu().numpy()
    return float((rc > rr).mean()), rc, rr


def train_reward_model(base_path: Path | str, rows: list[dict], cfg: DictConfig, out_dir: Path,
                       trust_remote_code: bool = False, progress: bool = True, device: str = "cpu") -> RewardModel:
    """Train an RM on preference rows ({prompt, chosen, rejected}), save it to out_dir, return it."""
    t = cfg.train
    torch.manual_seed(t.seed)
    tok = AutoTokenizer.from_pretrained(str(base_path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # many hub tokenizers have none; padding is masked and the reward read by length
        tok.pad_token = tok.eos_token
    dev = resolve_device(device)
    model = backbone.load_classifier(base_path, dev, cfg.model.dtype, cfg.model.attn_implementation,
                                     trust_remote_code)
    model.config.pad_token_id = tok.pad_token_id
    model.to(dev)
    adapter = backbone.add_lora(model, t)  # None for full fine-tuning; else LoRA layers now live inside `model`
    if t.gradient_checkpointing:
        backbone.enable_checkpointing(model)
    train_rows, eval_rows = split_pairs(rows, cfg.data.eval_fraction, cfg.data.seed)
    # eval/acc measures agreement with the truth: where gold scores exist (toy world), held-out pairs
    # are oriented by gold, so label noise in the data cannot inflate it.
    eval_rows = [_orient_by_gold(r) for r in eval_rows]
    train_pairs, data_stats, kept = encode_pairs(tok, train_rows, t.max_length, t.overlong)
    margins = pair_margins(train_rows, kept, t.margin)
    margins = margins.to(dev) if margins is not None else None
    eval_pairs, _, _ = encode_pairs(tok, eval_rows, t.max_length, "truncate")
    guards.check_coverage(guards.coverage(train_pairs, tok.unk_token_id), cfg.data.max_unk_share,
                          cfg.data.max_identical_share, f"data.source={cfg.data.source} training pairs", cfg.model.name)
    if not train_pairs:
        raise ValueError(f"no training pairs left (data.size={cfg.data.size}, train.overlong={t.overlong}, "
                         f"train.max_length={t.max_length}, {data_stats})")
    lengths = [max(len(c), len(r)) for c, r in train_pairs]
    rng = random.Random(f"batches-{t.seed}")
    layout = None
    if t.packing:  # fixed token budgets of ~batch_size pairs each (rmexp.packing), planned for all epochs
        packing.enable_packed_attention(model)
        # Varlen attention needs half precision (model.dtype on CUDA); otherwise rows of max_length.
        flat = packing.use_varlen(model, next(model.parameters()).device)
        layout = PackLayout.for_pairs(train_pairs, t.batch_size, t.max_length, flat)
        epochs = [layout.batches(train_pairs, rng) for _ in range(t.epochs)]
    else:
        epochs = [bucketed_batches(lengths, t.batch_size, rng) for _ in range(t.epochs)]
    compiled_base = compile_base(model) if t.compile else None  # validation: compile comes with packing
    steps_per_epoch = len(epochs[0])
    total = sum(map(len, epochs))
    warmup = max(1, round(t.warmup_ratio * total))
    opt = make_optimizer(model, t.lr, t.weight_decay)
    history: dict[str, list[tuple[int, float]]] = {"train/loss": [], "train/acc": [], "train/margin": []}
    real_tokens, start, step = 0, time.time(), 0
    model.train()
    bar = progress_bar(None, "rm train", progress, total=total)
    if compiled_base is not None:
        bar.set_postfix_str("compiling at the first step", refresh=True)
    for epoch_batches in epochs:
        for batch_idx in epoch_batches:
            batch = [train_pairs[i] for i in batch_idx]
            for group in opt.param_groups:
                group["lr"] = t.lr * lr_factor(step, total, warmup, t.schedule)
            margin = t.margin if margins is None else margins[batch_idx]
            try:
                loss, rc, rr = train_step(model, opt, batch, tok.pad_token_id, margin, t.center_coef, t.grad_clip,
                                          layout=layout, compiled_base=compiled_base)
            except torch._dynamo.exc.Unsupported as err:  # compile_base asks for one graph: a break is this error
                raise RuntimeError(f"train.compile=true: the base model does not compile as one graph on {dev} "
                                   f"({str(err).splitlines()[0]}); train it with train.compile=false") from err
            guards.check_finite("RM train/loss", loss.item(), step, total, guards.rm_settings(t))
            real_tokens += sum(len(c) + len(r) for c, r in batch)
            history["train/loss"].append((step, loss.item()))
            history["train/acc"].append((step, (rc > rr).float().mean().item()))
            history["train/margin"].append((step, (rc - rr).mean().item()))
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    seconds = time.time() - start
    row_len = t.max_length if t.packing else None
    train_acc, rc_all, rr_all = pair_accuracy(model, train_pairs, tok.pad_token_id, packed_row_len=row_len)
    eval_acc, _, _ = pair_accuracy(model, eval_pairs, tok.pad_token_id, packed_row_len=row_len)
    offset = float(np.concatenate([rc_all, rr_all]).mean())  # mean training reward -> 0
    guards.check_finite("RM mean reward after training", offset, step - 1, total, guards.rm_settings(t))
    tail = max(1, steps_per_epoch // 4)
    metrics = {
        "train/loss": float(np.mean([v for _, v in history["train/loss"][-tail:]])),
        "train/acc": train_acc, "eval/acc": eval_acc, "eval/n": float(len(eval_pairs)),
        "train/reward_chosen_mean": float(rc_all.mean() - offset),
        "train/reward_rejected_mean": float(rr_all.mean() - offset),
        "train/reward_std": float(np.concatenate([rc_all, rr_all]).std()),
        "train/margin": float((rc_all - rr_all).mean()), "train/n_pairs": float(len(train_pairs)),
        "train/steps": float(step), "train/seconds": seconds, "train/tokens_per_s": real_tokens / max(seconds, 1e-9),
        **data_stats,
    }
    info = {"offset": offset, "max_length": t.max_length, "metrics": metrics, "history": history,
            **backbone.load_info(t, cfg.model, base_path), "rm_version": RM_VERSION,
            "config": OmegaConf.to_container(cfg, resolve=True)}
    out_dir = Path(out_dir)
    backbone.save_backbone(model, adapter, out_dir)
    tok.save_pretrained(str(out_dir))
    (out_dir / "rmexp_rm.json").write_text(json.dumps(info))
    if t.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    if adapter is not None:  # scored and handed on as one plain model, as load_reward_model rebuilds it
        model = backbone.merge(adapter)
    return RewardModel(model.eval(), tok, offset=offset, max_length=t.max_length, path=out_dir, info=info)


# ---------------------------------------------------------------------------------------------------
# The kind
@dataclass
class ClassifierOptions:
    """rm=classifier has no options of its own: it trains with the shared `train.*` keys."""


@functools.lru_cache(maxsize=None)
def compiler_identity() -> dict:
    """What, beside torch's version, decides a compiled graph's arithmetic: the C++ compiler inductor builds CPU
    kernels with (its vector ISA follows the ATEN_CPU_CAPABILITY pin, already in `numerics()`; the rest its march)
    and triton's version for GPU kernels. Asked once a process: every compiled trial's key and RM key needs it."""
    import importlib.metadata
    import os
    import subprocess

    from torch._inductor import cpp_builder

    try:
        cxx = cpp_builder.get_cpp_compiler()
        version = (subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
                   or [cxx])[0]
    except Exception:  # a CUDA machine may lack a C++ compiler: its kernels are triton's
        version = None
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = None
    return {"cxx": version, "march": os.environ.get("TORCHINDUCTOR_CPP_MARCH"), "triton": triton}


def train_identity(train: DictConfig) -> dict:
    """train.* hashed whole, except `compile` when off: eager training is the computation its keys were made of
    before the option existed (cached RMs stay valid); compiled training adds the compiler."""
    from rmexp.config import to_plain

    plain = dict(to_plain(train))
    if not plain.pop("compile"):
        return plain
    return plain | {"compile": dict(compiler_identity())}


def rm_cache_key(ctx: RMContext) -> str:
    """Keyed by the rows themselves (not the data config: on-policy sampling settings, edited files and ignored
    data options then all do the right thing), margins included; train.* (LoRA, checkpointing) hashed whole
    (`train_identity`); model.dtype and attn_implementation change the numbers."""
    from rmexp.config import config_hash, numerics

    cfg = ctx.cfg
    return config_hash(base_identity(ctx.base), rows_identity(ctx.prefs), cfg.data.eval_fraction, cfg.data.seed,
                       train_identity(cfg.train), cfg.device, RM_VERSION, numerics(), cfg.model.dtype,
                       cfg.model.attn_implementation)


def build_classifier(ctx: RMContext) -> RewardModel:
    """Train (once, cached) or load the RM for this trial's base, rows and train config."""
    from rmexp.cache import cached

    cfg = ctx.cfg
    key = rm_cache_key(ctx)
    remote = cfg.model.trust_remote_code
    return cached("rm", key, ctx.cache,
                  build=lambda folder: train_reward_model(ctx.base, ctx.prefs, cfg, folder, remote, ctx.progress,
                                                          cfg.device),
                  load=lambda folder: load_reward_model(folder, remote, cfg.device), label=cfg.model.name)


CLASSIFIER = register_rm_kind(RMKind("classifier", ClassifierOptions, build_classifier, packed_training=True))
