"""The sweep driver: Hydra composes one config per trial, Ray runs the trials, MLflow records them.

    python -m rmexp +sweep=smoke                       # conf/sweep/smoke.yaml
    python -m rmexp +sweep=epochs train.batch_size=16  # command-line overrides apply to every trial
    python -m rmexp +sweep=smoke sweep.replicates=3    # every grid point with seeds s, s+1, s+2

Three parts, each in its module:

* :mod:`rmexp.sweep.grid` -- the axes expanded and every trial composed and validated (base = this
  invocation's command-line overrides; an axis replaces a command-line override of the same key). Any bad axis
  value stops the sweep before anything starts, with one line naming the axis and the value.
* :mod:`rmexp.sweep.scheduler` -- Ray: the cluster joined or started, the resource ask checked, one long-lived
  actor per trial slot running trial after trial, retries of system failures, files shipped back from other nodes.
* :mod:`rmexp.sweep.recorder` -- MLflow, the only writer: the parent run, one child run per trial (RUNNING while
  it runs), resume of finished trials as linked copies, the headline correlations, and every run ended.

:func:`run_sweep` is the order of work: grid; Ray, with one actor per trial slot (the actors import torch
and the trial code meanwhile); recorder (experiment = the sweep name, or ``tracking.experiment``
when it is given on the command line; runs left RUNNING by a dead driver ended KILLED; finished trials looked
up); Ray shut down again when every trial is cached (a resource ask no node meets is an error only when some
trial must run); the parent run; cached trials; the trials (the analysis modules import meanwhile); the
correlations (:func:`rmexp.analyze.analyze_experiment`, with at least 3 finished trials), then the summary table
and the headline correlations (computed first, so the workers' last lines arrive meanwhile); the UI hint.
SIGTERM and SIGINT end the running children and the parent KILLED (Ray's workers go with the driver); a rerun
of the same command runs only what did not finish.

Trial output directories: ``runs/<sweep name>/<trial key>/`` under the driver's working directory. An attempt
writes into a directory of its own (``.<trial key>.<run id>``) that replaces the trial's directory once its run
is logged, so the same sweep started twice in one directory never logs another attempt's half-cleared files.
"""
from __future__ import annotations

import io
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from rmexp import tracking as T
from rmexp.config import ConfigError
from rmexp.sweep.grid import (TrialSpec, _override_key, _plain, compose_trials, expand_grid, format_override,
                              format_value, replicate_axes, SEED_KEY, trial_name)
from rmexp.sweep.recorder import Recorder
from rmexp.sweep.scheduler import ResourceError, RayScheduler, check_resources, unpack_files
from rmexp.sweep.summary import (SweepResult, TrialOutcome, _fmt_elapsed, headline_correlations,
                                 status_line, summary_table)

__all__ = ["run_sweep", "compose_trials", "expand_grid", "format_value", "format_override", "check_resources",
           "ResourceError", "TrialSpec", "TrialOutcome", "SweepResult", "status_line", "summary_table",
           "headline_correlations", "replicate_axes", "SEED_KEY", "trial_name", "MIN_TRIALS_FOR_CORRELATION"]

MIN_TRIALS_FOR_CORRELATION = 3  # fewer points give no usable correlation or CI


def _experiment_name(cfg: DictConfig, base_overrides: list[str]) -> str:
    if any(_override_key(o) == "tracking.experiment" for o in base_overrides):
        return str(cfg.tracking.experiment)
    return str(cfg.sweep.name)


