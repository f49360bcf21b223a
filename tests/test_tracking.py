"""rmexp.tracking: the MLflow layout of one trial, run_single's success and failure paths, and the CLI's
config-error path. A fake trial function stands in for the real one (tests/fake_trial.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from rmexp import tracking as T
from rmexp.sweep import recorder as R
from rmexp.analyze import TRIAL_KEY_TAG
from rmexp.config import CONF_DIR
from tests.fake_trial import CALLS_FILE, FakeStageError, fake_metrics, fake_trial

REPO = Path(__file__).resolve().parent.parent


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def store(tmp_path, monkeypatch):
    """cwd = tmp_path, tracking URI = sqlite db in tmp_path; checks no global MLflow state is left behind."""
    monkeypatch.chdir(tmp_path)
    before = mlflow.get_tracking_uri()
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    yield uri
    assert mlflow.get_tracking_uri() == before
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    assert mlflow.active_run() is None


def _artifacts(client, run_id, path=None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


# ---------------------------------------------------------------------------------------------------- names, URIs
def test_default_uri_is_absolute_sqlite_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert T.default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    cfg = _cfg()
    assert T.tracking_uri(cfg) == T.default_tracking_uri()
    assert T.tracking_uri(_cfg("tracking.uri=sqlite:////x/y.db")) == "sqlite:////x/y.db"
    assert T.ui_command("sqlite:////x/y.db") == "mlflow ui --backend-store-uri sqlite:////x/y.db --host 127.0.0.1 --port 5000"


def test_safe_key_and_axis_params():
    assert T.safe_key("rb2/Precise IF") == "rb2/Precise IF"
    assert T.safe_key("bon/gain@16") == "bon/gain_16"
    assert T.safe_key("a=b") == "a_b"
    assert T.flatten_axes({"model": "toy_llama_s", "train.lr": 0.0003, "ppo.enabled": True,
                           "data.domain_weights": {"Math": 3, "Precise IF": 1}}) == {
        "model": "toy_llama_s", "train.lr": "0.0003", "ppo.enabled": "true",
        "data.domain_weights.Math": "3", "data.domain_weights.Precise IF": "1"}
    assert T.axes_label({"model": "m", "train.lr": 0.001, "w": {"Math": 3}}) == "model=m train.lr=0.001 w={Math:3}"
    assert T.error_summary("Traceback (most recent call last):\n  File x\nValueError: bad\n") == "ValueError: bad"
    assert T.error_summary(KeyError("k")) == "KeyError: 'k'"


def test_experiment_artifacts_beside_db(store, tmp_path):
    client = MlflowClient(store)
    exp_id = R.get_or_create_experiment(client, "my sweep", store)
    assert R.get_or_create_experiment(client, "my sweep", store) == exp_id
    loc = client.get_experiment(exp_id).artifact_location
    assert loc == (tmp_path.resolve() / "mlartifacts" / "my_sweep").as_uri()


def test_log_trial_result_layout(store, tmp_path):
    client = MlflowClient(store)
    exp_id = R.get_or_create_experiment(client, "layout", store)
    run_id = client.create_run(exp_id).info.run_id
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "scores.jsonl").write_text("{}\n")
    (out / "plots" / "p.png").write_bytes(b"png")
    history = {"train/loss": [(i, 1.0 - 0.1 * i) for i in range(1500)]}  # > 1000 points: chunked log_batch
    result = {"metrics": {"train/loss": 0.123, "rb2/overall": 0.7, "bon/gain@16": 0.2},
              "params": {"model": "from-trial", "lr": 0.1}, "history": history,
              "artifacts": [out / "scores.jsonl", out / "plots" / "p.png", out / "missing.txt"]}
    cfg = _cfg("train.epochs=2")
    R.log_trial_result(client, run_id, result, cfg, axes={"model": "toy_llama_s", "data.domain_weights": {"Math": 3}},
                       out_dir=out)
    run = client.get_run(run_id)
    assert run.data.params["model"] == "toy_llama_s"           # the axis value wins
    assert run.data.params["lr"] == "0.1"
    assert run.data.params["data.domain_weights.Math"] == "3"
    assert run.data.metrics["train/loss"] == pytest.approx(0.123)  # the final value is the latest
    assert run.data.metrics["bon/gain_16"] == pytest.approx(0.2)
    series = client.get_metric_history(run_id, "train/loss")
    assert len(series) == 1501 and max(m.step for m in series) == 1499
    assert _artifacts(client, run_id) == {"config.yaml", "scores.jsonl", "plots/p.png"}
    text = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path))).read_text()
    assert "epochs: 2" in text


# ---------------------------------------------------------------------------------------------------- run_single
def test_run_single_success(store, capsys):
    cfg = _cfg("preset=tiny", "train.epochs=2", f"tracking.uri={store}", "tracking.experiment=single")
    result = T.run_single(cfg, trial_fn=fake_trial)
    assert result.metrics == fake_metrics(cfg)
    assert Path(CALLS_FILE).read_text().count("\n") == 1
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("single")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    key = T.trial_key(cfg)
    assert run.data.tags[TRIAL_KEY_TAG] == key
    assert run.info.run_name == f"{cfg.model.name}-{key[:8]}"
    assert run.data.metrics["rb2/overall"] == pytest.approx(fake_metrics(cfg)["rb2/overall"])
    assert run.data.params["model"] == cfg.model.name
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [0, 1, 2, 3, 3]
    assert _artifacts(client, run.info.run_id) == {"config.yaml", "rb2_scores.jsonl", "plots/curve.txt"}
    printed = capsys.readouterr().out
    assert run.info.run_id in printed
    assert f"mlflow ui --backend-store-uri {store} --host 127.0.0.1 --port 5000" in printed


def test_run_single_failure_ends_run_failed(store, tmp_path):
    cfg = _cfg("preset=tiny", "fail_stage=rm", f"tracking.uri={store}", "tracking.experiment=single")
    with pytest.raises(FakeStageError, match="fake failure in stage rm"):
        T.run_single(cfg, trial_fn=fake_trial)
    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("single").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags[T.ERROR_TAG] == "FakeStageError: fake failure in stage rm"
    assert {"error.txt", "config.yaml"} <= _artifacts(client, run.info.run_id)
    tb = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "Traceback" in tb and "fake_trial" in tb


class _SignalsInItsFinalizer:
    """An object whose `__del__` sends this process a signal: the handler then runs inside the finalizer, where
    Python prints "Exception ignored" for what it raises and goes on (a CI run of the SIGINT lifecycle test met
    this in `regex`'s `Group.__del__`, and the run ended FINISHED with exit code 0)."""

    def __init__(self, sig):
        self.sig = sig

    def __del__(self):
        os.kill(os.getpid(), self.sig)


def test_an_interrupt_swallowed_by_a_finalizer_still_ends_the_run_killed(store, monkeypatch):
    assert threading.current_thread() is threading.main_thread()  # where the handlers are installed
    seen, swallowed = [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))  # Python's "Exception ignored"

    def trial(cfg, out_dir, progress=None):
        _SignalsInItsFinalizer(signal.SIGINT)  # collected at once: the handler's raise is swallowed
        seen.append("went on")  # as it does in that case
        progress("next stage")
        seen.append("past the stage boundary")
        return fake_trial(cfg, out_dir, progress)

    cfg = _cfg("preset=tiny", f"tracking.uri={store}", "tracking.experiment=single")
    with pytest.raises(KeyboardInterrupt) as e:
        T.run_single(cfg, trial_fn=trial)
    assert T.interrupt_signal(e.value) == signal.SIGINT
    assert seen == ["went on"] and swallowed == [T.Interrupted]  # the handler's raise really was swallowed
    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("single").experiment_id])
    assert run.info.status == "KILLED"


