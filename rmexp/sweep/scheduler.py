"""The scheduler: trials as method calls on long-lived Ray actors, one per trial slot.

Joins ``ray.address`` / ``$RAY_ADDRESS`` or starts a local Ray (``ray.num_cpus``); an already initialised Ray
is reused (and not shut down; the actors are killed). Every trial slot is an actor asking
``ray.cpus_per_trial`` CPUs and ``ray.gpus_per_trial`` GPUs for its lifetime; an ask that no node can ever
satisfy fails before any trial starts (Ray would wait forever). At most ``ray.max_parallel`` trials are in
flight (default: as many as the cluster fits). Why actors and not tasks: an actor imports torch, transformers and
the trial's module once, when it starts (while the driver sets MLflow up), and every trial it runs finds them
imported; a task goes to whichever idle worker Ray picks, and Ray starts several, so a warm-up task warmed a
worker that the first trial did not get (measured: the first trial waited on its own imports). Application
errors are caught in the actor and come back as a result (Ray does not retry them); a dead actor (a system
failure) is restarted and its trial retried by Ray ``ray.max_retries`` times, then replaced. An actor left without
a trial once none is queued is killed at once, so its CPUs and GPUs go back to the cluster. Trials run in the
driver's working directory when it exists on their node, so the relative ``cache_dir`` is shared; on another node
a trial's files are shipped back with its result.

A trial's payload: ``{"ok": bool, "result": result_to_dict(...) | None, "error": traceback, "summary": line,
"start": t, "end": t, "node": id, "files": {relpath: bytes}}``.
"""
from __future__ import annotations

import gc
import importlib
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

from omegaconf import DictConfig

from rmexp import tracking as T
from rmexp.config import ConfigError

MAX_SHIPPED_BYTES = 512 * 2**20  # artifacts sent back from another node, in all


class ResourceError(ConfigError):
    """A trial asks for more than any node of the Ray cluster has."""


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


class TrialWorker:
    """One trial slot (a Ray actor): the imports every trial pays for (torch, and the module of the trial
    function: for `rmexp.trial`, transformers and the rest) run once, at start, and every trial of the slot runs
    in this process. An import that fails here is left for the trial to report."""

    def __init__(self, module: str | None):
        try:
            import torch  # noqa: F401  (its thread count is set per trial, by _trial_task)

            if module and module != "__main__":
                importlib.import_module(module)
        except Exception:  # noqa: BLE001
            pass

    def run(self, *args) -> dict:
        try:
            return _trial_task(*args)
        finally:  # the next trial of this process starts from what a fresh worker would have on the GPU
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    def __repr__(self) -> str:  # Ray's prefix of the actor's output lines: "(trial pid=...)"
        return "trial"


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


def unpack_files(payload: dict, out_dir: Path) -> None:
    """Write the files a worker on another node shipped back under ``out_dir`` (and point the result at them)."""
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


class RayScheduler:
    """Runs trials on ``limit`` actors (see :class:`TrialWorker`) and hands back their payloads as they arrive.

    ``warm_module`` (the trial function's module) is what each actor imports when it starts. ``defer_check``: a
    resource ask no node can meet is kept and raised by :meth:`plan` (the driver starts Ray before it knows
    whether any trial must run; with every trial cached it never asks)."""

    def __init__(self, cfg: DictConfig, n_trials: int, warm_module: str | None = None, defer_check: bool = False):
        import ray

        self.cpus, self.gpus = float(cfg.ray.cpus_per_trial), float(cfg.ray.gpus_per_trial)
        self.max_parallel = cfg.ray.max_parallel
        self.max_retries = int(cfg.ray.max_retries)
        self.started = _start_ray(cfg)
        self.idle: list[Any] = []                                # actors without a trial
        self.inflight: dict[Any, tuple[Any, float, Any]] = {}    # ref -> (tag, submitted, actor)
        self.resource_error: ResourceError | None = None
        try:
            self.fit = check_resources(self.cpus, self.gpus)
        except ResourceError as e:
            if not defer_check:
                self.shutdown()
                raise
            self.resource_error, self.fit = e, 0
        except BaseException:
            self.shutdown()
            raise
        self.driver_node = ray.get_runtime_context().get_node_id()
        self.worker = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=self.max_retries,
                                 max_task_retries=self.max_retries)(TrialWorker)
        self.warm_module = warm_module
        self.threads = max(1, int(round(self.cpus)))
        self.cwd = str(Path.cwd().resolve())
        self.limit = 1
        if self.resource_error is None:
            self.plan(n_trials)

    def plan(self, n_trials: int) -> None:
        """At most ``ray.max_parallel`` (default: what the cluster fits) of ``n_trials`` trials in flight, one
        actor each (started here, so their imports begin at once; spare ones are killed); raises a deferred
        :class:`ResourceError`."""
        if self.resource_error is not None:
            raise self.resource_error
        self.limit = max(1, min(int(self.max_parallel or self.fit), n_trials))
        while len(self.idle) + len(self.inflight) < self.limit:
            self.idle.append(self._new_actor())
        while len(self.idle) + len(self.inflight) > self.limit and self.idle:
            self._kill(self.idle.pop())

    def _new_actor(self):
        return self.worker.remote(self.warm_module)

    @staticmethod
    def _kill(actor) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass

    def release_idle(self) -> None:
        """Kill the actors without a trial (no trial is left to give them): on a shared cluster their CPUs and
        GPUs go back to other jobs while the last trials run."""
        while self.idle:
            self._kill(self.idle.pop())

    def free(self) -> bool:
        return len(self.inflight) < self.limit

    def submit(self, tag: Any, trial_fn: Callable, cfg: DictConfig, out_dir: Path, label: str) -> None:
        actor = self.idle.pop(0) if self.idle else self._new_actor()  # a dead one is replaced when work needs it
        ref = actor.run.remote(trial_fn, cfg, str(out_dir), self.cwd, self.threads, label, self.driver_node)
        self.inflight[ref] = (tag, time.time(), actor)

    def wait(self, timeout: float = 1.0) -> list[tuple[Any, dict]]:
        """(tag, payload) of the trials that ended within ``timeout``; a trial whose actor Ray gave up on (a
        system failure after its retries) comes back as a failed payload, and the actor is killed (the next
        trial of its slot starts a new one)."""
        import ray

        if not self.inflight:
            return []
        ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            tag, submitted, actor = self.inflight.pop(ref)
            try:
                payload = ray.get(ref)
                self.idle.append(actor)
            except Exception as e:  # noqa: BLE001 - system failure after Ray's retries
                payload = {"ok": False, "error": traceback.format_exc(),
                           "summary": f"Ray: {T.error_summary(e)} (after ray.max_retries={self.max_retries} retries)",
                           "start": submitted, "end": time.time()}
                self._kill(actor)
            out.append((tag, payload))
        return out

    def cancel_all(self) -> None:
        """Kill every actor: running trials stop at once (their runs are the driver's to end)."""
        for actor in [*(a for _, _, a in self.inflight.values()), *self.idle]:
            self._kill(actor)
        self.inflight.clear()
        self.idle.clear()

    def shutdown(self) -> None:
        self.cancel_all()  # a cluster that outlives the sweep gets its CPUs back
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
