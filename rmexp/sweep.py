"""The sweep driver: Hydra composes one config per trial, Ray runs the trials, MLflow records them.

    python -m rmexp +sweep=smoke                       # conf/sweep/smoke.yaml
    python -m rmexp +sweep=epochs train.batch_size=16  # command-line overrides apply to every trial

A sweep config (``conf/sweep/<name>.yaml``, ``# @package _global_``) sets ``sweep.name`` and ``sweep.axes``: a
mapping from a Hydra override key to a list of values. A key is a config group (``model: [toy_llama_s, ...]``)
or a dotted key (``train.epochs: [1, 2]``); values may be scalars, lists or dicts (``data.domain_weights:
[{Factuality: 3, Math: 3}, ...]``; a dict value is *merged* into the base dict, as Hydra does, so domains a mix
leaves out keep their base weight). The trials are the cartesian product of the axes, first axis slowest.

Order of work (:func:`run_sweep`):

1. :func:`compose_trials` composes and validates every trial (base = this invocation's command-line
   overrides; an axis replaces a command-line override of the same key). Any bad axis value stops the sweep
   here, before anything starts, with one message naming the axis and the value.
2. Ray: joins ``ray.address`` / ``$RAY_ADDRESS`` or starts a local Ray (``ray.num_cpus``); an already
   initialised Ray is reused (and not shut down). Every trial asks ``ray.cpus_per_trial`` CPUs and
   ``ray.gpus_per_trial`` GPUs; an ask that no node can ever satisfy fails here (Ray would wait forever).
3. MLflow (the driver is the only writer): experiment = the sweep name (or ``tracking.experiment`` when it is
   given on the command line); one parent run per invocation; one nested child run per trial.
4. Resume: FINISHED runs in the experiment (under any parent) with the same ``rmexp.trial_key`` are not rerun.
   Each such *cached* trial gets a lightweight FINISHED child run under the new parent that copies the original
   run's params and final metrics, tagged ``rmexp.cached_from=<original run id>`` (artifacts stay with the
   original). So every parent run holds every trial of its sweep and the correlation step needs no special case.
   FAILED or unfinished trials are rerun.
5. Trials run as Ray tasks, at most ``ray.max_parallel`` in flight (default: as many as the cluster fits). A
   child run is created only when a trial's result arrives (FINISHED, or FAILED with ``error.txt`` and tag
   ``rmexp.error``), so a killed driver leaves no half-made children and a rerun duplicates nothing.
   Application errors are caught in the task and do not stop the sweep; system failures (a dead worker) are
   retried by Ray ``ray.max_retries`` times.
6. At the end: benchmark/downstream correlations on the parent (:func:`rmexp.analyze.analyze_experiment`, with
   at least 3 finished trials), a summary table and the command that opens the MLflow UI.

Trial output directories: ``runs/<sweep name>/<trial key>/`` under the driver's working directory (cleared
before a trial (re)runs). Workers run in the driver's working directory when it exists on their node, so the
relative ``cache_dir`` is shared; on another node the trial's files are shipped back with its result.
"""
from __future__ import annotations

import itertools
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from rmexp.analyze import HEADLINE_BENCH, PARENT_TAG, TRIAL_KEY_TAG
from rmexp.downstream import headline_metrics
from rmexp.config import CONF_DIR, ConfigError, validate
from rmexp import tracking as T

MIN_TRIALS_FOR_CORRELATION = 3
MAX_SHIPPED_BYTES = 512 * 2**20  # artifacts sent back from another node, in all


class ResourceError(ConfigError):
    """A trial asks for more than any node of the Ray cluster has."""


# ----------------------------------------------------------------------------------------------------- grid
def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def expand_grid(axes: Mapping[str, Iterable[Any]] | DictConfig) -> list[dict[str, Any]]:
    """Cartesian product of the axes, in a stable order: axes in the given order, the first axis varying
    slowest, values in their listed order. ``{}`` gives ``[{}]`` (one trial with no axis)."""
    axes = _plain(axes) or {}
    if not isinstance(axes, Mapping):
        raise ConfigError(f"config error: sweep.axes must map override keys to lists of values, got {axes!r}")
    keys, value_lists = [], []
    for key, values in axes.items():
        values = _plain(values)
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"config error: sweep axis {key}: expected a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"config error: sweep axis {key}: the list of values is empty")
        keys.append(str(key))
        value_lists.append(list(values))
    return [dict(zip(keys, combo)) for combo in itertools.product(*value_lists)]


