"""Every run ends: real signals sent to `python -m rmexp` in a subprocess (a single tiny trial and a tiny sweep of
two real trials on a local Ray), then the MLflow store read back.

- SIGTERM / SIGINT while a trial runs: exit 143 / 130, the run (a sweep's running children and its parent)
  ended KILLED, nothing RUNNING, no temporary directory left, no process of the driver's session left.
- SIGKILL of a sweep driver while a trial runs leaves its runs RUNNING; the rerun of the same command marks the
  dead parent and its running child KILLED before it starts, and runs every trial to FINISHED exactly once.
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRIAL = ["preset=tiny", "downstream.bon.enabled=false", "data.size=200", "train.epochs=1"]
SWEEP = ["+sweep=smoke", "sweep.axes.model=[toy_llama_xs]", "downstream.bon.enabled=false",
         "downstream.ppo.enabled=false", "data.size=200", "ray.num_cpus=1"]   # 2 trials: epochs 1 and 2
START_TIMEOUT = 300  # s until a trial's run is RUNNING (imports and Ray start on a busy 2-core machine)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lifecycle_cache")


@pytest.fixture
def tmp_path(tmp_path):
    """tmp_path with a short TMPDIR beside it: Ray's socket paths under TMPDIR must stay under 108 bytes."""
    short = Path(tempfile.mkdtemp(prefix="rmx-", dir="/tmp"))
    (tmp_path / "tmp").symlink_to(short)
    yield tmp_path
    shutil.rmtree(short, ignore_errors=True)


def _env(tmp: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str((tmp / "tmp").resolve()),
            "RAY_AUTH_MODE": "disabled"}


def _start(args: list[str], tmp: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rmexp", *args, f"cache_dir={cache}"], cwd=tmp, env=_env(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _runs(tmp: Path) -> list[dict]:
    """Every run in the store: name, status, whether it is a child, its trial key and cached-from tag."""
    db = tmp / "mlflow.db"
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("select run_uuid, name, status from runs").fetchall()
            tags = con.execute("select run_uuid, key, value from tags").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # the tables are being created
        return []
    by_run: dict[str, dict] = {}
    for run, key, value in tags:
        by_run.setdefault(run, {})[key] = value
    return [{"id": r, "name": n, "status": s, "child": "mlflow.parentRunId" in by_run.get(r, {}),
             "key": by_run.get(r, {}).get("rmexp.trial_key"), "cached": "rmexp.cached_from" in by_run.get(r, {})}
            for r, n, s in rows]


def _wait_running(proc: subprocess.Popen, tmp: Path, child: bool) -> None:
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        if any(r["status"] == "RUNNING" and r["child"] == child and r["key"] for r in _runs(tmp)):
            return
        if proc.poll() is not None:
            pytest.fail(f"rmexp exited ({proc.returncode}) before a trial ran:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    _kill_session(proc)
    pytest.fail(f"no trial run was RUNNING within {START_TIMEOUT} s")


def _session(pid: int) -> list[int]:
    """Processes still in the session that ``pid`` leads (the driver and whatever it started)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == pid and fields[0] != "Z":  # field 6 of /proc/<pid>/stat: the session id
            out.append(int(stat.parent.name))
    return out


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in _session(proc.pid):  # Ray's helpers may have left the group but not the session
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _session_drains(proc: subprocess.Popen, seconds: float = 30) -> list[int]:
    deadline = time.time() + seconds
    while (left := _session(proc.pid)) and time.time() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_single_trial_ends_its_run_killed(sig, code, tmp_path, cache):
    proc = _start(TRIAL, tmp_path, cache)
    try:
        _wait_running(proc, tmp_path, child=False)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    assert proc.returncode == code, out[-3000:]
    [run] = _runs(tmp_path)
    assert run["status"] == "KILLED", out[-3000:]
    assert f"run {run['id']} KILLED" in out
    assert list((tmp_path / "tmp").glob("rmexp-*")) == []   # the trial's temporary directory is gone


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_sweep_ends_children_and_parent_killed(sig, code, tmp_path, cache):
    proc = _start(SWEEP, tmp_path, cache)
    try:
        _wait_running(proc, tmp_path, child=True)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
        left = _session_drains(proc)
    finally:
        if proc.poll() is None or _session(proc.pid):
            _kill_session(proc)
    assert proc.returncode == code, out[-3000:]
    runs = _runs(tmp_path)
    assert [r["status"] for r in runs if not r["child"]] == ["KILLED"]
    children = [r["status"] for r in runs if r["child"]]
    assert "KILLED" in children and "RUNNING" not in children, runs   # the running trial ended with the sweep
    assert f"interrupted by {sig.name}" in out and "a rerun of the same command skips them" in out
    assert left == [], "processes of the driver (Ray's) outlived it"
    assert list((tmp_path / "tmp").glob("rmexp-*")) == []


def _unpublished_attempts(runs: Path) -> list[Path]:
    """A sweep's attempt directories not (yet) moved to their trial's name (``runs/<sweep>/.<key>.<run id>``)."""
    return [p for p in runs.glob("*") if p.name.startswith(".")]


def test_sigkill_of_a_sweep_driver_then_rerun(tmp_path, cache):
    proc = _start(SWEEP, tmp_path, cache)
    attempts = tmp_path / "runs" / "smoke"
    try:
        _wait_running(proc, tmp_path, child=True)
        deadline = time.time() + START_TIMEOUT  # and until a trial has begun writing its attempt directory
        while time.time() < deadline and not _unpublished_attempts(attempts):
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as the OOM killer or `kill -9 <pid>` would
        proc.wait(timeout=30)
    finally:
        _kill_session(proc)                # Ray's helpers of the dead driver
    assert _unpublished_attempts(attempts)  # an attempt the dead driver never published
    dead = _runs(tmp_path)
    [dead_parent] = [r for r in dead if not r["child"]]
    assert dead_parent["status"] == "RUNNING"  # what SIGKILL leaves behind
    env = _env(tmp_path)
    p = subprocess.run([sys.executable, "-m", "rmexp", *SWEEP, f"cache_dir={cache}"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert f"run {dead_parent['id']} (smoke " in p.stdout and "which is gone: marked KILLED" in p.stdout
    runs = _runs(tmp_path)
    assert not [r for r in runs if r["status"] == "RUNNING"], runs
    assert {r["id"]: r["status"] for r in runs}[dead_parent["id"]] == "KILLED"
    assert [r["status"] for r in runs if r["id"] in {d["id"] for d in dead if d["child"] and d["status"] == "RUNNING"}] \
        == ["KILLED"] * sum(d["child"] and d["status"] == "RUNNING" for d in dead)
    finished = [r for r in runs if r["child"] and r["status"] == "FINISHED" and not r["cached"]]
    keys = [r["key"] for r in finished]
    assert len(keys) == 2 and len(set(keys)) == 2       # every trial FINISHED exactly once
    [new_parent] = [r for r in runs if not r["child"] and r["id"] != dead_parent["id"]]
    assert new_parent["status"] == "FINISHED"
    # the killed driver's unpublished attempt directories are gone; each trial's published one is there
    assert sorted(p.name for p in attempts.iterdir()) == sorted(keys)