def test_a_swallowed_interrupt_is_raised_on_leaving_the_context_at_the_latest(monkeypatch):
    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    with pytest.raises(KeyboardInterrupt) as e:
        with T.interrupt_on_signals():
            _SignalsInItsFinalizer(signal.SIGTERM)
            swallowed.append("went on")
    assert T.interrupt_signal(e.value) == signal.SIGTERM and swallowed == [T.Interrupted, "went on"]
    T.raise_if_interrupted()  # consumed: nothing pending afterwards
    with pytest.raises(ValueError):  # a swallowed interrupt overtaken by an error does not outlive its context
        with T.interrupt_on_signals():
            _SignalsInItsFinalizer(signal.SIGINT)
            raise ValueError("the trial failed first")
    T.raise_if_interrupted()
    with pytest.raises(KeyboardInterrupt):  # an interrupt that unwinds as usual is raised once, not again later
        with T.interrupt_on_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    T.raise_if_interrupted()


# ---------------------------------------------------------------------------------------------------- CLI
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rmexp", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_bad_value_is_one_line_exit_2(tmp_path):
    p = _cli("data.size=-5", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == ["error: data.size=-5 is not allowed; it must be > 0"], p.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_bad_axis_value_fails_before_work(tmp_path):
    p = _cli("+sweep=smoke", "sweep.axes.model=[toy_llama_xs,no_such_model]", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "axis model" in err[0] and "'no_such_model'" in err[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_cli_cfg_job_prints_the_config(tmp_path):
    p = _cli("--cfg", "job", "+sweep=smoke", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "sweep:\n  name: smoke" in p.stdout and "model:" in p.stdout
    assert not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------------------------------------------- lifecycle, UI
def test_ui_hint_for_local_store_and_for_server():
    local = T.ui_hint("sqlite:////x/mlflow.db", "3", "abc")
    assert local == ("  mlflow ui --backend-store-uri sqlite:////x/mlflow.db --host 127.0.0.1 --port 5000\n"
                     "  then open http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning")
    server = T.ui_hint("http://10.0.0.5:5000/", "3")
    assert server == "  open http://10.0.0.5:5000/#/experiments/3?workflowType=machine_learning"  # the server is the UI


def test_reap_dead_ends_only_runs_of_dead_drivers(store):
    rec = R.Recorder(store, "reap")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = rec.client.create_run(rec.experiment_id, tags={**R.driver_tags(), R.DRIVER_PID_TAG: str(gone.pid)})
    alive = rec.client.create_run(rec.experiment_id, tags=R.driver_tags())           # this process
    elsewhere = rec.client.create_run(rec.experiment_id, tags={**R.driver_tags(), R.DRIVER_HOST_TAG: "other-host",
                                                               R.DRIVER_PID_TAG: str(gone.pid)})
    reused = rec.client.create_run(rec.experiment_id, tags={**R.driver_tags(), R.DRIVER_START_TAG: "1"})  # pid reused
    lines = []
    assert rec.reap_dead(lines.append) == 2
    status = [rec.client.get_run(r.info.run_id).info.status for r in (dead, alive, elsewhere, reused)]
    assert status == ["KILLED", "RUNNING", "RUNNING", "KILLED"]
    assert any(f"driver pid {gone.pid}, which is gone: marked KILLED" in ln for ln in lines), lines


def test_describe_dataset_digest_follows_content():
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "meta": {"d": 1}}]
    a = T.describe_dataset("preferences", rows, {"world.seed": 0}, "train")
    assert a == T.describe_dataset("preferences", [dict(r) for r in rows], {"world.seed": 0}, "train")
    b = T.describe_dataset("preferences", [{**rows[0], "chosen": "c"}], {"world.seed": 0}, "train")
    assert a["digest"] != b["digest"] and a["name"] == "preferences" and a["context"] == "train"
    import mlflow.data
    import pandas as pd
    from mlflow.data.code_dataset_source import CodeDatasetSource

    # MLflow's own description of the same rows (nested values as JSON text): same schema, profile and source
    frame = pd.DataFrame([{**r, "meta": json.dumps(r["meta"])} for r in rows])
    ref = mlflow.data.from_pandas(frame, source=CodeDatasetSource(tags={"world.seed": "0"}),
                                  name="preferences")._to_mlflow_entity()
    assert (a["schema"], a["profile"], a["source"], a["source_type"]) == (ref.schema, ref.profile, ref.source,
                                                                           ref.source_type)
    assert len(a["digest"]) == len(ref.digest) == 8


def test_a_fresh_sqlite_store_is_created_under_a_lock(tmp_path):
    """client_for creates and migrates a new sqlite store while holding `<db>.lock`: with the lock held elsewhere it
    waits and creates nothing; once the lock is free it creates the store."""
    from filelock import FileLock

    db = tmp_path / "sub" / "mlflow.db"
    uri = f"sqlite:///{db}"
    done = threading.Event()
    with FileLock(f"{db}.lock"):
        t = threading.Thread(target=lambda: (T.client_for(uri), done.set()), daemon=True)
        t.start()
        assert not done.wait(5.0) and not db.exists()  # unlocked, a store is made in ~1-2 s
    assert done.wait(60) and db.exists()
    assert [e.name for e in T.client_for(uri).search_experiments()] == ["Default"]


_CREATE_STORE = """
import sys
from rmexp import tracking as T
c = T.client_for(sys.argv[1])
c.create_experiment(sys.argv[2])
"""


def test_runs_started_together_on_a_fresh_store_all_get_it(tmp_path):
    """Three processes opening one new sqlite store at the same moment (three runs started together after a fresh
    clone): each gets the store and records its experiment (without the lock MLflow's migrations can collide)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE_STORE, uri, f"exp{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert sorted(e.name for e in MlflowClient(uri).search_experiments()) == ["Default", "exp0", "exp1", "exp2"]
