"""MLflow tracking: one trial = one MLflow run; what a trial run holds is described in
:mod:`rmexp.sweep.recorder`, the only code that writes runs.

This module holds what both the driver and the Ray workers need without writing anything: the tracking URI
(default ``sqlite:///<abs cwd>/mlflow.db``; MLflow 3 refuses the plain file store by default; artifacts of an
experiment go beside the database, under ``<db dir>/mlartifacts/<experiment>``), MLflow-safe names, the shape of
a trial's result (:class:`ResultView`, :func:`describe_dataset`), the trial's identity, the signal handling that
makes every run end, and :func:`run_single`: ``python -m rmexp ...`` as a one-trial run without Ray.

A single run writes its files into a fresh temporary directory, removed once everything is copied into MLflow;
the run's artifacts are the place to look. :func:`ui_hint` says how to open the UI: for a local store
``mlflow ui --backend-store-uri <uri> --host 127.0.0.1 --port 5000`` (bound to localhost: the UI has no
authentication); for an ``http://`` tracking server, the server itself.
"""
from __future__ import annotations

import posixpath
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote

from filelock import FileLock
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
UI_WORKFLOW = "machine_learning"  # else the UI (default "genai") opens an experiment on its Traces overview


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
    """The command that serves a local store's UI on loopback (the UI has no authentication)."""
    return f"mlflow ui --backend-store-uri {uri} --host {UI_HOST} --port {UI_PORT}"


