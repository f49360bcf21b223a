"""The recorder: the only code that writes MLflow runs, for a sweep and for a single trial alike.

The driver process is the only writer (SQLite dislikes concurrent writers): trials, wherever they run, return
a result and the driver records it here. Layout:

* experiment: tag ``mlflow.experimentKind=custom_model_development`` (MLflow 3's "traditional ML" kind); the
  3.17 UI decides by its GenAI / Model-training switch instead (URL parameter ``workflowType``, remembered in
  the browser), so the printed link carries ``?workflowType=machine_learning`` and opens on the runs table (see
  :func:`rmexp.tracking.ui_hint`); artifacts beside a SQLite database (:func:`rmexp.tracking.artifact_location`).
* a sweep's parent run: tags ``rmexp.sweep``, ``rmexp.axes``, ``rmexp.command``; params ``sweep.axes.<key>``
  (the values listed), ``sweep.name``, ``sweep.replicates``, ``sweep.n_trials`` and every command-line override
  (``override.<key>``); ``sweep_config.yaml``; after the trials, only the *headline* correlations as metrics
  (``corr/pearson/rb2_overall__bon_gain_16``, ...), the full table as ``correlations.csv``/``.txt`` and plots.
* a trial's run: created RUNNING when the trial starts, named by its axis values
  (``model=toy_gpt2_xs,train.epochs=2``; a single run: ``<model>-<key[:8]>``), tags ``rmexp.trial_key`` and
  (in a sweep) ``mlflow.parentRunId``; on its result: params, metrics with their histories, datasets
  (``log_inputs``: the preference rows and the benchmarks), ``config.yaml`` and the trial's files; then FINISHED,
  or FAILED with tag ``rmexp.error`` and ``error.txt``.
* resume: a trial whose key has a FINISHED run in the experiment is not rerun; it gets a FINISHED copy under the
  new parent (params and final metrics, tag ``rmexp.cached_from=<original run id>``; artifacts stay with the
  original), so every parent holds every trial of its sweep.

Every run ends: runs this recorder opened and has not closed are ended KILLED by :meth:`Recorder.close_open`
(the driver calls it on an interrupt). Every run carries its driver's host, pid and process start time as tags;
an invocation first ends as KILLED the RUNNING runs of its experiment whose driver process on this host is gone
(:meth:`Recorder.reap_dead`), e.g. after ``kill -9``.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from rmexp import tracking as T

PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"   # read by the MLflow 3 UI (ExperimentKind in its JS bundle)
EXPERIMENT_KIND = "custom_model_development"    # "traditional ML": the experiment page opens on the runs table
DRIVER_HOST_TAG = "rmexp.driver.host"
DRIVER_PID_TAG = "rmexp.driver.pid"
RAY_NODE_TAG = "rmexp.ray_node"                 # the Ray node a sweep's trial ran on
DRIVER_START_TAG = "rmexp.driver.start"         # the pid's process start time: a reused pid is not our driver


# ----------------------------------------------------------------------------------------------------- drivers
def _process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), '' if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def driver_tags() -> dict[str, str]:
    pid = os.getpid()
    return {DRIVER_HOST_TAG: socket.gethostname(), DRIVER_PID_TAG: str(pid), DRIVER_START_TAG: _process_start(pid)}


def driver_alive(tags: Mapping[str, str]) -> bool | None:
    """Whether the driver that holds a run is alive; None when it cannot be told (another host, no tags)."""
    if tags.get(DRIVER_HOST_TAG) != socket.gethostname() or not tags.get(DRIVER_PID_TAG, "").isdigit():
        return None
    pid = int(tags[DRIVER_PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = tags.get(DRIVER_START_TAG)
    return not (start and _process_start(pid) and _process_start(pid) != start)


# ----------------------------------------------------------------------------------------------------- writers
def get_or_create_experiment(client, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside the db) if missing; restores a deleted one;
    sets its kind so the MLflow UI opens on the runs table."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=T.artifact_location(tracking_uri, name),
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created meanwhile (another driver)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


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
        key = T.safe_key(name)
        for step, value in series:
            batch.append(Metric(key, float(value), now, int(step)))
            last_step[key] = max(last_step.get(key, int(step)), int(step))
    for name, value in metrics.items():
        if value is None:
            continue
        key = T.safe_key(name)
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        batch.append(Metric(key, value, now + 1, last_step.get(key, 0)))
    for chunk in _chunks(batch, T.MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


def log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(T.safe_key(k), T.str_value(v)[:T.MAX_PARAM_VALUE]) for k, v in params.items()]
    dedup = list({p.key: p for p in items}.values())
    for chunk in _chunks(dedup, T.MAX_PARAMS_PER_BATCH):
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


def log_datasets(client, run_id: str, datasets: Iterable[Mapping[str, str]]) -> None:
    """The trial's datasets (:func:`rmexp.tracking.describe_dataset` records) as the run's inputs."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = [DatasetInput(Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                                   source=d["source"], schema=d.get("schema"), profile=d.get("profile")),
                           tags=[InputTag("mlflow.data.context", d.get("context", "train"))])
              for d in datasets]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)


