"""The documented MLflow UI command serves the runs on 127.0.0.1 (loopback only)."""
from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rmexp.tracking import ui_command
from tests.cdp import SERVER_TIMEOUT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_command_binds_loopback():
    cmd = ui_command("sqlite:////tmp/x/mlflow.db")
    assert "--host 127.0.0.1" in cmd and "0.0.0.0" not in cmd


def test_mlflow_ui_serves_runs_on_loopback(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("ui_check", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "rb2/overall", 0.5)
    client.set_terminated(run.info.run_id)
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    # The documented command, on a free port (and one worker, to start fast).
    argv = shlex.split(ui_command(uri))
    argv[0] = str(mlflow_bin)
    argv[argv.index("--port") + 1] = str(port)
    proc = subprocess.Popen(argv + ["--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=tmp_path)
    try:
        body = None
        deadline = time.time() + SERVER_TIMEOUT
        while time.time() < deadline and body is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
                                             f"?experiment_name=ui_check")
                body = json.loads(urllib.request.urlopen(req, timeout=2).read())
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("mlflow ui exited early")
                time.sleep(0.5)
        assert body is not None, f"mlflow ui did not answer within {SERVER_TIMEOUT} s"
        assert body["experiment"]["name"] == "ui_check"
        # Bound to loopback only: the listening socket's address is 127.0.0.1.
        if shutil.which("ss"):
            out = subprocess.run(["ss", "-ltn"], capture_output=True, text=True)
            lines = [l for l in out.stdout.splitlines() if f":{port} " in l]
            assert lines and all("127.0.0.1:" in l for l in lines), lines
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