# ----------------------------------------------------------------------------------------------------- overrides
_PLAIN_STR = re.compile(r"[A-Za-z_][\w\-./]*")
_KEYWORDS = {"true", "false", "null", "nan", "inf", "none"}
_KEY_SPECIALS = set("\\()[]{}:=, \t'\"")


def _fmt_key(key: Any) -> str:
    return "".join("\\" + c if c in _KEY_SPECIALS else c for c in str(key))


def format_value(value: Any) -> str:
    """A value in Hydra's override grammar: ``null``, ``true``, ``3``, ``0.0003``, ``toy_llama_s``,
    ``'a b'``, ``[1,2]``, ``{Factuality:3,Precise\\ IF:1}`` (dict keys with spaces or specials are escaped)."""
    value = _plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if _PLAIN_STR.fullmatch(value) and value.lower() not in _KEYWORDS:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_fmt_key(k)}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    raise ConfigError(f"config error: cannot write {value!r} ({type(value).__name__}) as a Hydra override value")


def format_override(key: str, value: Any) -> str:
    return f"{key}={format_value(value)}"


def _override_key(override: str) -> str | None:
    """The key or group an override sets (``+model=x`` -> ``model``), None when it cannot be parsed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).key_or_group
    except Exception:  # noqa: BLE001
        return None


def _strip_prefix(key: str) -> str:
    return key.lstrip("+~")


def _short_error(exc: BaseException) -> str:
    """A Hydra/OmegaConf error in one line: options listed inline, the config search path and Hydra's
    "To append to your config use +..." hint dropped, the cause (e.g. OmegaConf's message) appended."""
    text = str(exc).split("Config search path:")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    parts: list[str] = []
    options: list[str] | None = None
    for ln in lines:
        if ln.startswith("Available options in"):
            options = []
            parts.append("; " + ln[0].lower() + ln[1:].rstrip(":") + ": ")
        elif options is not None:
            options.append(ln)
            parts[-1] = parts[-1].split(": ")[0] + ": " + ", ".join(options)
        elif not ln.startswith("To append to your config use"):
            parts.append(ln)
    msg = re.sub(r"^config error:\s*", "", " ".join(parts).replace(" ; ", "; ").strip())
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        first = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        if first and first[0] not in msg:
            msg += f" ({first[0]})"
    return msg or type(exc).__name__


# ----------------------------------------------------------------------------------------------------- trials
@dataclass
class TrialSpec:
    index: int                  # position in the grid
    axes: dict[str, Any]        # axis key -> value of this trial
    overrides: list[str]        # the full override list it was composed from
    cfg: DictConfig             # resolved, validated trial config
    key: str                    # trial key (identity for resume)
    name: str                   # MLflow run name: <model name>-<key[:8]>

    @property
    def label(self) -> str:
        return T.axes_label(self.axes)


@contextmanager
def _hydra_context():
    """Reuse the running Hydra (inside @hydra.main or a test's initialize_config_dir), else initialise on conf/."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            yield


def _config_error_key(exc: ConfigError) -> str | None:
    m = re.match(r"^config error: (.+?)=", str(exc))
    return m.group(1) if m else None


def _blame_axis(failing_key: str | None, axes: Mapping[str, Any]) -> str | None:
    if failing_key is None:
        return None
    for axis in axes:
        k = _strip_prefix(axis)
        if failing_key == k or failing_key.startswith(k + "."):
            return axis
    return None


def compose_trials(cfg: DictConfig, overrides: list[str] | None = None,
                   key_fn: Callable[[DictConfig], str] | None = None) -> list[TrialSpec]:
    """One composed, validated config per grid point of ``cfg.sweep.axes``.

    ``overrides``: the base overrides (default: this invocation's command line, ``HydraConfig...overrides.task``,
    which includes ``+sweep=<name>``). Raises :class:`ConfigError` naming the axis and value on any bad value,
    before any trial has started. Trials with the same key (axes that do not change the trial's identity)
    are kept once.
    """
    name = OmegaConf.select(cfg, "sweep.name")
    if not name:
        raise ConfigError("config error: sweep.name is not set; select a sweep with +sweep=<name>")
    key_fn = key_fn or T.trial_key
    axes = _plain(cfg.sweep.axes) or {}
    grid = expand_grid(axes)
    if not axes:
        raise ConfigError(f"config error: sweep {name!r} has no axes (sweep.axes is empty)")
    base = list(T._cli_overrides() if overrides is None else overrides)
    axis_keys = {_strip_prefix(k) for k in axes}
    base = [o for o in base if _override_key(o) not in axis_keys]

    from hydra import compose

    composed: list[tuple[int, dict, list[str], DictConfig]] = []
    with _hydra_context():
        def attempt(ovs: list[str]) -> DictConfig:
            return compose(config_name="config", overrides=ovs)

        for index, point in enumerate(grid):
            axis_ovs = []
            for k, v in point.items():
                try:
                    axis_ovs.append(format_override(k, v))
                except ConfigError as e:
                    raise ConfigError(f"config error: sweep {name!r}, axis {k}: value {v!r} is not allowed: "
                                      f"{_short_error(e)}") from None
            ovs = base + axis_ovs
            try:
                trial_cfg = attempt(ovs)
            except Exception as e:  # noqa: BLE001 - any composition error is the config's
                # which axis? compose it alone on the base
                for (k, v), ov in zip(point.items(), axis_ovs):
                    try:
                        attempt(base + [ov])
                    except Exception as e1:  # noqa: BLE001
                        raise ConfigError(f"config error: sweep {name!r}, axis {k}: value {v!r} is not allowed: "
                                          f"{_short_error(e1)}") from None
                raise ConfigError(f"config error: sweep {name!r}, trial {T.axes_label(point)}: "
                                  f"{_short_error(e)}") from None
            try:
                validate(trial_cfg)
            except ConfigError as e:
                detail = re.sub(r"^config error:\s*", "", str(e))
                axis = _blame_axis(_config_error_key(e), point)
                if axis is not None:
                    raise ConfigError(f"config error: sweep {name!r}, axis {axis}: value {point[axis]!r} is not "
                                      f"allowed: {detail}") from None
                raise ConfigError(f"config error: sweep {name!r}, trial {T.axes_label(point)}: {detail}") from None
            composed.append((index, point, ovs, trial_cfg))

    specs: list[TrialSpec] = []
    seen: dict[str, TrialSpec] = {}
    for index, point, ovs, trial_cfg in composed:  # keys only once every trial is known to be valid
        key = key_fn(trial_cfg)
        if key in seen:
            print(f"[sweep {name}] note: trial {T.axes_label(point)} is the same trial as "
                  f"{seen[key].label} (key {key}); it runs once", flush=True)
            continue
        spec = TrialSpec(index=index, axes=dict(point), overrides=ovs, cfg=trial_cfg, key=key,
                         name=T.run_name(trial_cfg, key))
        seen[key] = spec
        specs.append(spec)
    return specs


# ----------------------------------------------------------------------------------------------------- Ray
def _node_resources() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def check_resources(cpus: float, gpus: float, nodes: list[dict[str, float]] | None = None) -> int:
    """How many trials asking ``cpus`` CPUs and ``gpus`` GPUs fit on the cluster at once; raises
    :class:`ResourceError` when no node could ever run one."""
    nodes = _node_resources() if nodes is None else nodes
    eps = 1e-9

    def fits(res: Mapping[str, float]) -> int:
        n = math.floor(res.get("CPU", 0.0) / cpus + eps) if cpus > 0 else 10**6
        if gpus > 0:
            n = min(n, math.floor(res.get("GPU", 0.0) / gpus + eps))
        return n

    total = sum(fits(r) for r in nodes)
    if total < 1:
        have_cpu = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
        have_gpu = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
        cluster_cpu = sum(r.get("CPU", 0.0) for r in nodes)
        cluster_gpu = sum(r.get("GPU", 0.0) for r in nodes)
        what = []
        if gpus > have_gpu + eps:
            what.append(f"ray.gpus_per_trial={gpus:g} GPU(s) but the largest node has {have_gpu:g}")
        if cpus > have_cpu + eps:
            what.append(f"ray.cpus_per_trial={cpus:g} CPU(s) but the largest node has {have_cpu:g}")
        raise ResourceError(
            f"config error: each trial asks {'; '.join(what) or f'{cpus:g} CPU and {gpus:g} GPU'}: no node of "
            f"the Ray cluster ({len(nodes)} node(s), {cluster_cpu:g} CPU, {cluster_gpu:g} GPU in all) can ever "
            f"run it. Lower the ask (e.g. ray.gpus_per_trial=0 on a CPU-only machine) or join a cluster that "
            f"has it (ray.address=... or RAY_ADDRESS).")
    return total


def _start_ray(cfg: DictConfig) -> bool:
    """Initialise Ray unless it already is; True when this call started (and so must shut down) it."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True, ignore_reinit_error=True, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=True,
                 ignore_reinit_error=True, logging_level=logging.WARNING)
    return True


def _trial_task(trial_fn: Callable, cfg: DictConfig, out_dir: str, cwd: str, threads: int, label: str,
                driver_node: str | None) -> dict:
    """Runs in a Ray worker. Application errors come back as ``{"ok": False, "error": traceback}`` (so Ray
    does not retry them); a dead worker is Ray's to retry."""
    import shutil

    start = time.time()
    node = None
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        pass
    try:
        try:
            import torch

            torch.set_num_threads(max(1, int(threads)))
        except ImportError:
            pass
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        out = Path(out_dir)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)

        def progress(msg: str) -> None:  # the label also keeps Ray from merging equal lines of two trials
            print(f"[{label}] {msg}", flush=True)

        result = T.result_to_dict(T.call_trial(trial_fn, cfg, out, progress))
        payload = {"ok": True, "result": result, "start": start, "end": time.time(), "node": node}
        if driver_node is not None and node is not None and node != driver_node:
            payload["files"] = _pack_files(result["artifacts"], out)
        return payload
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": traceback.format_exc(), "summary": T.error_summary(e), "start": start,
                "end": time.time(), "node": node}