def log_trial_result(client, run_id: str, result: Any, cfg: DictConfig | None,
                     axes: Mapping[str, Any] | None = None, out_dir: Path | None = None,
                     seconds: float | None = None) -> None:
    """Params (``result.params`` plus the flattened axis values, axis values winning), metrics (final values and
    history series), datasets, the resolved config as ``config.yaml`` and every artifact file of the result."""
    r = T.as_result(result)
    log_params(client, run_id, {**{str(k): v for k, v in r.params.items()}, **T.flatten_axes(axes)})
    metrics = dict(r.metrics)
    if seconds is not None:
        metrics.setdefault(T.SECONDS_METRIC, float(seconds))
    log_metrics(client, run_id, metrics, r.history)
    log_datasets(client, run_id, r.datasets)
    log_config(client, run_id, cfg)
    for msg in log_artifact_files(client, run_id, r.artifacts, root=out_dir):
        print(f"warning: {msg}", file=sys.stderr)


def log_error(client, run_id: str, tb: str, summary: str | None = None) -> str:
    """Tag ``rmexp.error`` (first line) and artifact ``error.txt`` (the traceback). Returns the first line."""
    summary = (summary or T.error_summary(tb))[:T.MAX_TAG_VALUE]
    client.set_tag(run_id, T.ERROR_TAG, summary)
    with tempfile.TemporaryDirectory(prefix="rmexp-err-") as tmp:
        path = Path(tmp) / "error.txt"
        path.write_text(tb)
        client.log_artifact(run_id, str(path))
    return summary