def _safe_dirname(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("._") or "sweep"


def run_sweep(cfg: DictConfig, trial_fn: Callable | None = None, overrides: list[str] | None = None,
              key_fn: Callable[[DictConfig], str] | None = None, n_boot: int = 2000,
              file=None) -> SweepResult:
    """Run the sweep ``cfg.sweep`` (see the module docstring). Returns a :class:`SweepResult`; failed trials
    do not raise (``result.n_failed``; ``python -m rmexp`` exits 1). Raises :class:`ConfigError` before any
    work for a bad axis value or a resource ask the cluster can never meet; an interrupt (SIGTERM, SIGINT)
    re-raises after every run of this invocation is ended KILLED."""
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
    axes = replicate_axes(cfg, _plain(cfg.sweep.axes) or {})
    say(f"[sweep {name}] {len(specs)} trials over axes {', '.join(axes)}")

    with T.interrupt_on_signals(), ExitStack() as stack:
        sched: RayScheduler | None = None
        if specs:  # 2. Ray first, so that its actors import torch & co. while the driver sets MLflow up
            sched = RayScheduler(cfg, len(specs), warm_module=getattr(trial_fn, "__module__", None),
                                 defer_check=True)
            stack.callback(sched.shutdown)  # whatever fails before the try below (shutdown is idempotent)
            # ray.init installs a native SIGTERM handler that aborts the driver: ours again, until the end
            stack.enter_context(T.interrupt_on_signals())
        uri = T.tracking_uri(cfg)                            # 3. MLflow: stale runs ended, finished trials found
        experiment = _experiment_name(cfg, base)
        rec = Recorder(uri, experiment)
        rec.reap_dead(say)
        done_runs = rec.finished_trials()
        to_run = [s for s in specs if s.key not in done_runs]
        trials = [TrialOutcome(spec=s) for s in specs]
        status = "FAILED"
        try:
            if sched is not None and not to_run:             # every trial cached: no Ray needed after all
                sched.cancel_all()
                sched.shutdown()
                sched = None
            elif sched is not None:                          # a resource ask no node meets is raised here
                sched.plan(len(to_run))
            parent_id = rec.start_parent(name, name, cfg, axes, len(specs), base)    # 4. the parent run
            say(f"[sweep {name}] MLflow experiment {experiment!r} (id {rec.experiment_id}), parent run {parent_id}, "
                f"at {uri}")
            result = SweepResult(name, rec.experiment_id, parent_id, uri, trials)
            for t in trials:                                 # 5. cached trials
                src = done_runs.get(t.spec.key)
                if src is None:
                    continue
                t.run_id = rec.cached_trial(t.spec.name, t.spec.key, t.spec.axes, parent_id, name, src)
                t.status = "CACHED"
                t.cached_from = src.data.tags.get(T.CACHED_FROM_TAG) or src.info.run_id
                t.metrics = dict(src.data.metrics)
                t.seconds = t.metrics.get(T.SECONDS_METRIC)
            t0 = time.time()
            if sched is not None:                            # 6. the trials
                # the analysis modules (pandas, scipy, matplotlib) import while the driver waits on the trials
                stack.enter_context(_warm_analysis_imports())
                _run_trials(sched, rec, trial_fn, trials, name, parent_id, say, t0)
                ran = any(t.status in ("FINISHED", "FAILED") for t in trials)
            else:
                say(status_line(name, trials, 0.0))
                ran = False
            rec.client.set_tag(parent_id, "rmexp.n_failed", str(result.n_failed))  # 7. correlations, summary
            rec.client.set_tag(parent_id, "rmexp.n_cached", str(result.n_cached))
            started = time.time()
            headline = _correlations(rec, result, experiment, n_boot)
            if ran and time.time() - started < 1.0:
                time.sleep(1.0 - (time.time() - started))  # let Ray forward the workers' last lines first
            say("")
            say(summary_table(trials))
            say(headline)
            verdict = f"{result.n_failed} of {len(trials)} trials FAILED" if result.n_failed else "all trials finished"
            say(f"\n[sweep {name}] {verdict} ({result.n_cached} cached) in {_fmt_elapsed(time.time() - t0)}; "
                f"parent run {parent_id}. Open the MLflow UI with:\n{T.ui_hint(uri, rec.experiment_id, parent_id)}")
            status = "FINISHED"
            return result
        except KeyboardInterrupt as e:
            status = "KILLED"
            running = sum(t.status == "RUNNING" for t in trials)
            why = signal.Signals(T.interrupt_signal(e)).name
            say(f"\n[sweep {name}] interrupted by {why}: {running} running trial(s) cancelled and ended KILLED; "
                f"finished trials are recorded and a rerun of the same command skips them")
            raise
        finally:
            if sched is not None:
                sched.cancel_all()
            rec.close_open(status)
            if sched is not None:
                sched.shutdown()


def attempt_dir(runs_root: Path, key: str, run_id: str) -> Path:
    """Where one attempt of a trial writes its files: private to the attempt (its MLflow run), so that two
    invocations running the same trial at once (the same sweep started twice in one directory) never clear or
    overwrite each other's files while they run or while their drivers log them."""
    return runs_root / f".{key}.{run_id}"


def publish_attempt(attempt: Path, final: Path) -> None:
    """Move a logged attempt's directory to ``final`` (``runs/<sweep>/<key>``), replacing an older one whole. If
    another invocation published the same trial in between, its complete copy stays and this one is dropped."""
    if not attempt.exists():
        return
    old = final.with_name(f".{final.name}.old-{attempt.name}")
    try:
        final.rename(old)
    except FileNotFoundError:
        pass
    try:
        attempt.rename(final)
    except OSError:  # the target exists again: another invocation's copy of the same trial
        shutil.rmtree(attempt, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_attempts(runs_root: Path, run_status: Callable[[str], str | None]) -> None:
    """Remove attempt directories left by a driver that died (`kill -9`, a crash) before publishing them: those
    whose run this store knows and no longer has RUNNING (``run_status(run_id)``). An attempt of a run the store
    does not know (None: another tracking store's sweep in the same directory) or cannot tell about is kept."""
    if not runs_root.is_dir():
        return
    for d in runs_root.iterdir():
        if not (d.is_dir() and d.name.startswith(".") and ".old-" not in d.name):
            continue
        try:
            stale = run_status(d.suffix[1:]) not in (None, "RUNNING")
        except Exception:  # noqa: BLE001 - the store did not answer: keep the directory, it may be live
            stale = False
        if stale:
            shutil.rmtree(d, ignore_errors=True)


def _run_trials(sched: RayScheduler, rec: Recorder, trial_fn: Callable, trials: list[TrialOutcome], name: str,
                parent_id: str, say, t0: float) -> None:
    runs_root = Path.cwd().resolve() / "runs" / _safe_dirname(name)
    remove_stale_attempts(runs_root, rec.run_status)
    queue = [t for t in trials if t.status == "PENDING"]

    def refill() -> None:
        while queue and sched.free():
            t = queue.pop(0)
            t.run_id = rec.start_trial(t.spec.name, t.spec.key, t.spec.axes, parent_id, name)
            sched.submit(t, trial_fn, t.spec.cfg, attempt_dir(runs_root, t.spec.key, t.run_id), t.spec.name)
            t.status = "RUNNING"

    try:
        refill()
        say(status_line(name, trials, 0.0))
        while sched.inflight:
            T.raise_if_interrupted()
            for t, payload in sched.wait(timeout=1.0):
                refill()  # keep the workers busy while the driver writes this trial's run to MLflow
                if not queue:
                    sched.release_idle()
                out_dir = attempt_dir(runs_root, t.spec.key, t.run_id)
                if payload.get("ok"):
                    unpack_files(payload, out_dir)
                t.status, t.error = rec.end_trial(t.run_id, payload, t.spec.cfg, t.spec.axes, out_dir)
                publish_attempt(out_dir, runs_root / t.spec.key)
                if payload.get("ok"):
                    t.metrics = dict(payload["result"]["metrics"])
                t.seconds = payload.get("end", 0) - payload.get("start", 0)
                if t.status == "FAILED":
                    say(f"[sweep {name}] trial {t.spec.name} FAILED: {t.error}")
                say(status_line(name, trials, time.time() - t0))
    finally:  # an interrupted attempt's partial files are of no use (its run ends KILLED)
        for t in trials:
            if t.status == "RUNNING":
                shutil.rmtree(attempt_dir(runs_root, t.spec.key, t.run_id), ignore_errors=True)
    for t in trials:
        if t.status == "RUNNING" and t.run_id in rec.open:  # not expected: a task that never came back
            rec.close(t.run_id, "FAILED")
            t.status = "FAILED"


@contextmanager
def _warm_analysis_imports():
    """Import the end-of-sweep analysis (pandas, scipy, matplotlib's Agg canvas) in a daemon thread while the
    driver only waits on Ray, so the correlations at the end do not start with seconds of imports. Python's
    import lock makes a later import in the main thread wait for this one rather than run twice."""
    def load() -> None:
        try:
            import rmexp.analyze  # noqa: F401
            from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
            from matplotlib.figure import Figure  # noqa: F401
        except Exception:  # noqa: BLE001 - the analysis imports again and reports its own error
            pass

    thread = threading.Thread(target=load, name="rmexp-warm-analysis", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join()  # never leave an import half done at interpreter exit


def _correlations(rec: Recorder, result: SweepResult, experiment: str, n_boot: int) -> str:
    """Benchmark-vs-downstream correlations over the parent's finished trials: logged as the parent's metrics,
    the full table and plots as its artifacts. Returns the lines to print (the headline ones, or why none)."""
    name, parent_id = result.name, result.parent_run_id
    n_ok = result.count("FINISHED") + result.n_cached
    if n_ok < MIN_TRIALS_FOR_CORRELATION:
        return (f"\n[sweep {name}] correlations skipped: {n_ok} finished trial(s), at least "
                f"{MIN_TRIALS_FOR_CORRELATION} needed")
    from rmexp.analyze import analyze_experiment

    try:
        with tempfile.TemporaryDirectory(prefix="rmexp-corr-") as tmp:
            result.correlations = analyze_experiment(experiment, result.tracking_uri, parent_run_id=parent_id,
                                                     n_boot=n_boot, out_dir=tmp, log_to_parent=False,
                                                     file=io.StringIO())
            rec.log_analysis(parent_id, result.correlations, Path(tmp))
        return (f"\nheadline correlations over {n_ok} trials (95% bootstrap CIs; every benchmark x downstream "
                f"pair is in correlations.txt on the parent run):\n{headline_correlations(result.correlations)}")
    except Exception as e:  # noqa: BLE001 - the trials are recorded; the analysis can be rerun
        rec.client.set_tag(parent_id, "rmexp.analysis_error", T.error_summary(e)[:T.MAX_TAG_VALUE])
        return (f"\n[sweep {name}] correlation analysis failed: {T.error_summary(e)}; rerun it with "
                f"python -m rmexp.analyze --experiment {shlex.quote(experiment)} --tracking-uri "
                f"{result.tracking_uri} --parent-run-id {parent_id}")
