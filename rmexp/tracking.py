"""MLflow tracking: one trial = one MLflow run.

The driver process is the only writer (SQLite dislikes concurrent writers): trials, wherever they run, return a
`TrialResult` and the driver logs it. The default store is ``sqlite:///<abs cwd>/mlflow.db`` (MLflow 3 refuses
the plain file store by default); artifacts of an experiment go beside the database, under
``<db dir>/mlartifacts/<experiment>``, whatever the working directory of a later run is.

What a trial run holds:

* tags ``rmexp.trial_key`` (hash of the resolved config minus tracking/ray/sweep/threads/cache_dir: the identity
  used to skip finished trials), ``mlflow.runName`` = ``<model name>-<first 8 chars of the key>``;
* params: ``TrialResult.params`` plus the sweep's axis values (a dict-valued axis is flattened,
  ``data.domain_weights.Math``);
* metrics: the final values, each history series with its steps (``train/loss`` at steps 0..n), and
  ``trial/seconds``; the final value of a key that also has a history is logged at the last history step with a
  later timestamp, so it is the run's "latest" value;
* artifacts: ``config.yaml`` (the resolved config) and every file the trial listed, at its path relative to
  the trial's out_dir;
* a failed trial: status FAILED, tag ``rmexp.error`` (the exception's first line), artifact ``error.txt``
  (the traceback).

A single run (``python -m rmexp ...``, :func:`run_single`) writes its files into a fresh temporary directory,
which is removed once everything is copied into MLflow; the run's artifacts are the place to look.

Look at it all with ``mlflow ui --backend-store-uri <uri> --host 127.0.0.1 --port 5000`` (bound to localhost:
the UI has no authentication).
"""
from __future__ import annotations

import posixpath
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote

from omegaconf import DictConfig, OmegaConf


ERROR_TAG = "rmexp.error"
CACHED_FROM_TAG = "rmexp.cached_from"
SWEEP_TAG = "rmexp.sweep"
AXES_TAG = "rmexp.axes"
COMMAND_TAG = "rmexp.command"
SECONDS_METRIC = "trial/seconds"

# MLflow batch limits (mlflow.utils.validation)
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000

UI_HOST = "127.0.0.1"
UI_PORT = 5000


# ----------------------------------------------------------------------------------------------------- URIs
TRIAL_KEY_TAG = "rmexp.trial_key"  # hash of the resolved trial config: how reruns find finished trials


def default_tracking_uri() -> str:
    """``sqlite:///<absolute cwd>/mlflow.db``."""
    return f"sqlite:///{Path.cwd().resolve()}/mlflow.db"


def tracking_uri(cfg: DictConfig | None) -> str:
    """``cfg.tracking.uri`` or :func:`default_tracking_uri`."""
    uri = OmegaConf.select(cfg, "tracking.uri") if cfg is not None else None
    return str(uri) if uri else default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///"):].split("?", 1)[0])
    return None if path in ("", ":memory:") else Path(path)


def search_all_runs(client, experiment_id: str, filter_string: str = "") -> list:
    """Every run of an experiment matching the filter, following MLflow's pages."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def artifact_location(uri: str, experiment: str) -> str | None:
    """``file://<db dir>/mlartifacts/<experiment>`` for a sqlite store; None (the server decides) otherwise."""
    db = sqlite_path(uri)
    if db is None:
        return None
    safe = re.sub(r"[^\w.\-]+", "_", experiment).strip("._") or "experiment"
    return (db.resolve().parent / "mlartifacts" / safe).as_uri()


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri} --host {UI_HOST} --port {UI_PORT}"