# ----------------------------------------------------------------------------------------------------- recorder
class Recorder:
    """One experiment's runs as written by this driver; remembers the runs it opened until they are closed."""

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self.client = T.client_for(uri)
        self.experiment_id = get_or_create_experiment(self.client, experiment, uri)
        self.open: set[str] = set()
        self.tags = driver_tags()

    # -- lifecycle
    def _create(self, name: str, tags: Mapping[str, str], start_time: float | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags={**self.tags, **tags},
                                     start_time=None if start_time is None else int(start_time * 1000))
        self.open.add(run.info.run_id)
        return run.info.run_id

    def close(self, run_id: str, status: str, end_time: float | None = None) -> None:
        self.client.set_terminated(run_id, status, end_time=None if end_time is None else int(end_time * 1000))
        self.open.discard(run_id)

    def close_open(self, status: str = "KILLED") -> None:
        """End every run this recorder opened and has not closed: a sweep's parent with ``status``, trials (which
        were cancelled if still open) KILLED, children before their parent."""
        parent = getattr(self, "parent_id", None)
        for run_id in sorted(self.open, key=lambda r: r == parent):
            try:
                self.close(run_id, status if run_id == parent else "KILLED")
            except Exception as e:  # noqa: BLE001 - close the others anyway
                print(f"warning: could not end the MLflow run {run_id}: {e}", file=sys.stderr)

    def run_status(self, run_id: str) -> str | None:
        """A run's status (RUNNING, FINISHED, FAILED, KILLED), or None when the store has no such run (any other
        error of the store is raised)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.status
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def reap_dead(self, say=print) -> int:
        """End as KILLED the RUNNING runs of the experiment whose driver on this host is gone. Returns how many."""
        n = 0
        for run in T.search_all_runs(self.client, self.experiment_id, "attributes.status = 'RUNNING'"):
            if driver_alive(run.data.tags) is False:
                self.client.set_terminated(run.info.run_id, "KILLED")
                n += 1
                if PARENT_TAG not in run.data.tags:
                    say(f"[rmexp] run {run.info.run_id} ({run.info.run_name}) was left RUNNING by driver pid "
                        f"{run.data.tags[DRIVER_PID_TAG]}, which is gone: marked KILLED")
        return n

    # -- sweep parent
    def start_parent(self, name: str, sweep: str, cfg: DictConfig, axes: Mapping[str, Any], n_trials: int,
                     overrides: list[str]) -> str:
        from rmexp.sweep.grid import _override_key

        self.parent_id = self._create(f"{sweep} {time.strftime('%Y-%m-%d %H:%M:%S')}", {
            T.SWEEP_TAG: sweep, "rmexp.n_trials": str(n_trials),
            T.COMMAND_TAG: T.command_line(overrides)[:T.MAX_TAG_VALUE],
            T.AXES_TAG: T.axes_label(axes)[:T.MAX_TAG_VALUE]})
        params: dict[str, Any] = {f"sweep.axes.{k}": T.axes_label({"_": v})[2:] for k, v in axes.items()}
        params |= {"sweep.name": sweep, "sweep.replicates": cfg.sweep.replicates, "sweep.n_trials": n_trials}
        for o in overrides:
            key = _override_key(o)
            if key and not key.startswith("sweep"):
                params[f"override.{key}"] = o.split("=", 1)[1] if "=" in o else o
        log_params(self.client, self.parent_id, params)
        log_config(self.client, self.parent_id, cfg, name="sweep_config.yaml")
        return self.parent_id

    def log_analysis(self, parent_id: str, df, out_dir: Path) -> None:
        """The headline correlations as metrics; the full table and the plots in ``out_dir`` as artifacts."""
        from mlflow.entities import Metric

        from rmexp.analyze import corr_metrics
        from rmexp.sweep.summary import headline_rows

        ts = int(time.time() * 1000)
        metrics = [Metric(k, v, ts, 0) for k, v in corr_metrics(headline_rows(df)).items()]
        for chunk in _chunks(metrics, T.MAX_METRICS_PER_BATCH):
            self.client.log_batch(parent_id, metrics=chunk)
        for name in ("correlations.csv", "correlations.txt"):
            self.client.log_artifact(parent_id, str(out_dir / name))
        if (out_dir / "plots").is_dir():
            self.client.log_artifacts(parent_id, str(out_dir / "plots"), artifact_path="plots")

    # -- trials
    def finished_trials(self) -> dict[str, Any]:
        """trial key -> a FINISHED run of it in the experiment (an original run preferred over a cached copy;
        the latest of several)."""
        best: dict[str, Any] = {}
        for run in T.search_all_runs(self.client, self.experiment_id, "attributes.status = 'FINISHED'"):
            key = run.data.tags.get(T.TRIAL_KEY_TAG)
            if not key:
                continue
            rank = (T.CACHED_FROM_TAG not in run.data.tags, run.info.end_time or 0)
            old = best.get(key)
            if old is None or rank > (T.CACHED_FROM_TAG not in old.data.tags, old.info.end_time or 0):
                best[key] = run
        return best

    def _trial_tags(self, key: str, axes: Mapping[str, Any], parent_id: str | None, sweep: str | None,
                    command: str | None) -> dict[str, str]:
        tags = {T.TRIAL_KEY_TAG: key}
        if parent_id is not None:
            tags |= {PARENT_TAG: parent_id, T.SWEEP_TAG: str(sweep), T.AXES_TAG: T.axes_label(axes)[:T.MAX_TAG_VALUE]}
        if command is not None:
            tags[T.COMMAND_TAG] = command[:T.MAX_TAG_VALUE]
        return tags

    def start_trial(self, name: str, key: str, axes: Mapping[str, Any] | None = None, parent_id: str | None = None,
                    sweep: str | None = None, command: str | None = None) -> str:
        """A RUNNING run for a trial that starts now."""
        return self._create(name, self._trial_tags(key, axes or {}, parent_id, sweep, command))

    def end_trial(self, run_id: str, payload: Mapping[str, Any], cfg: DictConfig, axes: Mapping[str, Any] | None,
                  out_dir: Path | None, status_on_error: str = "FAILED") -> tuple[str, str | None]:
        """Record a trial's payload (``{"ok", "result" | "error", "summary", "start", "end"}``) and end its run.
        Returns (status, error line). A logging failure fails this trial, not the caller."""
        start, end = payload.get("start", time.time()), payload.get("end", time.time())
        status, error = status_on_error, None
        try:
            if payload.get("node"):
                self.client.set_tag(run_id, RAY_NODE_TAG, str(payload["node"]))
            if payload.get("ok"):
                log_trial_result(self.client, run_id, payload["result"], cfg, axes=axes, out_dir=out_dir,
                                 seconds=end - start)
                status = "FINISHED"
            else:
                log_params(self.client, run_id, T.flatten_axes(axes))
                log_config(self.client, run_id, cfg)
                error = log_error(self.client, run_id, payload.get("error") or "unknown error", payload.get("summary"))
        except Exception as e:  # noqa: BLE001
            error = f"could not log the trial to MLflow: {T.error_summary(e)}"
            try:
                log_error(self.client, run_id, traceback.format_exc(), error)
            except Exception:  # noqa: BLE001
                pass
            status = "FAILED"
        finally:
            self.close(run_id, status, end_time=end)
        return status, error

    def cached_trial(self, name: str, key: str, axes: Mapping[str, Any], parent_id: str, sweep: str, source) -> str:
        """A FINISHED run under ``parent_id`` copying ``source``'s params, final metrics and datasets, tagged
        ``rmexp.cached_from=<original run id>``."""
        origin = source.data.tags.get(T.CACHED_FROM_TAG) or source.info.run_id
        run_id = self._create(name, self._trial_tags(key, axes, parent_id, sweep, None) | {T.CACHED_FROM_TAG: origin})
        status = "FAILED"
        try:
            log_params(self.client, run_id, {**source.data.params, **T.flatten_axes(axes)})
            log_metrics(self.client, run_id, dict(source.data.metrics))
            if source.inputs and source.inputs.dataset_inputs:
                self.client.log_inputs(run_id, datasets=list(source.inputs.dataset_inputs))
            status = "FINISHED"
        finally:
            self.close(run_id, status)
        return run_id