def _pack_files(paths: list[str], root: Path) -> dict[str, bytes]:
    files, total = {}, 0
    for p in map(Path, paths):
        if not p.is_file():
            continue
        try:
            rel = p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = p.name
        size = p.stat().st_size
        if total + size > MAX_SHIPPED_BYTES:
            print(f"warning: artifact {p} not shipped back (over {MAX_SHIPPED_BYTES >> 20} MiB in all)", flush=True)
            continue
        files[rel] = p.read_bytes()
        total += size
    return files


def _unpack_files(payload: dict, out_dir: Path) -> None:
    files = payload.get("files")
    if not files:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    local = []
    for rel, data in files.items():
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        local.append(str(dest))
    payload["result"]["artifacts"] = local


# ----------------------------------------------------------------------------------------------------- MLflow
def finished_trials(client, experiment_id: str) -> dict[str, Any]:
    """trial key -> a FINISHED run of it in the experiment (an original run preferred over a cached copy;
    the latest of several)."""
    best: dict[str, Any] = {}
    for run in T.search_all_runs(client, experiment_id, "attributes.status = 'FINISHED'"):
        key = run.data.tags.get(TRIAL_KEY_TAG)
        if not key:
            continue
        rank = (T.CACHED_FROM_TAG not in run.data.tags, run.info.end_time or 0)
        old = best.get(key)
        if old is None or rank > (T.CACHED_FROM_TAG not in old.data.tags, old.info.end_time or 0):
            best[key] = run
    return best


