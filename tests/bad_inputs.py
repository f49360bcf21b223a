"""The catalogue of bad inputs and faults: what each one is, how to set it up, and what rmexp must answer.

Shared by tests/test_bad_inputs.py (asserts every case) and tests/bad_inputs_table.py (runs every case through
the real CLI and writes docs/bad_inputs.md). A case's `expect` strings must all appear in its one `error:` line.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
SAFE = ["preset=tiny"]  # every case runs on the tiny preset: a case that wrongly starts work stays short


@dataclass
class Case:
    id: str
    what: str                                   # the input or fault, for the table
    overrides: Callable[[Path], list[str]]      # from the case's scratch dir
    expect: tuple[str, ...]                     # substrings of the one error line
    code: int = 2                               # 2: refused before work; 1: failed during work
    cwd: Callable[[Path], Path] | None = None   # where the command runs (default: the scratch dir)
    skip: Callable[[], str | None] = lambda: None  # a reason to skip on this machine, or None

    @property
    def before_work(self) -> bool:
        return self.code == 2


# ------------------------------------------------------------------------------------------- fixtures on disk
def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _toy_rows(n: int) -> list[dict]:
    from rmexp.world.core import World
    from rmexp.world.data import preferences

    rows = preferences(World(0), n, {"Math": 1.0}, 0.0, 0)
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]


def english_rows(d: Path) -> str:
    """Real English arithmetic: the toy tokenizer reads most words as <unk>; '6.' and '7.' become the same id."""
    rows = [{"prompt": f"What is {i} plus {i + 3}?", "chosen": f"The answer is {2 * i + 3}.",
             "rejected": f"The answer is {2 * i + 4}."} for i in range(60)]
    return _write_jsonl(d / "english.jsonl", rows)


def identical_rows(d: Path) -> str:
    """Toy-world text the toy tokenizer reads fully, but chosen == rejected in every pair."""
    return _write_jsonl(d / "identical.jsonl", [{**r, "rejected": r["chosen"]} for r in _toy_rows(60)])


def broken_jsonl(d: Path) -> str:
    path = d / "broken.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "x", "chosen": oops}\n')
    return str(path)


def empty_jsonl(d: Path) -> str:
    (d / "empty.jsonl").write_text("")
    return str(d / "empty.jsonl")


def bad_parquet(d: Path) -> str:
    (d / "bad.parquet").write_bytes(b"this is not parquet\n")
    return str(d / "bad.parquet")


def missing_column(d: Path) -> str:
    return _write_jsonl(d / "nocol.jsonl", [{"prompt": "a", "chosen": "b"}])


def no_config_dir(d: Path) -> str:
    (d / "not-a-model").mkdir(exist_ok=True)
    (d / "not-a-model" / "weights.txt").write_text("no config.json here")
    return str(d / "not-a-model")


def gsm8k_rows_file(d: Path) -> str:
    from rmexp.fixtures import gsm8k_rows

    return _write_jsonl(d / "gsm8k.jsonl", gsm8k_rows(4, 0))


def math_rows_file(d: Path) -> str:
    """MATH-schema rows (problem, solution): the wrong schema for task=gsm8k."""
    from rmexp.fixtures import math_rows

    return _write_jsonl(d / "math.jsonl", math_rows(4, 0))


def other_tokenizer_policy(d: Path) -> str:
    """A tiny Qwen2-shaped policy whose BPE tokenizer is not the toy world's (built in a second, saved like a hub
    model)."""
    from rmexp.fixtures import build_model, build_tokenizer, gsm8k_rows

    out = d / "policy"
    if not (out / "config.json").exists():
        tok = build_tokenizer([json.dumps(r) for r in gsm8k_rows(40, 0)], vocab_size=300)
        build_model(tok, 0).save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))
    return str(out)


def closed_port_uri(_d: Path) -> str:
    with socket.socket() as s:  # a free loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def read_only_dir(d: Path) -> Path:
    """A directory this process cannot write: chmod 555 for a normal user; root ignores modes, so sysfs."""
    if os.geteuid() == 0:
        return Path("/sys")
    ro = d / "read-only"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    return ro


def _no_cuda_skip() -> str | None:
    import torch

    return "this machine has CUDA" if torch.cuda.is_available() else None


CASES: list[Case] = [
    # -- keys and values
    Case("plus_unknown_key", "`+train.epoch=2` (Hydra's own hint form; was accepted and ignored)",
         lambda d: ["+train.epoch=2"], ("unknown config key 'train.epoch'", "did you mean train.epochs?",
                                        "only +sweep=<name>")),
    Case("unknown_key", "`train.epoch=2` (no +)", lambda d: ["train.epoch=2"],
         ("unknown config key 'train.epoch'", "did you mean train.epochs?")),
    Case("plus_unknown_top", "`+foo=1` (a new top-level key)", lambda d: ["+foo=1"], ("unknown config key 'foo'",)),
    Case("plus_existing_key", "`+train.epochs=3` (+ on a key that exists)", lambda d: ["+train.epochs=3"],
         ("An item is already at 'train.epochs'", "remove + prefix")),
    Case("wrong_type", "`train.epochs=two`", lambda d: ["train.epochs=two"],
         ("train.epochs=two", "could not be converted to Integer")),
    Case("unknown_group_option", "`model=toy_llama_xxl` (no such model)", lambda d: ["model=toy_llama_xxl"],
         ("model='toy_llama_xxl' is not allowed", "toy_llama_xs")),
    Case("sweep_without_plus", "`sweep=smoke` (without +)", lambda d: ["sweep=smoke"],
         ("select a sweep with +sweep=<name>",)),
    Case("lr_inf", "`train.lr=inf`", lambda d: ["train.lr=inf"], ("train.lr=inf", "finite number")),
    Case("lr_nan", "`train.lr=nan`", lambda d: ["train.lr=nan"], ("train.lr=nan", "finite number")),
    Case("compile_unpacked", "`train.compile=true` without packing (padded batches would recompile every step)",
         lambda d: ["train.compile=true"], ("train.compile=True is not allowed", "needs train.packing=true")),
    Case("compile_checkpointing", "`train.packing=true train.compile=true train.gradient_checkpointing=true` "
         "(checkpointed layers break the graph: they would run eager)",
         lambda d: ["train.packing=true", "train.compile=true", "train.gradient_checkpointing=true"],
         ("train.compile=True is not allowed", "does not go with train.gradient_checkpointing=true")),
    Case("packing_unpacked_kind", "`rm=dpo train.packing=true` (the kind does not read it; was ignored)",
         lambda d: ["rm=dpo", "train.packing=true"], ("train.packing=True is not allowed",
                                                     "rm=dpo does not train packed", "['classifier', 'ensemble']")),
    Case("ppo_lr_inf", "`downstream.ppo.lr=inf`", lambda d: ["downstream.ppo.lr=inf"],
         ("downstream.ppo.lr=inf", "finite number")),
    Case("eval_fraction_0", "`data.eval_fraction=0`", lambda d: ["data.eval_fraction=0"],
         ("data.eval_fraction=0.0", "strictly between 0 and 1")),
    Case("eval_fraction_1", "`data.eval_fraction=1` (was an IndexError after the run started)",
         lambda d: ["data.eval_fraction=1"], ("data.eval_fraction=1.0", "strictly between 0 and 1")),
    Case("label_noise_range", "`data.label_noise=1.5`", lambda d: ["data.label_noise=1.5"],
         ("data.label_noise=1.5", "between 0 and 1")),
    Case("unknown_policy", "`downstream.policy.model=nope` (failed only after RM training and scoring)",
         lambda d: ["downstream.policy.model=nope"], ("downstream.policy.model='nope'", "choose a conf/model entry")),
    Case("unknown_on_policy", "`data.on_policy=nope`", lambda d: ["data.on_policy=nope"],
         ("data.on_policy='nope'", "choose a conf/model entry")),
    Case("cuda_absent", "`device=cuda` on a machine without CUDA (failed after the run started)",
         lambda d: ["device=cuda"], ("device='cuda'", "no CUDA device"), skip=_no_cuda_skip),
    # -- models
    Case("model_path_missing", "`model=hf model.path=/no/such/model` (said \"Repo id must be in the form\")",
         lambda d: ["model=hf", "model.path=/no/such/model"], ("model.path='/no/such/model' does not exist",)),
    Case("model_dir_no_config", "`model=hf model.path=<a directory without config.json>`",
         lambda d: ["model=hf", f"model.path={no_config_dir(d)}"], ("without config.json", "save_pretrained")),
    Case("hub_model_offline", "`model=hf model.path=gpt2` with the hub offline (was a 111-line traceback)",
         lambda d: ["model=hf", "model.path=gpt2"],
         ("model.path='gpt2'", "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1",
          "huggingface-cli download gpt2", "set model.path=DIR")),
    Case("policy_hub_offline", "`downstream.policy.model=hf downstream.policy.path=gpt2` with the hub offline",
         lambda d: ["downstream.policy.model=hf", "downstream.policy.path=gpt2"],
         ("downstream.policy.path='gpt2'", "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1",
          "set downstream.policy.path=DIR")),
    Case("policy_path_on_zoo_policy", "`downstream.policy.path=...` with a zoo policy (would be ignored)",
         lambda d: ["downstream.policy.path=/some/model"], ("downstream.policy.path='/some/model'",
                                                            "applies to hf policies only")),
    Case("ppo_tokenizer_mismatch", "PPO with a policy whose tokenizer is not the RM's (failed after RM training)",
         lambda d: ["downstream.ppo.enabled=true", "downstream.policy.model=hf",
                    f"downstream.policy.path={other_tokenizer_policy(d)}"],
         ("needs one tokenizer for the RM and the policy", "'toy_llama_xs' has", "downstream.ppo.algorithm=grpo")),
    # -- gold tasks
    Case("task_unknown_name", "`task.name=nope` (not a registered task)", lambda d: ["task.name=nope"],
         ("task.name='nope' is not allowed", "choose one of ['toy', 'gsm8k'")),
    Case("task_unknown_option", "`task=nope` (no conf/task/nope.yaml)", lambda d: ["task=nope"],
         ("task='nope' is not allowed", "conf/task/")),
    Case("task_file_missing", "`task=gsm8k task.path=<missing file>`",
         lambda d: ["task=gsm8k", f"task.path={d / 'missing.jsonl'}"], ("task.path=", "missing.jsonl' does not exist")),
    Case("task_wrong_schema", "`task=gsm8k` on a MATH-schema file",
         lambda d: ["task=gsm8k", f"task.path={math_rows_file(d)}"],
         ("row 0: missing column(s) ['question', 'answer']", "the gsm8k schema")),
    Case("task_hub_offline", "`task=gsm8k` (the hub id openai/gsm8k) with the hub offline",
         lambda d: ["task=gsm8k"], ("task.path='openai/gsm8k'", "could not load dataset 'openai/gsm8k'",
                                     "to_parquet('FILE.parquet')", "task.path=FILE.parquet")),
    Case("ppo_on_real_task", "`downstream.ppo.enabled=true` with `task=gsm8k` and no `task.train_path` (PPO trains on "
         "the task's prompts)",
         lambda d: ["task=gsm8k", f"task.path={gsm8k_rows_file(d)}", "downstream.ppo.enabled=true"],
         ("downstream.ppo.enabled=True is not allowed", "task=gsm8k has none: set task.train_path")),
    # -- files
    Case("data_path_unset", "`data=files` without `data.path`", lambda d: ["data=files"],
         ("data.path=None", "jsonl/parquet")),
    Case("data_file_missing", "`data.path=<missing file>` (failed after the run started)",
         lambda d: ["data=files", f"data.path={d / 'missing.jsonl'}"], ("missing.jsonl' does not exist",)),
    Case("jsonl_broken_line", "a broken jsonl line (was \"Expected object or value at position 47\")",
         lambda d: ["data=files", f"data.path={broken_jsonl(d)}"], ("broken.jsonl' line 2", "not valid JSON")),
    Case("jsonl_empty", "an empty jsonl (was a bare StopIteration)",
         lambda d: ["data=files", f"data.path={empty_jsonl(d)}"], ("empty.jsonl' has no rows",)),
    Case("parquet_unreadable", "an unreadable parquet file", lambda d: ["data=files", f"data.path={bad_parquet(d)}"],
         ("cannot read parquet file", "bad.parquet")),
    Case("missing_column", "a preference row without `rejected`",
         lambda d: ["data=files", f"data.path={missing_column(d)}"], ("row 0: missing column 'rejected'",)),
    Case("mapped_column_absent", "`data.columns.prompt=instruction` on a file that has no `instruction` column",
         lambda d: ["data=files", f"data.path={english_rows(d)}", "data.columns.prompt=instruction"],
         ("english.jsonl row 0: no prompt (a 'instruction' column",)),
    Case("column_key_unknown", "`data.columns.promt=q` (not a field a mapping renames)",
         lambda d: ["data=files", "data.path=x.jsonl", "data.columns.promt=q"],
         ("unknown config key 'data.columns.promt'", "did you mean data.columns.prompt?")),
    Case("margin_not_a_number", "`data.margin_column=` a column holding text",
         lambda d: ["data=files", f"data.path={english_rows(d)}", "data.margin_column=chosen"],
         ("english.jsonl row 0: margin column 'chosen' must be a finite number", "'The answer is 3.'")),
    Case("path_and_sources", "`data.path=` and `data.sources=[...]` together",
         lambda d: ["data=files", "data.path=a.jsonl", "data.sources=[{path: b.jsonl}]"],
         ("data.path='a.jsonl'", "give data.path (one source) or data.sources (a mix), not both")),
    Case("source_weight_negative", "a mix source with `weight: -1`",
         lambda d: ["data=files", "data.path=null", "data.sources=[{path: b.jsonl, weight: -1}]"],
         ("data.sources[0].weight=-1.0", "finite number >= 0")),
    Case("mix_larger_than_source", "`data.size` asks a source for more rows than it has",
         lambda d: ["data=files", "data.path=null", f"data.sources=[{{path: {english_rows(d)}}}]", "data.size=100"],
         ("data.sources: data source", "english.jsonl' has 60 rows but the mix asks for 100",
          "lower data.size or this source's weight")),
    Case("hub_dataset_offline", "`data=hh` (a ready hub config) with the hub offline and nothing cached",
         lambda d: ["data=hh"],
         ("data.sources[0].path: could not load dataset 'Anthropic/hh-rlhf' (split 'train')", "hub is offline",
          "to_parquet('FILE.parquet')", "HF_DATASETS_OFFLINE=1")),
    Case("half_dtype_on_cpu", "`model.dtype=bfloat16` on a machine without CUDA", lambda d: ["model.dtype=bfloat16"],
         ("model.dtype='bfloat16' is not allowed with device='cpu'", "half precision is for GPUs",
          "model.dtype=auto"), skip=_no_cuda_skip),
    Case("flash_attention_on_cpu", "`model.attn_implementation=flash_attention_2` without CUDA",
         lambda d: ["model.attn_implementation=flash_attention_2"],
         ("model.attn_implementation='flash_attention_2' is not allowed without a CUDA device", "use sdpa"),
         skip=_no_cuda_skip),
    Case("bench_file_broken", "`benchmark.rb2_path=<broken jsonl>`",
         lambda d: ["benchmark=rewardbench2", f"benchmark.rb2_path={broken_jsonl(d)}", "benchmark.rb1_path=null"],
         ("benchmark.rb2_path=", "line 2", "not valid JSON")),
    # -- useless runs that used to finish with exit 0
    Case("english_on_toy_base", "`data=files` with English text on a toy base (FINISHED, eval/acc 0, loss ln 2)",
         lambda d: ["data=files", f"data.path={english_rows(d)}"],
         ("tokens are <unk>", "encode chosen and rejected identically",
          "Use a base model whose tokenizer covers the data")),
    Case("chosen_equals_rejected", "rows with chosen == rejected (FINISHED, exit 0)",
         lambda d: ["data=files", f"data.path={identical_rows(d)}"],
         ("100.0% of pairs (60 of 60) encode chosen and rejected identically", "data.max_identical_share=0.02")),
    # -- tracking store
    Case("tracking_unreachable", "`tracking.uri=http://127.0.0.1:<closed port>` (retried 257 s)",
         lambda d: [f"tracking.uri={closed_port_uri(d)}"], ("tracking.uri='http://127.0.0.1:", "did not answer")),
    Case("tracking_dir_missing", "`tracking.uri=sqlite:////no/such/dir/mlflow.db`",
         lambda d: ["tracking.uri=sqlite:////no/such/dir/mlflow.db"],
         ("tracking.uri='sqlite:////no/such/dir/mlflow.db'", "does not exist")),
    Case("read_only_cwd", "a read-only working directory, default tracking store (failed after 114 s)",
         lambda d: [f"cache_dir={d / 'cache'}"], ("mlflow.db'", "cannot be written", "writable directory"),
         cwd=read_only_dir),
    # -- during work
    Case("nonfinite_loss", "`train.lr=1e30`: the RM's loss goes NaN (a NaN RM was cached and reused)",
         lambda d: ["train.lr=1e30", "downstream.bon.enabled=false"],
         ("NonFiniteError: RM train/loss is nan at step", "train.lr=1e+30", "nothing was saved"), code=1),
    Case("runtime_error", "an exception during work (`fail_stage=rm`; was 30-180 lines of traceback)",
         lambda d: ["fail_stage=rm"], ("InjectedFailure: fail_stage=rm", "error.txt"), code=1),
]


# ------------------------------------------------------------------------------------------- running a case
@dataclass
class Outcome:
    code: int
    stderr: str
    errors: list[str] = field(default_factory=list)  # the `error:` lines

    @property
    def line(self) -> str:
        return self.errors[0] if self.errors else ""


def _outcome(code: int, stderr: str) -> Outcome:
    return Outcome(code, stderr, [ln for ln in stderr.splitlines() if ln.startswith("error:")])


def case_args(case: Case, scratch: Path, cache: Path) -> list[str]:
    """The command-line overrides of a case; work-stage cases share a cache, so the tiny base is built once."""
    ovs = case.overrides(scratch)
    if not any(o.startswith("cache_dir=") for o in ovs):
        ovs.append(f"cache_dir={cache if case.code == 1 else scratch / 'cache'}")
    return ovs + SAFE


def run_subprocess(case: Case, scratch: Path, cache: Path, timeout: float = 600) -> Outcome:
    """`python -m rmexp <overrides>`, as a user types it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cwd = case.cwd(scratch) if case.cwd else scratch
    proc = subprocess.run([sys.executable, "-m", "rmexp", *case_args(case, scratch, cache)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return _outcome(proc.returncode, proc.stderr)


def run_in_process(case: Case, scratch: Path, cache: Path) -> Outcome:
    """The same path as the CLI (override check, compose, main) without spawning an interpreter."""
    from hydra import compose, initialize_config_dir

    import rmexp.__main__ as M
    from rmexp.config import CONF_DIR, ConfigError
    from rmexp.preflight import check_overrides

    args = case_args(case, scratch, cache)
    err, old = io.StringIO(), Path.cwd()
    os.chdir(case.cwd(scratch) if case.cwd else scratch)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                try:
                    check_overrides(args)
                except ConfigError as e:
                    M._error(str(e))
                    raise SystemExit(2) from None
                with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                    cfg = compose(config_name="config", overrides=args)
                M.main.__wrapped__(cfg)
                code = 0
            except SystemExit as e:
                code = int(e.code or 0)
    finally:
        os.chdir(old)
    return _outcome(code, err.getvalue())