def ui_hint(uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """Where to look: for an ``http(s)://`` tracking server (which is the UI) the page to open; for a local
    store the command that opens the UI and then the page."""
    page = ""
    if experiment_id is not None:  # MLflow 3.17's UI picks GenAI or model-training pages by this URL parameter
        page = (f"/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id is not None else "")
                + f"?workflowType={UI_WORKFLOW}")
    if uri.startswith(("http://", "https://")):
        return f"  open {uri.rstrip('/')}{page}"
    return f"  {ui_command(uri)}\n  then open http://{UI_HOST}:{UI_PORT}{page}"


def client_for(uri: str):
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    # MLflow creates and migrates a new sqlite store on first use; two processes doing that at once (two runs
    # started together on a fresh store) fail ("No such index: ..."). So the first use happens under a lock.
    with FileLock(f"{db}.lock"):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


# ----------------------------------------------------------------------------------------------------- names
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def safe_key(name: str) -> str:
    """An MLflow-valid metric/param key: characters MLflow refuses (``@``, ``=``, ...) become ``_``, as in
    :func:`rmexp.analyze.slug`; ``/`` and spaces are kept (``rb2/Precise IF`` is a valid key)."""
    key = _BAD_KEY_CHARS.sub("_", str(name))
    key = posixpath.normpath(key).lstrip("/") if key else "_"
    return key[:250] if key not in (".", "") else "_"


def str_value(v: Any) -> str:
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
            out[safe_key(prefix)] = str_value(value)

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
        return str_value(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in (axes or {}).items())


# ----------------------------------------------------------------------------------------------------- results
@dataclass
class ResultView:
    """A `TrialResult`, or the plain dict a Ray worker sends back, seen the same way."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    datasets: list[dict[str, str]] = field(default_factory=list)  # describe_dataset records


FIELDS = ("metrics", "params", "history", "artifacts", "datasets")


def as_result(result: Any) -> ResultView:
    if isinstance(result, ResultView):
        return result
    if is_dataclass(result) and not isinstance(result, type):
        result = {f: getattr(result, f) for f in FIELDS if hasattr(result, f)}
    elif not isinstance(result, Mapping):
        result = {f: getattr(result, f, None) for f in FIELDS}
    return ResultView(
        metrics=dict(result.get("metrics") or {}),
        params=dict(result.get("params") or {}),
        history={k: [(int(s), float(v)) for s, v in series] for k, series in (result.get("history") or {}).items()},
        artifacts=[Path(p) for p in (result.get("artifacts") or [])],
        datasets=[dict(d) for d in (result.get("datasets") or [])],
    )


def result_to_dict(result: Any) -> dict:
    """A picklable plain dict of a trial result (what a Ray worker returns)."""
    r = as_result(result)
    return {"metrics": {str(k): float(v) for k, v in r.metrics.items() if v is not None},
            "params": {str(k): str_value(v) for k, v in r.params.items()},
            "history": r.history, "artifacts": [str(p) for p in r.artifacts], "datasets": r.datasets}


def describe_dataset(name: str, rows: list[Mapping[str, Any]], source: Mapping[str, Any] | str,
                     context: str) -> dict[str, str]:
    """What MLflow's Dataset column shows of ``rows``: name, digest, schema, profile and source, as the plain dict
    a Ray worker sends back (the recorder logs it with ``log_inputs``). Computed here without pandas or MLflow
    (a worker need not import them): the digest is a SHA-256 of every row (MLflow's ``from_pandas`` hashes a
    sample), the schema and profile are in MLflow's format (``mlflow_colspec``; ``num_rows``,
    ``num_elements``). Nested values count as strings (JSON). ``source``: a file path or URI, or a mapping that
    says how the rows were generated (the toy world's seeds and settings)."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(list(rows), sort_keys=True, default=str).encode()).hexdigest()[:8]
    cols: dict[str, str] = {}
    for row in rows[:1]:
        for k, v in row.items():
            cols[str(k)] = ("boolean" if isinstance(v, bool) else "long" if isinstance(v, int)
                            else "double" if isinstance(v, float) else "string")
    schema = {"mlflow_colspec": [{"type": t, "name": k, "required": True} for k, t in cols.items()]}
    if isinstance(source, Mapping):
        source_type, src = "code", {"tags": {str(k): str_value(v) for k, v in source.items()}}
    else:
        source_type, src = "local", {"uri": str(source)}
    return {"name": name, "digest": digest, "source_type": source_type, "source": json.dumps(src),
            "schema": json.dumps(schema), "profile": json.dumps({"num_rows": len(rows),
                                                                 "num_elements": len(rows) * len(cols)}),
            "context": context}


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


# ----------------------------------------------------------------------------------------------------- signals
class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived: the driver unwinds like Ctrl-C, ending its runs KILLED and removing temp dirs."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


_RECEIVED: list[int] = []  # signals caught, latest last: Ray's ray.wait re-raises a bare KeyboardInterrupt
# Signals whose Interrupted may not have unwound anything: a handler that runs inside a finalizer (`__del__`, a
# weakref callback) raises where Python prints "Exception ignored" and goes on, and the run would end FINISHED.
_PENDING: list[int] = []


def interrupt_signal(exc: BaseException) -> int:
    """The signal behind an interrupt: the exception's own, else the last one caught, else SIGINT (Ctrl-C)."""
    return getattr(exc, "signum", None) or (_RECEIVED[-1] if _RECEIVED else int(signal.SIGINT))


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` for a signal caught inside :func:`interrupt_on_signals` whose exception was
    swallowed. Called where work goes on normally (a trial's stage boundaries, before its run is logged
    FINISHED, between a sweep's waits), never while an interrupt unwinds."""
    if _PENDING:
        signum = _PENDING[-1]
        _PENDING.clear()
        raise Interrupted(signum)


@contextmanager
def interrupt_on_signals():
    """While inside, SIGTERM (``kill``, ``timeout``, schedulers, ``docker stop``) and SIGINT raise
    :class:`Interrupted` in the main thread; the previous handlers come back on exit. A signal whose exception
    was swallowed is raised on the way out at the latest."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _RECEIVED.append(signum)
        _PENDING.append(signum)
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except BaseException:
        # delivered (an interrupt is unwinding), or overtaken by an error that ends this work anyway: nothing is
        # left pending for a later run in this process (a notebook calling run_single again)
        _PENDING.clear()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    raise_if_interrupted()


# ----------------------------------------------------------------------------------------------------- one run
def run_single(cfg: DictConfig, trial_fn: Callable | None = None, overrides: list[str] | None = None):
    """One trial = one MLflow run in experiment ``cfg.tracking.experiment``, written by the same recorder as a
    sweep's trials (:class:`rmexp.sweep.recorder.Recorder`), without Ray.

    The run always ends: FINISHED on success; on an exception, ``error.txt`` (traceback) and tag ``rmexp.error``
    are logged, the status is FAILED (KILLED on Ctrl-C, SIGTERM) and the exception is re-raised. The trial writes
    into a fresh temporary directory whose files are copied into the run's artifacts and which is then removed.
    Returns the trial's result.
    """
    from rmexp.sweep.recorder import Recorder

    trial_fn = trial_fn or default_trial_fn()
    uri = tracking_uri(cfg)
    rec = Recorder(uri, str(cfg.tracking.experiment))
    rec.reap_dead()
    key = trial_key(cfg)
    name = run_name(cfg, key)
    run_id = rec.start_trial(name, key, command=command_line(overrides))
    print(f"[rmexp] MLflow run {run_id} ({name}) in experiment {rec.experiment!r} at {uri}", flush=True)

    def progress(msg: str) -> None:
        raise_if_interrupted()  # a stage boundary: where a swallowed interrupt stops the trial
        print(f"[{name}] {msg}", flush=True)

    start = time.time()
    status = "FAILED"
    try:
        with interrupt_on_signals(), tempfile.TemporaryDirectory(prefix=f"rmexp-{key[:8]}-") as tmp:
            result = call_trial(trial_fn, cfg, Path(tmp), progress)
            raise_if_interrupted()
            status, error = rec.end_trial(run_id, {"ok": True, "result": result, "start": start, "end": time.time()},
                                          cfg, None, Path(tmp))
        if error:
            print(f"warning: {error}", file=sys.stderr)
        return result
    except BaseException as e:
        status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        if run_id in rec.open:
            rec.end_trial(run_id, {"ok": False, "error": traceback.format_exc(), "summary": error_summary(e),
                                   "start": start, "end": time.time()}, cfg, None, None, status_on_error=status)
        raise
    finally:
        rec.close_open("KILLED")
        print(f"[rmexp] run {run_id} {status} after {time.time() - start:.1f} s. See it with:\n"
              f"{ui_hint(uri, rec.experiment_id, run_id)}", flush=True)