def _child_tags(parent_id: str, sweep: str, spec: TrialSpec) -> dict[str, str]:
    return {PARENT_TAG: parent_id, TRIAL_KEY_TAG: spec.key, T.SWEEP_TAG: sweep,
            T.AXES_TAG: spec.label[:T.MAX_TAG_VALUE]}


def log_cached_child(client, experiment_id: str, parent_id: str, sweep: str, spec: TrialSpec, source) -> str:
    """A FINISHED child run under ``parent_id`` copying ``source``'s params and final metrics, tagged
    ``rmexp.cached_from=<original run id>``."""
    origin = source.data.tags.get(T.CACHED_FROM_TAG) or source.info.run_id
    tags = _child_tags(parent_id, sweep, spec) | {T.CACHED_FROM_TAG: origin}
    run = client.create_run(experiment_id, run_name=spec.name, tags=tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        T.log_params(client, run_id, {**source.data.params, **T.flatten_axes(spec.axes)})
        T.log_metrics(client, run_id, dict(source.data.metrics))
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    return run_id


def log_trial_child(client, experiment_id: str, parent_id: str, sweep: str, spec: TrialSpec, payload: dict,
                    out_dir: Path) -> tuple[str, str, str | None]:
    """The child run of a trial whose result (or error) just arrived. Returns (run id, status, error line)."""
    start_ms = int(payload.get("start", time.time()) * 1000)
    end_ms = int(payload.get("end", time.time()) * 1000)
    run = client.create_run(experiment_id, run_name=spec.name, start_time=start_ms,
                            tags=_child_tags(parent_id, sweep, spec))
    run_id = run.info.run_id
    status, error = "FAILED", None
    try:
        if payload.get("ok"):
            _unpack_files(payload, out_dir)
            T.log_trial_result(client, run_id, payload["result"], spec.cfg, axes=spec.axes, out_dir=out_dir,
                               seconds=(end_ms - start_ms) / 1000)
            status = "FINISHED"
        else:
            T.log_params(client, run_id, T.flatten_axes(spec.axes))
            T.log_config(client, run_id, spec.cfg)
            error = T.log_error(client, run_id, payload.get("error") or "unknown error", payload.get("summary"))
    except Exception as e:  # noqa: BLE001 - a logging failure fails this trial, not the sweep
        error = f"could not log the trial to MLflow: {T.error_summary(e)}"
        try:
            T.log_error(client, run_id, traceback.format_exc(), error)
        except Exception:  # noqa: BLE001
            pass
        status = "FAILED"
    finally:
        client.set_terminated(run_id, status, end_time=end_ms)
    return run_id, status, error


# ----------------------------------------------------------------------------------------------------- driver
@dataclass
class TrialOutcome:
    spec: TrialSpec
    status: str = "PENDING"      # PENDING | RUNNING | FINISHED | CACHED | FAILED
    run_id: str | None = None
    cached_from: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None


@dataclass
class SweepResult:
    name: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    trials: list[TrialOutcome]
    correlations: Any = None     # the DataFrame of rmexp.analyze.correlate, or None

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)

    @property
    def n_failed(self) -> int:
        return self.count("FAILED")

    @property
    def n_cached(self) -> int:
        return self.count("CACHED")

    @property
    def n_run(self) -> int:
        return self.count("FINISHED") + self.n_failed

    @property
    def ok(self) -> bool:
        return self.n_failed == 0 and all(t.status in ("FINISHED", "CACHED") for t in self.trials)


