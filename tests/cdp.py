"""Headless Chromium driven over the DevTools protocol (a websocket), for the browser tests.

Debian's ``chromium`` package (``.ci/run`` installs it); no browser download. One page per :class:`Browser`.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
SERVER_TIMEOUT = 300  # s; `mlflow server` takes 10 s on an idle 2-core machine, minutes on a crowded one


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    def __init__(self, width: int = 1600, height: int = 1000):
        import websocket  # websocket-client

        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="rmexp-chromium-")
        self.proc = subprocess.Popen(
            [chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-extensions", f"--remote-debugging-port={self.port}",
             "--remote-debugging-address=127.0.0.1", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        targets = None
        while time.time() < deadline:
            try:
                targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2).read())
                targets = [t for t in targets if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        if not targets:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port within 60 s")
        self.ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self._id = 0
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"javascript error: {r['exceptionDetails']}")
        return r["result"].get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *needles: str, timeout: float = 60) -> str:
        """The page's text once it contains every needle; raises AssertionError with what it shows otherwise."""
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise AssertionError(f"page never showed {missing}; it shows:\n{text[:3000]}")

    def click_text(self, text: str) -> bool:
        """Click the innermost element whose own text is ``text``; False when there is none."""
        return bool(self.js(
            "(() => { const want = %s; const all = [...document.querySelectorAll('body *')];"
            " const el = all.filter(e => e.innerText && e.innerText.trim() === want)"
            ".sort((a, b) => a.querySelectorAll('*').length - b.querySelectorAll('*').length)[0];"
            " if (!el) return false; el.click(); return true; })()" % json.dumps(text)))

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def launch_mlflow_server(backend_uri: str, cwd: Path, extra: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    """``mlflow server`` on a free loopback port, not waited for (`wait_until_serving`): a test can start other
    things while it boots (~20 s on a busy 2-core machine)."""
    import sys

    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow_bin), "server", "--backend-store-uri", backend_uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1", *(extra or [])], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    return proc, port


def wait_until_serving(proc: subprocess.Popen, port: int) -> None:
    deadline = time.time() + SERVER_TIMEOUT
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow server did not answer within {SERVER_TIMEOUT} s")


def start_mlflow_server(backend_uri: str, cwd: Path, extra: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    """``mlflow server`` on a free loopback port; returns (process, port) once it answers."""
    proc, port = launch_mlflow_server(backend_uri, cwd, extra)
    wait_until_serving(proc, port)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)
