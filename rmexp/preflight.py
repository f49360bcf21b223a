"""Checks of everything outside the config values that can be known before any work starts.

* :func:`check_overrides` -- the command line's override keys, before Hydra composes (one line, exit 2,
  instead of Hydra's multi-line report and exit 1);
* :func:`check_inputs` (called by `config.validate`, so every sweep trial gets it too) -- CUDA when asked,
  the base model's path or hub availability, data and benchmark files exist and parse, and the base
  tokenizer's coverage of the preference data;
* :func:`check_tracking_store` -- the MLflow store is reachable and writable within seconds.

Each failure raises one `ConfigError` naming the key, the file or URI, what is allowed and how to fix it.
Results of the slow checks are memoised per process (a sweep's trials often share model and data).
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from rmexp.config import CONF_DIR, FREE_MAPPINGS, ConfigError, schema_keys
from rmexp.data import file_mtime

TRACKING_TIMEOUT_S = 5.0   # a store that does not answer in 5 s is down for our purposes; runs log often
HUB_TIMEOUT_S = 5.0        # a hub metadata request; offline machines fail at once anyway

_memo: dict[tuple, object] = {}


def _memoised(key: tuple, fn):
    if key not in _memo:
        _memo[key] = fn()
    return _memo[key]


# ------------------------------------------------------------------------------------------- command line
# Hydra flags that take a value (the value is not an override).
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                     "--config-dir", "-cd", "--experimental-rerun"}
_PASS_THROUGH = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--version"}


def check_overrides(argv: list[str]) -> None:
    """Refuse override keys the schema does not know, with or without `+` (only `+sweep=<name>` adds), and
    config-group options that do not exist; leave everything else to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in _PASS_THROUGH:
            return
        elif a in _FLAGS_WITH_VALUE:
            skip = True
        elif not a.startswith("-"):
            args.append(a)
    known = set(schema_keys())
    parser = OverridesParser.create()
    for arg in args:
        try:
            o = parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it with its own pointer
            continue
        key = o.key_or_group
        if key.startswith("hydra") or o.package is not None or o.is_delete():
            continue
        if (CONF_DIR / key).is_dir():
            if key == "sweep" and not o.is_add():
                raise ConfigError(f"config error: {arg}: select a sweep with +sweep=<name>")
            value = o.value()
            options = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
            if isinstance(value, str) and value not in options:
                raise ConfigError(f"config error: {key}={value!r} is not allowed; choose one of {options} "
                                  f"(conf/{key}/)")
            continue
        if key in known or any(key.startswith(m + ".") for m in FREE_MAPPINGS):
            continue
        import difflib

        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        plus = "a + override cannot add keys the schema lacks (only +sweep=<name>); " if o.is_add() or \
            o.is_force_add() else ""
        raise ConfigError(f"config error: unknown config key {key!r} in {arg!r}; {hint}{plus}"
                          f"see the keys with `python -m rmexp --cfg job`")
    if not {"-m", "--multirun"} & set(argv):
        _compose(args)


def _compose(overrides: list[str]) -> None:
    """Compose as Hydra will, so its refusals (wrong types, `+` on an existing key, ...) come as one line."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return  # inside a running Hydra app: it has composed already
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name="config", overrides=overrides)
    except Exception as err:  # noqa: BLE001 - every composition error is the command line's
        raise ConfigError(f"config error: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    """Hydra's multi-line report in one line: the search path and the "+" hint dropped, the cause appended."""
    text = str(err).split("Config search path:")[0]
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.strip().startswith(("To append to your config use",
                                                          "Or add a second +"))]
    msg = " ".join(lines)
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        if first not in msg:
            msg += f" ({first})"
    return msg or type(err).__name__


