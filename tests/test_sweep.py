"""rmexp.sweep: grid expansion, override formatting, every sweep config composing, bad axis values and resource
asks failing before any work, failure isolation and resume, against a fake trial function on a real local Ray
(started once for the module) and a real SQLite MLflow store in tmp_path."""
from __future__ import annotations

import math
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow import MlflowClient
from omegaconf import OmegaConf, open_dict

from rmexp import sweep as S
from rmexp import tracking as T
from rmexp.analyze import PARENT_TAG, TRIAL_KEY_TAG
from rmexp.config import CONF_DIR, ConfigError
from tests.fake_trial import CALLS_FILE, dying_trial, fake_trial, slow_first_trial

SWEEP_FILES = sorted((CONF_DIR / "sweep").glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _calls(path: Path = Path(CALLS_FILE)) -> int:
    return path.read_text().count("\n") if path.exists() else 0


@pytest.fixture(scope="module")
def ray_local():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(overrides, tmp_path, axes=None, trial_fn=fake_trial):
    ovs = [*overrides, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    cfg = _compose(ovs)
    if axes is not None:  # replaces the sweep's axes (an override of sweep.axes would merge into them)
        with open_dict(cfg):
            cfg.sweep.axes = axes
    return S.run_sweep(cfg, trial_fn=trial_fn, overrides=ovs, n_boot=200)


def _pids() -> list[int]:
    return [int(line.split()[-1]) for line in Path(CALLS_FILE).read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------- grid
def test_expand_grid_order_and_count():
    grid = S.expand_grid({"model": ["a", "b"], "train.epochs": [1, 2, 3]})
    assert len(grid) == 6
    assert grid == [{"model": m, "train.epochs": e} for m in ["a", "b"] for e in [1, 2, 3]]  # first axis slowest
    w = [{"Math": 3, "Precise IF": 1}, {"Math": 1}]
    grid = S.expand_grid(OmegaConf.create({"data.domain_weights": w, "data.label_noise": [0.0, 0.2]}))
    assert [g["data.domain_weights"] for g in grid] == [w[0], w[0], w[1], w[1]]
    assert isinstance(grid[0]["data.domain_weights"], dict)
    for bad in ({"x": []}, {"x": 3}):
        with pytest.raises(ConfigError, match="axis x"):
            S.expand_grid(bad)


@pytest.mark.parametrize("value", [
    None, True, 3, -2, 0.0003, 1e-05, 1.0, "toy_llama_s", "a b", "it's", "1.5", "true", "x=y,z", "/data/p.jsonl",
    [1, "a b"], {"Factuality": 3, "Precise IF": 1.5}, {"we:ird,key=": 1},
])
def test_format_value_round_trips_through_hydra(value):
    ov = OverridesParser.create().parse_override(S.format_override("k", value))
    assert ov.key_or_group == "k"
    assert ov.value() == value


# ---------------------------------------------------------------------------------------------------- configs
def test_there_are_sweep_configs():
    assert {p.stem for p in SWEEP_FILES} >= {"smoke", "base_models", "epochs", "rm_size", "data_mix"}


# Study commands with overrides beyond `+sweep=<name>` (a plain one is the sweep config, composed in the next test).
_STUDY_OVERRIDES = {p.stem: yaml.safe_load(p.read_text())["command"].split()[3:]
                    for p in sorted((CONF_DIR.parent / "sweeps").glob("*.yaml"))}
STUDY_COMMANDS = {name: ovs for name, ovs in _STUDY_OVERRIDES.items() if len(ovs) > 1}


@pytest.mark.parametrize("overrides", STUDY_COMMANDS.values(), ids=STUDY_COMMANDS.keys())
def test_every_study_command_composes_its_trials(overrides):
    """The command a study file names (what `rmexp.report --run` runs and docs/results.md holds) composes into valid
    trials with its own overrides: a misspelt base in an axis override fails here, not hours into a report run."""
    cfg = _compose(overrides)
    axes = OmegaConf.to_container(cfg.sweep.axes)
    specs = S.compose_trials(cfg, overrides)
    assert len(specs) == math.prod(len(v) for v in axes.values()) * cfg.sweep.replicates
    assert len({s.key for s in specs}) == len(specs)
    for spec in specs:
        if "model" in spec.axes:
            assert spec.cfg.model.name == spec.axes["model"]


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_sweep_config_composes_and_validates(path):
    lines = path.read_text().splitlines()
    assert lines[0].strip() == "# @package _global_"
    assert lines[1].startswith(f"# python -m rmexp +sweep={path.stem}")
    ovs = [f"+sweep={path.stem}"]
    cfg = _compose(ovs)
    assert cfg.sweep.name == path.stem
    axes = OmegaConf.to_container(cfg.sweep.axes)
    missing_groups = [k for k in axes if "." not in k and k != "model" and not (CONF_DIR / k).is_dir()]
    if missing_groups:  # rm_kinds sweeps the `rm` group, which arrives with the RM-kinds contract
        pytest.skip(f"config group(s) {missing_groups} not in conf/ yet")
    if cfg.model.source == "hf" and not torch.cuda.is_available():
        # The GPU recipe (gpu_real) needs CUDA and hub models: on this machine it is refused before any work, in
        # one line (half precision without CUDA, or a hub model that is neither cached nor reachable).
        with pytest.raises(ConfigError, match="no CUDA device|hub is offline|hub is not reachable"):
            S.compose_trials(cfg, ovs)
        assert len(S.expand_grid(cfg.sweep.axes)) == math.prod(len(v) for v in axes.values())
        return
    specs = S.compose_trials(cfg, ovs)
    n = 1
    for values in axes.values():
        n *= len(values)
    assert len(specs) == n and len({s.key for s in specs}) == n
    for spec in specs:
        for key, value in spec.axes.items():
            if key in ("model",):
                assert spec.cfg.model.name == value
            elif key == "rm":
                assert spec.cfg.rm.kind == value
            elif key == "task":
                assert spec.cfg.task.name == value
            elif isinstance(value, dict):
                assert {k: spec.cfg.data.domain_weights[k] for k in value} == value
            else:
                assert OmegaConf.select(spec.cfg, key) == value
        assert spec.name == ",".join(f"{k}={T.axes_label({'_': v})[2:]}" for k, v in spec.axes.items())
    # the sweep itself (and tracking/ray) is not part of a trial's identity
    cfg0 = specs[0].cfg.copy()
    with open_dict(cfg0):
        cfg0.sweep.name = "other"
        cfg0.tracking.experiment = "other"
        cfg0.ray.max_parallel = 7
    assert T.trial_key(cfg0) == specs[0].key


def test_smoke_is_tiny_and_cli_overrides_apply():
    ovs = ["+sweep=smoke", "data.size=300", "model=toy_llama_l"]  # model is an axis: the axis wins
    specs = S.compose_trials(_compose(ovs), ovs)
    assert [s.label for s in specs] == ["model=toy_llama_xs train.epochs=1", "model=toy_llama_xs train.epochs=2",
                                        "model=toy_gpt2_xs train.epochs=1", "model=toy_gpt2_xs train.epochs=2"]
    assert [s.name for s in specs][-1] == "model=toy_gpt2_xs,train.epochs=2"  # the MLflow run name
    tiny = yaml.safe_load((CONF_DIR / "preset" / "tiny.yaml").read_text())
    for s in specs:
        assert s.cfg.data.size == 300
        assert s.cfg.benchmark.rows_per_subset == tiny["benchmark"]["rows_per_subset"]


def test_replicates_repeat_every_point_with_consecutive_seeds():
    ovs = ["+sweep=smoke", "sweep.replicates=3", "seed=5"]
    specs = S.compose_trials(_compose(ovs), ovs)
    assert len(specs) == 12 and len({s.key for s in specs}) == 12      # the seed is part of the trial key
    assert [s.cfg.seed for s in specs[:4]] == [5, 6, 7, 5]             # innermost axis
    assert [s.cfg.train.seed for s in specs[:4]] == [5, 6, 7, 5]       # the trial's seed drives its stages
    assert specs[1].name == "model=toy_llama_xs,train.epochs=1,seed=6"
    assert specs[1].cfg.train.epochs == 1 and specs[3].cfg.train.epochs == 2
    one = S.compose_trials(_compose(["+sweep=smoke"]), ["+sweep=smoke"])
    assert [s.key for s in one] != [s.key for s in specs[::3]]          # seed 5 is not the default seed 0
    with pytest.raises(ConfigError, match="sweep.replicates=0"):
        S.compose_trials(_compose(["+sweep=smoke", "sweep.replicates=0"]), ["+sweep=smoke"])
    cfg = _with_axes({"train.seed": [1, 2]}, base=("+sweep=smoke", "sweep.replicates=2"))
    with pytest.raises(ConfigError, match="axis on train.seed"):
        S.compose_trials(cfg, ["+sweep=smoke"])


def _with_axes(axes, base=("+sweep=smoke",)):
    cfg = _compose(base)
    with open_dict(cfg):
        cfg.sweep.axes = axes
    return cfg


@pytest.mark.parametrize("axes,axis,value", [
    ({"model": ["toy_llama_xs", "no_such_model"]}, "model", "'no_such_model'"),
    ({"train.epochs": [1], "data.size": [100, -5]}, "data.size", "-5"),
    ({"train.epochz": [1]}, "train.epochz", "1"),
    ({"data.domain_weights": [{"Math": -1}]}, "data.domain_weights", "{'Math': -1}"),
])
def test_bad_axis_value_named_before_any_trial(axes, axis, value, workdir, tmp_path):
    cfg = _with_axes(axes)
    with pytest.raises(ConfigError) as e:
        S.compose_trials(cfg, ["+sweep=smoke"])
    msg = str(e.value)
    assert f"axis {axis}: value {value} is not allowed" in msg
    assert "\n" not in msg
    with open_dict(cfg):
        cfg.tracking.uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(ConfigError):  # the driver: nothing starts, nothing is recorded
        S.run_sweep(cfg, trial_fn=fake_trial, overrides=["+sweep=smoke"])
    assert _calls() == 0 and not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------------------------------------------- resources
def test_check_resources_counts_and_refuses():
    nodes = [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}]
    assert S.check_resources(1, 0, nodes) == 10
    assert S.check_resources(2, 0.5, nodes) == 4
    with pytest.raises(S.ResourceError, match=r"ray.gpus_per_trial=4 .*largest node has 2"):
        S.check_resources(1, 4, nodes)
    with pytest.raises(S.ResourceError, match=r"ray.cpus_per_trial=16"):
        S.check_resources(16, 0, nodes)


def test_gpu_ask_on_cpu_cluster_fails_fast(ray_local, workdir, tmp_path):
    with pytest.raises(S.ResourceError) as e:
        _run(["+sweep=smoke", "ray.gpus_per_trial=1"], tmp_path)
    assert "ray.gpus_per_trial=1 GPU(s) but the largest node has 0" in str(e.value)
    assert "ray.gpus_per_trial=0" in str(e.value)   # what to do about it
    assert _calls() == 0
    assert ray_local.is_initialized()                # not shut down: the driver did not start it


# ---------------------------------------------------------------------------------------------------- runs
def _children(client, parent_id):
    return client.search_runs([client.get_run(parent_id).info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'")


def _corr(client, parent_id):
    return {k: v for k, v in client.get_run(parent_id).data.metrics.items() if k.startswith("corr/")}


def test_failed_trials_are_isolated_and_rerun(ray_local, workdir, tmp_path, capsys):
    ovs = ["+sweep=smoke", "sweep.name=fail_iso"]
    # fail_stage is not part of a trial's identity (a sweep over it would be one trial): the fake trial's
    # other failure, train.seed=13, is.
    axes = {"train.epochs": [1, 2], "train.seed": [0, 13]}
    result = _run(ovs, tmp_path, axes)
    assert not result.ok and result.n_failed == 2 and result.count("FINISHED") == 2
    assert _calls() == 4
    client = MlflowClient(result.tracking_uri)
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    children = _children(client, result.parent_run_id)
    by_status = {}
    for r in children:
        by_status.setdefault(r.info.status, []).append(r)
    assert sorted(by_status) == ["FAILED", "FINISHED"] and len(by_status["FAILED"]) == 2
    for r in by_status["FAILED"]:
        assert r.data.tags[T.ERROR_TAG] == "FakeStageError: fake failure with train.seed=13"
        assert r.data.params["train.seed"] == "13"
        assert "error.txt" in {f.path for f in client.list_artifacts(r.info.run_id)}
    for r in by_status["FINISHED"]:
        assert r.data.metrics["rb2/overall"] > 0 and r.data.params["train.seed"] == "0"
        assert {"config.yaml", "rb2_scores.jsonl", "plots"} <= {f.path for f in client.list_artifacts(r.info.run_id)}
    out = capsys.readouterr().out
    assert "[sweep fail_iso] 4/4 done (0 cached, 2 failed), 0 running, 0 pending" in out
    assert "FakeStageError: fake failure with train.seed=13" in out and "correlations skipped" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db --host 127.0.0.1 --port 5000" in out
    assert sorted(p.name for p in (tmp_path / "runs" / "fail_iso").iterdir()) == sorted(s.spec.key for s in result.trials)

    again = _run(ovs, tmp_path, axes)                     # finished trials cached, failed ones rerun
    assert (again.n_cached, again.n_failed, _calls()) == (2, 2, 6)


def test_the_same_trial_run_twice_at_once_keeps_each_attempts_files(workdir, monkeypatch):
    # `make run` started twice in one directory runs every trial twice at once. The second attempt of a trial
    # must not clear the first's files while the first driver logs them (a FINISHED run once lost its
    # rb2_scores.jsonl and rb1_scores.jsonl that way), and the trial's directory ends up one whole attempt.
    from rmexp.sweep.scheduler import _trial_task

    cfg = _compose(["+sweep=smoke", "preset=tiny"])
    root = workdir / "runs" / "smoke"
    a, b = S.attempt_dir(root, "k1", "run-a"), S.attempt_dir(root, "k1", "run-b")
    first = _trial_task(fake_trial, cfg, str(a), str(workdir), 1, "a", None)
    second = _trial_task(fake_trial, cfg, str(b), str(workdir), 1, "b", None)  # starts while `first` is logged
    assert first["ok"] and second["ok"]
    assert all(Path(f).is_file() and Path(f).is_relative_to(a) for f in first["result"]["artifacts"])
    S.publish_attempt(a, root / "k1")
    S.publish_attempt(b, root / "k1")
    assert sorted(p.name for p in root.iterdir()) == ["k1"]               # no attempt or old copy left behind
    assert sorted(p.relative_to(root / "k1").as_posix() for p in (root / "k1").rglob("*")) == \
        ["plots", "plots/curve.txt", "rb2_scores.jsonl"]
    # another invocation publishes its copy between our two renames: its whole copy stays, ours is dropped
    c = S.attempt_dir(root, "k1", "run-c")
    c.mkdir()
    (c / "ours.txt").write_text("c")
    rename = Path.rename

    def racing_rename(self, target):
        if self == c:
            (root / "k1").mkdir()
            (root / "k1" / "theirs.txt").write_text("d")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", racing_rename)
    S.publish_attempt(c, root / "k1")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["k1", "k1/theirs.txt"]


def test_attempt_directories_of_dead_drivers_are_removed_live_ones_kept(tmp_path):
    root = tmp_path / "runs" / "smoke"
    for name in (".k1.dead", ".k2.live", ".k3.gone", ".k4.noanswer", "k1", ".k1.old-.k1.x"):
        (root / name).mkdir(parents=True)
    status = {"dead": "KILLED", "live": "RUNNING"}

    def run_status(run_id):
        if run_id == "noanswer":
            raise ConnectionError("tracking server down")
        return status.get(run_id)  # None: this store has no such run (another store's sweep may own it)

    S.remove_stale_attempts(root, run_status)
    assert sorted(p.name for p in root.iterdir()) == [".k1.old-.k1.x", ".k2.live", ".k3.gone", ".k4.noanswer", "k1"]
    S.remove_stale_attempts(tmp_path / "nothing_here", run_status)  # no runs directory yet: nothing to do


def test_a_dead_trial_process_fails_its_trial_and_is_replaced(ray_local, workdir, tmp_path):
    # The first trial's process dies (os._exit): with no retries left the trial is FAILED (a system failure,
    # named as one) and the other trials run on a new actor, both in that one process (one trial slot).
    axes = {"model": ["toy_llama_xs"], "train.epochs": [1, 2, 3], "train.margin": [0.5]}
    result = _run(["+sweep=smoke", "ray.max_retries=0", "ray.max_parallel=1"], tmp_path, axes, trial_fn=dying_trial)
    died = int((workdir / "died").read_text())
    assert result.n_failed == 1 and result.count("FINISHED") == 2
    failed = next(t for t in result.trials if t.status == "FAILED")
    assert failed.spec.axes["train.epochs"] == 1 and failed.error.startswith("Ray: ")
    assert "after ray.max_retries=0 retries" in failed.error
    pids = _pids()
    assert len(pids) == 2 and len(set(pids)) == 1 and died not in pids and os.getpid() not in pids


def test_idle_trial_slots_give_their_cpus_back_while_the_last_trials_run(ray_local, workdir, tmp_path):
    # Two slots, three trials, the first one slow: once the other two are done and nothing is queued, the idle
    # slot's actor is killed and its CPU is free (on a shared cluster, for other jobs) while the slow trial runs.
    (workdir / "block").write_text("")
    freed = []

    def watch():
        deadline = time.time() + 60
        while time.time() < deadline and not freed:
            # the two fast trials done (the slow one writes its call after the wait)
            if _calls() == 2 and ray_local.available_resources().get("CPU", 0) >= 1:
                freed.append(time.time())
            time.sleep(0.2)
        (workdir / "block").unlink()

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = _run(["+sweep=smoke", "ray.max_parallel=2"], tmp_path,
                  {"model": ["toy_llama_xs"], "train.epochs": [1, 2, 3]}, trial_fn=slow_first_trial)
    watcher.join()
    assert result.ok and result.count("FINISHED") == 3 and len(freed) == 1


def test_resume_runs_nothing_twice_and_keeps_correlations(ray_local, workdir, tmp_path, capsys):
    first = _run(["+sweep=smoke"], tmp_path)
    assert first.ok and first.count("FINISHED") == 4 and _calls() == 4
    assert len(set(_pids())) <= 2  # two trial slots (2 CPUs): one long-lived process each
    client = MlflowClient(first.tracking_uri)
    corr1 = _corr(client, first.parent_run_id)
    assert "corr/pearson/rb2_overall__bon_gain_16" in corr1
    assert {"correlations.csv", "correlations.txt", "plots"} <= {
        f.path for f in client.list_artifacts(first.parent_run_id)}

    second = _run(["+sweep=smoke"], tmp_path)
    assert _calls() == 4                             # no trial started
    assert second.n_cached == 4 and second.ok and second.parent_run_id != first.parent_run_id
    assert _corr(client, second.parent_run_id) == corr1
    originals = {r.data.tags[TRIAL_KEY_TAG]: r.info.run_id for r in _children(client, first.parent_run_id)}
    copies = _children(client, second.parent_run_id)
    assert len(copies) == 4
    for r in copies:
        assert r.info.status == "FINISHED"
        assert r.data.tags[T.CACHED_FROM_TAG] == originals[r.data.tags[TRIAL_KEY_TAG]]
    parent = client.get_run(second.parent_run_id)
    assert parent.data.tags[T.SWEEP_TAG] == "smoke" and parent.data.tags["rmexp.n_trials"] == "4"
    assert parent.data.params["sweep.axes.model"] == "[toy_llama_xs,toy_gpt2_xs]"
    assert parent.data.params["sweep.axes.train.epochs"] == "[1,2]"
    assert parent.data.params["sweep.replicates"] == "1" and parent.data.params["sweep.n_trials"] == "4"
    assert parent.data.params["override.tracking.uri"] == f"sqlite:///{tmp_path}/mlflow.db"
    # only the headline correlations are metrics (rb2/rb1/eval-acc x bon gain; pearson and spearman)
    assert set(corr1) == {f"corr/{m}/{b}__bon_gain_16" for m in ("pearson", "spearman")
                          for b in ("rb2_overall", "rb1_overall", "eval_acc")}
    table = Path(client.download_artifacts(first.parent_run_id, "correlations.csv", str(tmp_path))).read_text()
    assert "rb2/Precise IF" in table                                   # the full table is the artifact
    names = sorted(r.info.run_name for r in copies)
    assert names[0] == "model=toy_gpt2_xs,train.epochs=1"
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.tags[T.COMMAND_TAG].startswith("python -m rmexp +sweep=smoke")

    third = _run(["+sweep=smoke"], tmp_path)         # copies of copies still point at the originals
    for r in _children(client, third.parent_run_id):
        assert r.data.tags[T.CACHED_FROM_TAG] == originals[r.data.tags[TRIAL_KEY_TAG]]
    out = capsys.readouterr().out
    assert "[sweep smoke] 4/4 done (4 cached, 0 failed), 0 running, 0 pending" in out
    assert re.search(r"^rb2/overall\s+bon/gain_16\s+4\s", out, re.M)  # the headline correlation table


class _KillWhen:
    """A stream for run_sweep's output that sends this process SIGTERM once a given text is printed and
    `calls` trials have started (a trial slot's process may still be starting when the first trial ends)."""

    def __init__(self, text, calls=0):
        self.text, self.buf, self.sent, self.calls = text, "", False, calls

    def write(self, s):
        self.buf += s
        if not self.sent and self.text in self.buf:
            self.sent = True
            deadline = time.time() + 60
            while _calls() < self.calls and time.time() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
        return len(s)

    def flush(self):
        pass


def test_killed_driver_loses_and_duplicates_nothing(ray_local, workdir, tmp_path):
    ovs = ["+sweep=smoke", "sweep.name=kill", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    axes = {"train.weight_decay": [0.0, 0.01]}  # the second trial waits while ./block exists
    cfg = _compose(ovs)
    with open_dict(cfg):
        cfg.sweep.axes = axes
    (tmp_path / "block").write_text("")
    stream = _KillWhen("1/2 done", calls=2)
    with pytest.raises(KeyboardInterrupt):
        S.run_sweep(cfg, trial_fn=fake_trial, overrides=ovs, n_boot=50, file=stream)
    assert "interrupted" in stream.buf and ray_local.is_initialized()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp_id = client.get_experiment_by_name("kill").experiment_id
    runs = client.search_runs([exp_id])
    [parent] = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert parent.info.status == "KILLED"
    children = sorted(r.info.status for r in runs if PARENT_TAG in r.data.tags)
    assert children == ["FINISHED", "KILLED"]          # the one that was running ended, not left RUNNING

    (tmp_path / "block").unlink()
    again = S.run_sweep(cfg, trial_fn=fake_trial, overrides=ovs, n_boot=50, file=stream)
    assert (again.n_cached, again.count("FINISHED"), again.ok) == (1, 1, True)
    assert _calls() == 3  # 2 started in the first run (1 cancelled), only the cancelled one again
    originals = [r for r in client.search_runs([exp_id], "attributes.status = 'FINISHED'")
                 if PARENT_TAG in r.data.tags and T.CACHED_FROM_TAG not in r.data.tags]
    assert sorted(r.data.tags[TRIAL_KEY_TAG] for r in originals) == sorted(s.spec.key for s in again.trials)


# ---------------------------------------------------------------------------------------------------- CLI glue
def test_main_exits_1_when_a_trial_failed(monkeypatch):
    import rmexp.__main__ as M

    class Failed:
        ok = False

    monkeypatch.setattr(S, "run_sweep", lambda cfg: Failed())
    with pytest.raises(SystemExit) as e:
        M.main.__wrapped__(_compose(["+sweep=smoke"]))
    assert e.value.code == 1


def test_status_line_and_summary_table():
    specs = S.compose_trials(_compose(["+sweep=smoke"]), ["+sweep=smoke"])
    trials = [S.TrialOutcome(spec=s) for s in specs]
    trials[0].status, trials[0].seconds = "FINISHED", 3.2
    trials[0].metrics = {"rb2/overall": 0.61, "bon/gain_16": 0.25, "bon/gain_8": 0.2, "bon/oracle_16": 0.9}
    trials[1].status = "CACHED"
    trials[2].status, trials[2].error = "FAILED", "RuntimeError: boom"
    trials[3].status = "RUNNING"
    assert S.status_line("smoke", trials, 42) == (
        "[sweep smoke] 3/4 done (1 cached, 1 failed), 1 running, 0 pending, 0:42 elapsed")
    table = S.summary_table(trials)
    header = table.splitlines()[0].split()
    assert header == ["trial", "model", "train.epochs", "status", "rb2/overall", "rb1/overall", "eval/acc",
                      "bon/gain_16", "seconds"]
    assert "0.610" in table and "0.250" in table and "RuntimeError: boom" in table
    # A method's headline columns show once some trial has them (registry order: BoN, then PPO).
    trials[1].metrics = {"ppo/gold": 0.4, "ppo/gold_delta": 0.1, "ppo/kl_coef": 0.2}
    assert S.summary_table(trials).splitlines()[0].split()[7:] == ["bon/gain_16", "ppo/gold", "ppo/gold_delta",
                                                                    "seconds"]


def test_bon_gain_column_falls_back_to_largest_n():
    from rmexp.downstream import headline_metrics

    assert headline_metrics(["bon/gain_16", "bon/gain_32"]) == ["bon/gain_16"]
    assert headline_metrics(["bon/gain_2", "bon/gain_8", "bon/Math/gain_32", "rb2/overall"]) == ["bon/gain_8"]
    assert headline_metrics(["rb2/overall"]) == []
    # Each method's headline outcomes, in registry order (BoN, then PPO's gold and its change).
    assert headline_metrics(["ppo/gold_delta", "ppo/gold", "ppo/kl", "bon/gain_4"]) == [
        "bon/gain_4", "ppo/gold", "ppo/gold_delta"]


@pytest.mark.slow
def test_smoke_sweep_cli_end_to_end(tmp_path):
    """The real trial: `python -m rmexp +sweep=smoke` twice; the second run starts no trial."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "rmexp", "+sweep=smoke", f"cache_dir={tmp_path}/cache"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "[sweep smoke] 4/4 done (0 cached, 0 failed)" in p.stdout
    assert re.search(r"^rb2/overall\s+bon/gain_\d+\s+4\s", p.stdout, re.M)
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "[sweep smoke] 4/4 done (4 cached, 0 failed)" in p.stdout, p.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sum(T.CACHED_FROM_TAG not in r.data.tags and PARENT_TAG in r.data.tags for r in runs) == 4
