"""Scale-out on real engines: a two-node Ray cluster on this machine (``ray start --head`` plus a second
``ray start --address``, one CPU each) and an ``mlflow server`` over HTTP on loopback (SQLite behind it, artifacts
proxied to a temporary directory); ``python -m rmexp +sweep=smoke ray.address=... tracking.uri=http://...`` must
finish every trial with its artifacts, on both nodes. Everything started here is stopped by PID (never
``ray stop``, which would stop every Ray on the machine)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.cdp import free_port, launch_mlflow_server, stop, wait_until_serving

REPO = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
SWEEP = ["+sweep=smoke", "sweep.axes.model=[toy_llama_xs]", "downstream.ppo.enabled=false", "data.size=200",
         "ray.cpus_per_trial=1"]  # 2 tiny real trials, one per node


def _ray_start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``ray start --block`` in its own session, so the node's processes can be found and killed by it."""
    return subprocess.Popen([str(RAY), "start", "--block", "--num-cpus=1", "--disable-usage-stats", *args], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (our temporary directory): Ray's for this cluster only."""
    out = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmd.read_bytes():
                out.append(int(cmd.parent.name))
        except OSError:
            pass
    return [p for p in out if p != os.getpid()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "(gone)"


def _stop_ray(procs: list[subprocess.Popen], tmp: str) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5  # a grace for a clean exit; Ray's workers can outlast it by far, hence the SIGKILLs
    while time.time() < deadline and (any(p.poll() is None for p in procs) or _pids_mentioning(tmp)):
        time.sleep(0.5)
    # SIGKILL what is left until nothing is: a process killed just now is still listed until the kernel has torn
    # it down, and a dying raylet can still have started a worker (one such survivor failed a CI run)
    deadline = time.time() + 10
    while time.time() < deadline and (left := _pids_mentioning(tmp) + [p.pid for p in procs if p.poll() is None]):
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _wait_nodes(env: dict, address: str, n: int, timeout: float = 180) -> None:
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
            f"print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.time() + timeout
    seen = ""
    while time.time() < deadline:
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        seen = p.stdout.strip().splitlines()[-1:] or p.stderr[-500:]
        if p.returncode == 0 and seen == [str(n)]:
            return
        time.sleep(2)
    raise AssertionError(f"the Ray cluster never had {n} live nodes: {seen}")


@pytest.mark.cluster
def test_smoke_sweep_on_two_ray_nodes_and_an_mlflow_server(tmp_path):
    tmp = tempfile.mkdtemp(prefix="rmx-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env |= {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO), "TMPDIR": tmp}
    port = free_port()
    address = f"127.0.0.1:{port}"
    ray_procs: list[subprocess.Popen] = []
    server = None
    try:
        # the server boots while the Ray nodes come up (each takes ~10-20 s on a busy 2-core machine)
        server, http_port = launch_mlflow_server(f"sqlite:///{tmp}/mlflow.db", Path(tmp),
                                                 ["--artifacts-destination", f"{tmp}/artifacts"])
        ray_procs.append(_ray_start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                     "--include-dashboard=false", f"--temp-dir={tmp}/ray"], env, tmp_path / "head.log"))
        _wait_nodes(env, address, 1)
        ray_procs.append(_ray_start([f"--address={address}", "--node-ip-address=127.0.0.1"], env,
                                    tmp_path / "worker.log"))
        _wait_nodes(env, address, 2)
        wait_until_serving(server, http_port)
        uri = f"http://127.0.0.1:{http_port}"
        work = tmp_path / "work"
        work.mkdir()
        p = subprocess.run([sys.executable, "-m", "rmexp", *SWEEP, f"ray.address={address}", f"tracking.uri={uri}",
                            f"cache_dir={tmp_path}/cache"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=900)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
        assert f"  open {uri}/#/experiments/" in p.stdout             # the server is the UI: no `mlflow ui` hint
        assert "mlflow ui --backend-store-uri http" not in p.stdout

        from mlflow import MlflowClient

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("smoke")
        runs = client.search_runs([exp.experiment_id])
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
        assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FINISHED"]
        assert len({r.data.tags["rmexp.ray_node"] for r in children}) == 2   # one trial on each node
        for r in children:
            files = {f.path for f in client.list_artifacts(r.info.run_id)}
            assert {"config.yaml", "rb2_scores.jsonl", "metrics.json"} <= files, files
            assert r.data.metrics["rb2/overall"] > 0
        assert any(Path(tmp, "artifacts").rglob("rb2_scores.jsonl"))      # stored by the server, not the client
    finally:
        if server is not None:
            stop(server)
        _stop_ray(ray_procs, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    left = {pid: _cmdline(pid) for pid in _pids_mentioning(tmp)}
    assert left == {}, f"processes of the test cluster survived SIGTERM and SIGKILL: {left}"