# ------------------------------------------------------------------------------------------- inputs
def check_inputs(cfg: DictConfig) -> None:
    # On a Ray cluster the trials run on other machines, which may have the GPUs this one lacks.
    remote = bool(cfg.sweep.name and (cfg.ray.address or os.environ.get("RAY_ADDRESS")))
    if cfg.device == "cuda" and not remote:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("config error: device='cuda' is not allowed here: torch sees no CUDA device on this "
                              "machine; use device=cpu or device=auto, or install the CUDA build of torch")
    if not remote:
        _check_precision(cfg)
    if cfg.model.source == "hf":
        _memoised(("model", cfg.model.path), lambda: _check_hf_model(str(cfg.model.path)))
    from rmexp.downstream import DOWNSTREAM

    if any(cfg.downstream[name].enabled for name in DOWNSTREAM):
        _check_policy_and_task(cfg)
    if cfg.data.source == "files":
        rows = _preference_rows(cfg)
        tok = _memoised(("tok", cfg.model.source, cfg.model.path, cfg.world.seed, cfg.model.trust_remote_code),
                        lambda: _tokenizer(cfg))
        _memoised(("coverage", id(tok), id(rows), cfg.data.max_unk_share, cfg.data.max_identical_share),
                  lambda: _check_coverage(cfg, tok, rows))
    if cfg.benchmark.source == "files":
        for key in ("benchmark.rb2_path", "benchmark.rb1_path"):
            path = cfg.benchmark[key.split(".")[1]]
            if path and _looks_local(str(path)):
                _memoised(("bench", key, path, file_mtime(path)), lambda: _check_benchmark(cfg, key, str(path)))


def _check_precision(cfg: DictConfig) -> None:
    """Half dtypes and flash attention need a GPU (and flash attention its package), known before any loading."""
    import importlib.util

    import torch

    on_gpu = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.model.dtype in ("bfloat16", "float16") and not on_gpu:
        raise ConfigError(f"config error: model.dtype={cfg.model.dtype!r} is not allowed with device={cfg.device!r} "
                          f"on this machine (no CUDA device): half precision is for GPUs, on CPU it is slow and loses "
                          f"small updates; use model.dtype=auto (float32 on CPU) or float32, or run on a GPU")
    attn = cfg.model.attn_implementation
    if attn in ("flash_attention_2", "flash_attention_3"):
        package = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}[attn]
        if not on_gpu:
            raise ConfigError(f"config error: model.attn_implementation={attn!r} is not allowed without a CUDA device; "
                              f"use sdpa, eager or null (transformers' default)")
        if cfg.model.dtype == "float32":
            raise ConfigError(f"config error: model.attn_implementation={attn!r} needs model.dtype=bfloat16 or float16 "
                              f"(flash attention has no float32 kernels)")
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"config error: model.attn_implementation={attn!r} needs the {package!r} package, which "
                              f"is not installed; install it (pip install flash-attn) or use sdpa")


def _check_policy_and_task(cfg: DictConfig) -> None:
    """The downstream half: an hf policy's path or hub availability, the gold task's rows, and PPO's need for one
    tokenizer (its value model is the RM and reads the policy's token ids)."""
    from rmexp.config import policy_model_config

    pcfg = policy_model_config(cfg.downstream.policy)
    if pcfg.source == "hf":
        _memoised(("model", pcfg.path), lambda: _check_hf_model(str(pcfg.path), "downstream.policy.path"))
    if cfg.task.name != "toy":
        t = cfg.task
        _memoised(("task", t.name, t.path, t.subset, t.split, t.size, t.seed, file_mtime(t.path)), lambda: _check_task(t))
    if cfg.downstream.ppo.enabled and cfg.downstream.ppo.algorithm == "ppo":
        rm_tok = _memoised(("tok", cfg.model.source, cfg.model.path, cfg.world.seed, cfg.model.trust_remote_code),
                           lambda: _tokenizer(cfg))
        pol_tok = _memoised(("tok", pcfg.source, pcfg.path if pcfg.source == "hf" else None, cfg.world.seed,
                             pcfg.trust_remote_code), lambda: _tokenizer(cfg, pcfg, "downstream.policy.path"))
        if rm_tok.get_vocab() != pol_tok.get_vocab():
            raise ConfigError(
                f"config error: downstream.ppo.enabled=true with algorithm=ppo needs one tokenizer for the RM and the "
                f"policy: the RM's base {cfg.model.name!r} has {len(rm_tok)} tokens, the policy "
                f"{(pcfg.path if pcfg.source == 'hf' else pcfg.name)!r} {len(pol_tok)}, and their vocabularies "
                f"differ (the value model starts from the RM and reads the policy's token ids). Pick a policy and a "
                f"base of one tokenizer family, or use downstream.ppo.algorithm=grpo (rewards from text)")