def ui_hint(uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """Two lines: the command that opens the MLflow UI (bound to 127.0.0.1) and the page to open."""
    url = f"http://{UI_HOST}:{UI_PORT}"
    if experiment_id is not None:
        url += f"/#/experiments/{experiment_id}"
        if run_id is not None:
            url += f"/runs/{run_id}"
    return f"  {ui_command(uri)}\n  then open {url}"


def client_for(uri: str):
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def get_or_create_experiment(client, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside the db) if missing; restores a deleted one."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name))
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created meanwhile (another driver)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


# ----------------------------------------------------------------------------------------------------- names
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def safe_key(name: str) -> str:
    """An MLflow-valid metric/param key: characters MLflow refuses (``@``, ``=``, ...) become ``_``, as in
    :func:`rmexp.analyze.slug`; ``/`` and spaces are kept (``rb2/Precise IF`` is a valid key)."""
    key = _BAD_KEY_CHARS.sub("_", str(name))
    key = posixpath.normpath(key).lstrip("/") if key else "_"
    return key[:250] if key not in (".", "") else "_"


def _str_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    return str(v)


def flatten_axes(axes: Mapping[str, Any] | None) -> dict[str, str]:
    """Axis values as params: ``{"model": "toy_llama_s", "data.domain_weights.Math": "3"}``."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, (DictConfig,)):
            value = OmegaConf.to_container(value, resolve=True)
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            out[safe_key(prefix)] = _str_value(value)

    for key, value in (axes or {}).items():
        walk(key, value)
    return out


def axes_label(axes: Mapping[str, Any] | None) -> str:
    """``model=toy_llama_s train.epochs=2`` (dicts compact: ``data.domain_weights={Math:3,...}``)."""
    def fmt(v: Any) -> str:
        if isinstance(v, Mapping):
            return "{" + ",".join(f"{k}:{fmt(x)}" for k, x in v.items()) + "}"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(fmt(x) for x in v) + "]"
        if isinstance(v, float):
            return f"{v:g}"
        return _str_value(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in (axes or {}).items())


# ----------------------------------------------------------------------------------------------------- results
@dataclass
class ResultView:
    """A `TrialResult`, or the plain dict a Ray worker sends back, seen the same way."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


def as_result(result: Any) -> ResultView:
    if isinstance(result, ResultView):
        return result
    if is_dataclass(result) and not isinstance(result, type):
        result = {f: getattr(result, f) for f in ("metrics", "params", "history", "artifacts") if hasattr(result, f)}
    elif not isinstance(result, Mapping):
        result = {f: getattr(result, f, None) for f in ("metrics", "params", "history", "artifacts")}
    return ResultView(
        metrics=dict(result.get("metrics") or {}),
        params=dict(result.get("params") or {}),
        history={k: [(int(s), float(v)) for s, v in series] for k, series in (result.get("history") or {}).items()},
        artifacts=[Path(p) for p in (result.get("artifacts") or [])],
    )


def result_to_dict(result: Any) -> dict:
    """A picklable plain dict of a trial result (what a Ray worker returns)."""
    r = as_result(result)
    return {"metrics": {str(k): float(v) for k, v in r.metrics.items() if v is not None},
            "params": {str(k): _str_value(v) for k, v in r.params.items()},
            "history": r.history, "artifacts": [str(p) for p in r.artifacts]}


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def log_metrics(client, run_id: str, metrics: Mapping[str, float],
                history: Mapping[str, list[tuple[int, float]]] | None = None) -> None:
    """History series with their steps, then the final values (at each key's last step, a later timestamp)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch: list = []
    last_step: dict[str, int] = {}
    for name, series in (history or {}).items():
        key = safe_key(name)
        for step, value in series:
            batch.append(Metric(key, float(value), now, int(step)))
            last_step[key] = max(last_step.get(key, int(step)), int(step))
    for name, value in metrics.items():
        if value is None:
            continue
        key = safe_key(name)
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        batch.append(Metric(key, value, now + 1, last_step.get(key, 0)))
    for chunk in _chunks(batch, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


def log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(safe_key(k), _str_value(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
    dedup = list({p.key: p for p in items}.values())
    for chunk in _chunks(dedup, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


def log_config(client, run_id: str, cfg: DictConfig | Mapping | None, name: str = "config.yaml") -> None:
    if cfg is None:
        return
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    text = OmegaConf.to_yaml(node, resolve=True)
    with tempfile.TemporaryDirectory(prefix="rmexp-cfg-") as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        client.log_artifact(run_id, str(path))


def log_artifact_files(client, run_id: str, files: Iterable[Path], root: Path | None = None) -> list[str]:
    """Log each file (or directory) at its path relative to ``root`` (its basename otherwise); missing files are
    reported, not fatal. Returns the messages about skipped files."""
    skipped = []
    for p in files:
        p = Path(p)
        if root is not None and not p.is_absolute():
            p = root / p
        if not p.exists():
            skipped.append(f"artifact {p} does not exist; not logged")
            continue
        sub = None
        if root is not None:
            try:
                rel = p.resolve().relative_to(Path(root).resolve())
                sub = rel.parent.as_posix() if rel.parent != Path(".") else None
            except ValueError:
                sub = None
        if p.is_dir():
            client.log_artifacts(run_id, str(p), artifact_path=(f"{sub}/{p.name}" if sub else p.name))
        else:
            client.log_artifact(run_id, str(p), artifact_path=sub)
    return skipped


def log_trial_result(client, run_id: str, result: Any, cfg: DictConfig | None,
                     axes: Mapping[str, Any] | None = None, out_dir: Path | None = None,
                     seconds: float | None = None) -> None:
    """Params (``result.params`` plus the flattened axis values, axis values winning), metrics (final values and
    history series), the resolved config as ``config.yaml`` and every artifact file of the result."""
    r = as_result(result)
    log_params(client, run_id, {**{str(k): v for k, v in r.params.items()}, **flatten_axes(axes)})
    metrics = dict(r.metrics)
    if seconds is not None:
        metrics.setdefault(SECONDS_METRIC, float(seconds))
    log_metrics(client, run_id, metrics, r.history)
    log_config(client, run_id, cfg)
    for msg in log_artifact_files(client, run_id, r.artifacts, root=out_dir):
        print(f"warning: {msg}", file=sys.stderr)


def error_summary(exc_or_tb: BaseException | str) -> str:
    """First line of an error: ``ValueError: bad thing`` (from an exception or a formatted traceback)."""
    if isinstance(exc_or_tb, BaseException):
        first = (str(exc_or_tb).strip().splitlines() or [""])[0]
        return f"{type(exc_or_tb).__name__}: {first}" if first else type(exc_or_tb).__name__
    lines = [ln for ln in str(exc_or_tb).strip().splitlines() if ln.strip()]
    # the exception line is the last unindented line of a traceback
    for ln in reversed(lines):
        if not ln.startswith((" ", "\t")) and not ln.startswith("Traceback"):
            return ln.strip()[:500]
    return lines[-1].strip()[:500] if lines else "error"


def log_error(client, run_id: str, tb: str, summary: str | None = None) -> str:
    """Tag ``rmexp.error`` (first line) and artifact ``error.txt`` (the traceback). Returns the first line."""
    summary = (summary or error_summary(tb))[:MAX_TAG_VALUE]
    client.set_tag(run_id, ERROR_TAG, summary)
    with tempfile.TemporaryDirectory(prefix="rmexp-err-") as tmp:
        path = Path(tmp) / "error.txt"
        path.write_text(tb)
        client.log_artifact(run_id, str(path))
    return summary


# ----------------------------------------------------------------------------------------------------- trial identity
def trial_key(cfg: DictConfig) -> str:
    from rmexp.trial import trial_key as _key

    return _key(cfg)


def run_name(cfg: DictConfig, key: str) -> str:
    name = OmegaConf.select(cfg, "model.name") or "trial"
    return f"{name}-{key[:8]}"


def default_trial_fn() -> Callable:
    from rmexp.trial import run_trial

    return run_trial


def call_trial(trial_fn: Callable, cfg: DictConfig, out_dir: Path, progress: Callable[[str], None] | None):
    """``trial_fn(cfg, out_dir, progress=...)``, or without ``progress`` for a function that takes none."""
    import inspect

    try:
        params = inspect.signature(trial_fn).parameters
        takes_progress = "progress" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        takes_progress = True
    if takes_progress:
        return trial_fn(cfg, out_dir, progress=progress)
    return trial_fn(cfg, out_dir)


def command_line(overrides: Iterable[str] | None = None) -> str:
    import shlex

    if overrides is None:
        overrides = _cli_overrides()
    return " ".join(["python -m rmexp", *(shlex.quote(o) for o in overrides)])


def _cli_overrides() -> list[str]:
    """The command-line overrides of this invocation (under @hydra.main), else []."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - no Hydra app running
        pass
    return []


# ----------------------------------------------------------------------------------------------------- one run
def run_single(cfg: DictConfig, trial_fn: Callable | None = None, overrides: list[str] | None = None):
    """One trial = one MLflow run in experiment ``cfg.tracking.experiment``.

    The run always ends: FINISHED on success; on an exception, ``error.txt`` (traceback) and tag ``rmexp.error``
    are logged, the status is FAILED (KILLED on Ctrl-C) and the exception is re-raised. The trial writes into a
    fresh temporary directory whose files are copied into the run's artifacts. Returns the trial's result.
    """
    trial_fn = trial_fn or default_trial_fn()
    uri = tracking_uri(cfg)
    client = client_for(uri)
    experiment = str(cfg.tracking.experiment)
    exp_id = get_or_create_experiment(client, experiment, uri)
    key = trial_key(cfg)
    name = run_name(cfg, key)
    tags = {TRIAL_KEY_TAG: key, COMMAND_TAG: command_line(overrides)[:MAX_TAG_VALUE]}
    run = client.create_run(exp_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    print(f"[rmexp] MLflow run {run_id} ({name}) in experiment {experiment!r} at {uri}", flush=True)

    def progress(msg: str) -> None:
        print(f"[{name}] {msg}", flush=True)

    start = time.time()
    status = "FAILED"
    try:
        with tempfile.TemporaryDirectory(prefix=f"rmexp-{key[:8]}-") as tmp:
            out_dir = Path(tmp)
            result = call_trial(trial_fn, cfg, out_dir, progress)
            log_trial_result(client, run_id, result, cfg, out_dir=out_dir, seconds=time.time() - start)
        status = "FINISHED"
        return result
    except BaseException as e:
        status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        try:
            log_error(client, run_id, traceback.format_exc(), error_summary(e))
            log_config(client, run_id, cfg)
        except Exception as log_exc:  # noqa: BLE001 - never hide the trial's own error
            print(f"warning: could not log the error to MLflow: {log_exc}", file=sys.stderr)
        raise
    finally:
        client.set_terminated(run_id, status)
        print(f"[rmexp] run {run_id} {status} after {time.time() - start:.1f} s. See it with:\n"
              f"{ui_hint(uri, exp_id, run_id)}", flush=True)