def _fmt_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def status_line(name: str, trials: list[TrialOutcome], elapsed: float) -> str:
    n = len(trials)
    done = sum(t.status in ("FINISHED", "CACHED", "FAILED") for t in trials)
    cached = sum(t.status == "CACHED" for t in trials)
    failed = sum(t.status == "FAILED" for t in trials)
    running = sum(t.status == "RUNNING" for t in trials)
    pending = sum(t.status == "PENDING" for t in trials)
    return (f"[sweep {name}] {done}/{n} done ({cached} cached, {failed} failed), {running} running, "
            f"{pending} pending, {_fmt_elapsed(elapsed)} elapsed")


def _cell(v: Any, width: int = 40) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    s = T.axes_label({"_": v})[2:] if isinstance(v, (dict, list)) else str(v)
    return s if len(s) <= width else s[:width - 1] + "~"


def summary_table(trials: list[TrialOutcome]) -> str:
    """Fixed-width text: trial, its axis values, status, headline metrics, seconds."""
    axes = list(dict.fromkeys(k for t in trials for k in t.spec.axes))
    # The overall benchmark scores, then each downstream method's headline outcomes that some trial has.
    metrics = [*HEADLINE_BENCH, *headline_metrics({k for t in trials for k in t.metrics})]
    header = ["trial", *axes, "status", *metrics, "seconds"]
    rows = []
    for t in trials:
        rows.append([t.spec.name, *[_cell(t.spec.axes.get(a)) for a in axes], t.status,
                     *[_cell(t.metrics.get(m)) for m in metrics],
                     "-" if t.seconds is None else f"{t.seconds:.1f}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    n_left = 2 + len(axes)

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < n_left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
    for t in trials:
        if t.status == "FAILED" and t.error:
            lines.append(f"  {t.spec.name} FAILED: {t.error}")
    return "\n".join(lines)


def headline_correlations(df) -> str:
    """The overall benchmark scores against the headline downstream metrics, as a table."""
    from rmexp.analyze import format_table, headline_pairs

    heads = headline_metrics(set(df["downstream"]), rm_only=True)
    sel = df[df["bench"].isin(HEADLINE_BENCH) & df["downstream"].isin(heads)]
    order = {(b, d): i for i, (b, d) in enumerate(itertools.product(HEADLINE_BENCH, heads))}
    sel = sel.iloc[sorted(range(len(sel)), key=lambda i: order[(sel["bench"].iloc[i], sel["downstream"].iloc[i])])]
    if sel.empty:
        pairs = headline_pairs(df)
        sel = df[[(b, d) in pairs for b, d in zip(df["bench"], df["downstream"])]]
    return format_table(sel)


def _experiment_name(cfg: DictConfig, base_overrides: list[str]) -> str:
    if any(_override_key(o) == "tracking.experiment" for o in base_overrides):
        return str(cfg.tracking.experiment)
    return str(cfg.sweep.name)


def _safe_dirname(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("._") or "sweep"


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill <pid>``) ends the sweep like Ctrl-C: trackers closed, parent KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_sweep(cfg: DictConfig, trial_fn: Callable | None = None, overrides: list[str] | None = None,
              key_fn: Callable[[DictConfig], str] | None = None, n_boot: int = 2000,
              file=None) -> SweepResult:
    """Run the sweep ``cfg.sweep`` (see the module docstring). Returns a :class:`SweepResult`; failed trials
    do not raise (``result.n_failed``; ``python -m rmexp`` exits 1). Raises :class:`ConfigError` before any
    work for a bad axis value or a resource ask the cluster can never meet."""
    out = file or sys.stdout

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    trial_fn = trial_fn or T.default_trial_fn()
    base = list(T._cli_overrides() if overrides is None else overrides)
    specs = compose_trials(cfg, base, key_fn=key_fn)        # 1. everything validated before anything starts
    name = str(cfg.sweep.name)
    max_parallel = OmegaConf.select(cfg, "ray.max_parallel")
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"config error: ray.max_parallel={max_parallel!r} is not allowed; it must be >= 1 or null")
    cpus, gpus = float(cfg.ray.cpus_per_trial), float(cfg.ray.gpus_per_trial)
    say(f"[sweep {name}] {len(specs)} trials over axes {', '.join(cfg.sweep.axes.keys())}")

    uri = T.tracking_uri(cfg)                                # MLflow, read-only so far
    client = T.client_for(uri)
    experiment = _experiment_name(cfg, base)
    exp_id = T.get_or_create_experiment(client, experiment, uri)
    done_runs = finished_trials(client, exp_id)              # resume: looked up before the parent exists
    to_run = [s for s in specs if s.key not in done_runs]

    started_ray = False
    parent_id = None
    trials = [TrialOutcome(spec=s) for s in specs]
    result: SweepResult | None = None
    parent_status = "FAILED"
    inflight: dict = {}
    try:
        if to_run:                                           # 2. Ray (not needed when every trial is cached)
            import ray

            started_ray = _start_ray(cfg)
            fit = check_resources(cpus, gpus)
            limit = max(1, min(int(max_parallel or fit), len(to_run)))

        command = T.command_line(base)                       # 3. the parent run
        parent = client.create_run(exp_id, run_name=f"{name} {time.strftime('%Y-%m-%d %H:%M:%S')}", tags={
            T.SWEEP_TAG: name, "rmexp.n_trials": str(len(specs)), T.COMMAND_TAG: command[:T.MAX_TAG_VALUE],
            T.AXES_TAG: T.axes_label(_plain(cfg.sweep.axes))[:T.MAX_TAG_VALUE]})
        parent_id = parent.info.run_id
        T.log_config(client, parent_id, cfg, name="sweep_config.yaml")
        say(f"[sweep {name}] MLflow experiment {experiment!r} (id {exp_id}), parent run {parent_id}, at {uri}")
        result = SweepResult(name, exp_id, parent_id, uri, trials)

        for t in trials:
            src = done_runs.get(t.spec.key)
            if src is None:
                continue
            t.run_id = log_cached_child(client, exp_id, parent_id, name, t.spec, src)
            t.status = "CACHED"
            t.cached_from = src.data.tags.get(T.CACHED_FROM_TAG) or src.info.run_id
            t.metrics = dict(src.data.metrics)
            t.seconds = t.metrics.get(T.SECONDS_METRIC)

        runs_root = Path.cwd().resolve() / "runs" / _safe_dirname(name)
        cwd = str(Path.cwd().resolve())
        queue = [t for t in trials if t.status == "PENDING"]
        t0 = time.time()
        if queue:
            driver_node = ray.get_runtime_context().get_node_id()
            task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=int(cfg.ray.max_retries),
                              retry_exceptions=False)(_trial_task).options(name="trial")
            threads = max(1, int(round(cpus)))
        with _sigterm_as_interrupt():                        # 5. run
            def refill() -> None:
                while queue and len(inflight) < limit:
                    t = queue.pop(0)
                    ref = task.remote(trial_fn, t.spec.cfg, str(runs_root / t.spec.key), cwd, threads,
                                      t.spec.name, driver_node)
                    inflight[ref] = (t, time.time())
                    t.status = "RUNNING"

            refill()
            say(status_line(name, trials, 0.0))
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    t, submitted = inflight.pop(ref)
                    try:
                        payload = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - system failure after Ray's retries
                        payload = {"ok": False, "error": traceback.format_exc(),
                                   "summary": f"Ray: {T.error_summary(e)} (after ray.max_retries="
                                              f"{cfg.ray.max_retries} retries)",
                                   "start": submitted, "end": time.time()}
                    refill()  # keep the workers busy while the driver writes this trial's run to MLflow
                    t.run_id, t.status, t.error = log_trial_child(client, exp_id, parent_id, name, t.spec,
                                                                  payload, runs_root / t.spec.key)
                    if payload.get("ok"):
                        t.metrics = dict(payload["result"]["metrics"])
                    t.seconds = payload.get("end", 0) - payload.get("start", 0)
                    if t.status == "FAILED":
                        say(f"[sweep {name}] trial {t.spec.name} ({t.spec.label}) FAILED: {t.error}")
                    say(status_line(name, trials, time.time() - t0))

        if started_ray and any(t.status in ("FINISHED", "FAILED") for t in trials):
            time.sleep(1.0)  # let Ray forward the workers' last lines before the summary
        say("")                                              # 6. summary and correlations
        say(summary_table(trials))
        n_ok = sum(t.status in ("FINISHED", "CACHED") for t in trials)
        client.set_tag(parent_id, "rmexp.n_failed", str(result.n_failed))
        client.set_tag(parent_id, "rmexp.n_cached", str(result.n_cached))
        if n_ok >= MIN_TRIALS_FOR_CORRELATION:
            from rmexp.analyze import analyze_experiment

            say("")
            try:
                import io

                buf = io.StringIO()  # the full table goes to the parent run (correlations.txt), not the terminal
                result.correlations = analyze_experiment(experiment, uri, parent_run_id=parent_id, n_boot=n_boot,
                                                         file=buf)
                say(f"headline correlations over {n_ok} trials (95% bootstrap CIs; every benchmark x downstream "
                    f"pair is in correlations.txt on the parent run):\n{headline_correlations(result.correlations)}")
            except Exception as e:  # noqa: BLE001 - the trials are recorded; the analysis can be rerun
                say(f"[sweep {name}] correlation analysis failed: {T.error_summary(e)}; rerun it with "
                    f"python -m rmexp.analyze --experiment {shlex.quote(experiment)} --tracking-uri {uri} "
                    f"--parent-run-id {parent_id}")
                client.set_tag(parent_id, "rmexp.analysis_error", T.error_summary(e)[:T.MAX_TAG_VALUE])
        else:
            say(f"\n[sweep {name}] correlations skipped: {n_ok} finished trial(s), at least "
                f"{MIN_TRIALS_FOR_CORRELATION} needed")
        verdict = f"{result.n_failed} of {len(trials)} trials FAILED" if result.n_failed else "all trials finished"
        say(f"\n[sweep {name}] {verdict} ({result.n_cached} cached) in {_fmt_elapsed(time.time() - t0)}; "
            f"parent run {parent_id}. Open the MLflow UI with:\n{T.ui_hint(uri, exp_id, parent_id)}")
        parent_status = "FINISHED"
        return result
    except KeyboardInterrupt:
        parent_status = "KILLED"
        say(f"\n[sweep {name}] interrupted: {len(inflight)} running trial(s) cancelled; finished trials are "
            f"recorded and a rerun of the same command skips them")
        raise
    finally:
        for ref in list(inflight):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        if parent_id is not None:
            try:
                client.set_terminated(parent_id, parent_status)
            except Exception as e:  # noqa: BLE001
                print(f"warning: could not close the parent run {parent_id}: {e}", file=sys.stderr)
        if started_ray:
            import ray

            ray.shutdown()