def _check_task(t: DictConfig) -> None:
    """The task's rows load and parse (a hub id: from the local cache, or the hub when it answers)."""
    from rmexp.gold import load_task
    from rmexp.tasks import TaskError

    path = str(t.path)
    try:
        load_task(t)
    except TaskError as err:
        msg = str(err)
        raise ConfigError(f"config error: task.path={path!r}: {msg}") from None


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`org/name`): it exists, is absolute or relative with ./ ~ ..,
    has more than one slash, or ends with a file suffix."""
    return (Path(path).expanduser().exists() or path.startswith(("/", ".", "~")) or path.count("/") > 1
            or Path(path).suffix in (".jsonl", ".json", ".parquet", ".safetensors", ".bin"))


def _check_hf_model(path: str, key: str = "model.path") -> None:
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(f"config error: {key}={path!r} is a local path without config.json; give a "
                              f"directory written by save_pretrained (config.json, weights, tokenizer files)")
        return
    if _looks_local(path):
        raise ConfigError(f"config error: {key}={path!r} does not exist; give an existing local model "
                          f"directory (save_pretrained output) or a hub id like org/name")
    import requests
    from huggingface_hub import constants, try_to_load_from_cache

    fix = (f"Download it where there is network (`huggingface-cli download {path} --local-dir DIR`) and set "
           f"{key}=DIR")
    try:
        if isinstance(try_to_load_from_cache(path, "config.json"), str):
            return  # in the local Hugging Face cache
    except Exception:  # noqa: BLE001 - not a valid repo id
        raise ConfigError(f"config error: {key}={path!r} is neither an existing local directory nor a hub id "
                          f"like org/name") from None
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"config error: {key}={path!r} is not a local directory and not in the local Hugging "
                          f"Face cache, and the hub is offline (HF_HUB_OFFLINE=1). {fix}")
    # One request with a short timeout (huggingface_hub's own download retries for ~25 s when offline).
    url = f"{constants.ENDPOINT}/api/models/{path}"
    try:
        resp = requests.get(url, timeout=HUB_TIMEOUT_S, headers={"authorization": f"Bearer {constants.HF_TOKEN}"}
                            if getattr(constants, "HF_TOKEN", None) else {})
    except requests.RequestException as err:
        raise ConfigError(f"config error: {key}={path!r} is not a local directory and the hub is not reachable "
                          f"from here ({type(err).__name__} on {constants.ENDPOINT}). {fix}") from None
    if resp.status_code in (401, 403, 404):
        raise ConfigError(f"config error: {key}={path!r}: the hub has no such model, or it is gated or private "
                          f"(HTTP {resp.status_code}; set HF_TOKEN for gated models). {fix}")


def _preference_rows(cfg: DictConfig) -> list[dict]:
    """The rows the trial will train on (one source, or the drawn mix); rmexp.data memoises them per process."""
    from rmexp.data import DataSourceError, file_preference_rows

    try:
        return file_preference_rows(cfg.data)
    except DataSourceError as err:
        raise ConfigError(f"config error: {err}") from None


def _tokenizer(cfg: DictConfig, mcfg: DictConfig | None = None, key: str = "model.path"):
    """The tokenizer of model config `mcfg` (default: the RM's base, cfg.model); `key` names it in the error."""
    mcfg = cfg.model if mcfg is None else mcfg
    if mcfg.source == "toy":
        from rmexp.world.core import World
        from rmexp.world.tokenizer import build_tokenizer

        return build_tokenizer(World(cfg.world.seed).vocab)  # what the zoo builds every toy model with
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(mcfg.path), trust_remote_code=bool(mcfg.trust_remote_code))
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"config error: {key}={mcfg.path!r}: cannot load its tokenizer "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def _check_coverage(cfg: DictConfig, tok, rows: list[dict]) -> None:
    from rmexp import guards

    texts_c = [f"{r['prompt']}\n{r['chosen']}" for r in rows]
    texts_r = [f"{r['prompt']}\n{r['rejected']}" for r in rows]
    ids_c = tok(texts_c, add_special_tokens=False)["input_ids"]
    ids_r = tok(texts_r, add_special_tokens=False)["input_ids"]
    cov = guards.coverage(list(zip(ids_c, ids_r)), tok.unk_token_id)
    try:
        guards.check_coverage(cov, cfg.data.max_unk_share, cfg.data.max_identical_share,
                              _data_label(cfg), f"model={cfg.model.name}")
    except guards.DataCoverageError as err:
        raise ConfigError(f"config error: {err}") from None


def _data_label(cfg: DictConfig) -> str:
    if cfg.data.sources:
        return "data.sources=" + "+".join(repr(str(s.path)) for s in cfg.data.sources)
    return f"data.path={cfg.data.path!r}"


def _check_benchmark(cfg: DictConfig, key: str, path: str) -> None:
    from rmexp.data import DataSourceError, benchmark_rows

    one = cfg.copy()
    for other in ("rb2_path", "rb1_path"):
        if f"benchmark.{other}" != key:
            one.benchmark[other] = None
    try:
        benchmark_rows(one, None)
    except DataSourceError as err:
        raise ConfigError(f"config error: {key}={path!r}: {err}") from None


# ------------------------------------------------------------------------------------------- tracking store
def check_tracking_store(uri: str, timeout: float = TRACKING_TIMEOUT_S) -> None:
    """The MLflow store answers and (for SQLite) can be written, within `timeout` seconds."""
    from rmexp.tracking import sqlite_path

    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite(uri, db, timeout)
    elif uri.startswith(("http://", "https://")):
        _check_http(uri, timeout)


def _check_sqlite(uri: str, db: Path, timeout: float) -> None:
    fix = "set tracking.uri=sqlite:////a/writable/dir/mlflow.db or run from a writable directory"
    if not db.parent.is_dir():
        raise ConfigError(f"config error: tracking.uri={uri!r}: the directory {str(db.parent)!r} does not exist; "
                          f"{fix}")
    try:
        if db.exists():
            con = sqlite3.connect(str(db), timeout=timeout)
            try:
                con.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on read-only files and dirs
                con.execute("ROLLBACK")
            finally:
                con.close()
        # SQLite writes a journal beside the database, MLflow artifacts go beside it too.
        with tempfile.NamedTemporaryFile(dir=db.parent, prefix=".rmexp-write-check-"):
            pass
    except (OSError, sqlite3.Error) as err:
        raise ConfigError(f"config error: tracking.uri={uri!r}: the MLflow database cannot be written "
                          f"({type(err).__name__}: {err}); {fix}") from None


def _check_http(uri: str, timeout: float) -> None:
    import requests

    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    try:
        resp = requests.get(url, params={"max_results": 1}, timeout=timeout)
    except requests.RequestException as err:
        raise ConfigError(f"config error: tracking.uri={uri!r}: the MLflow server did not answer within "
                          f"{timeout:.0f} s ({type(err).__name__}); start it (`mlflow server --host ... --port ...`) "
                          f"or point tracking.uri at a running one") from None
    if resp.status_code in (401, 403):
        raise ConfigError(f"config error: tracking.uri={uri!r}: the MLflow server refused access "
                          f"(HTTP {resp.status_code}); set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD")
    if resp.status_code >= 400:
        raise ConfigError(f"config error: tracking.uri={uri!r}: {url} answered HTTP {resp.status_code}; is this an "
                          f"MLflow tracking server?")


def reset_memo() -> None:
    """Forget memoised checks and drawn rows (tests that edit files in place)."""
    from rmexp import data

    _memo.clear()
    data._drawn.clear()

