"""Every bad input and fault of tests/bad_inputs.py: one `error:` line with the right substance, the right exit
code, and -- for bad input -- no work started (no cache directory, no MLflow database, no run)."""
from __future__ import annotations

import json
import time

import pytest

from rmexp import guards
from rmexp.config import ConfigError, validate
from tests.bad_inputs import CASES, Case, run_in_process, run_subprocess
from tests.conftest import compose_config

BEFORE = [c for c in CASES if c.code == 2]
DURING = [c for c in CASES if c.code == 1]
BY_ID = {c.id: c for c in CASES}


def _skip_if_needed(case: Case) -> None:
    reason = case.skip()
    if reason:
        pytest.skip(reason)


def _assert_one_line(case: Case, out) -> None:
    assert out.code == case.code, out.stderr
    assert len(out.errors) == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    for part in case.expect:
        assert part in out.line, (part, out.line)


def _assert_no_work(case: Case, scratch) -> None:
    cwd = case.cwd(scratch) if case.cwd else scratch
    assert not (scratch / "cache").exists()                    # no zoo, data or RM cache written
    assert not (cwd / "mlflow.db").exists() and not (cwd / "mlartifacts").exists()  # no MLflow store, no run


def test_the_catalogue_covers_the_issue():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", BEFORE, ids=[c.id for c in BEFORE])
def test_bad_input_is_refused_before_work(case, tmp_path, zoo_cache):
    _skip_if_needed(case)
    out = run_in_process(case, tmp_path, zoo_cache)
    _assert_one_line(case, out)
    _assert_no_work(case, tmp_path)
    assert out.stderr.strip() == out.line  # nothing but the error line


def _rm_entries(cache):
    rm_dir = cache / "rm"
    return sorted(p.name for p in rm_dir.iterdir() if not p.name.endswith(".lock")) if rm_dir.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("case", DURING, ids=[c.id for c in DURING])
def test_failure_during_work_is_one_line_and_caches_nothing(case, tmp_path, zoo_cache):
    from mlflow.tracking import MlflowClient

    before = _rm_entries(zoo_cache)
    out = run_in_process(case, tmp_path, zoo_cache)
    _assert_one_line(case, out)
    assert _rm_entries(zoo_cache) == before  # the diverged RM (or none) was not published
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "error.txt" in [a.path for a in client.list_artifacts(runs[0].info.run_id)]


@pytest.mark.slow
def test_verbose_adds_the_traceback(tmp_path, zoo_cache):
    case = BY_ID["runtime_error"]
    verbose = Case(case.id, case.what, lambda d: case.overrides(d) + ["verbose=true"], case.expect, code=1)
    out = run_in_process(verbose, tmp_path, zoo_cache)
    assert out.code == 1 and "Traceback" in out.stderr and len(out.errors) == 1


# A few through the real CLI (an interpreter each: ~5 s): what a user sees, byte for byte one line.
@pytest.mark.parametrize("case_id", ["plus_unknown_key", "english_on_toy_base", "tracking_unreachable",
                                     "read_only_cwd", "jsonl_broken_line"])
def test_cli_prints_one_line_and_exits_2(case_id, tmp_path, zoo_cache):
    case = BY_ID[case_id]
    start = time.time()
    out = run_subprocess(case, tmp_path, zoo_cache, timeout=120)
    _assert_one_line(case, out)
    _assert_no_work(case, tmp_path)
    assert [ln for ln in out.stderr.splitlines() if ln.strip()] == [out.line]
    assert time.time() - start < 60  # the store checks time out in seconds, not minutes


# ------------------------------------------------------------------------------------------- the pieces
def test_plus_key_is_refused_on_a_composed_config_too():
    """Sweeps compose trials in-process (no command-line check): validate() compares with the schema."""
    cfg = compose_config(["+train.epoch=2"])
    assert cfg.train.epoch == 2  # Hydra's `+` force-adds past struct mode: this is why it was accepted
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; did you mean train.epochs\?"):
        validate(cfg)
    validate(compose_config(["+sweep=smoke"]))  # the one + that adds: sweep.* is in the schema


def test_coverage_counts_by_hand():
    unk = 0
    pairs = [([5, 0, 7], [5, 0, 8]),   # 2 unk of 6 tokens, different
             ([1, 2], [1, 2]),         # identical, no unk: 4 tokens
             ([0], [0, 0, 3])]         # 3 unk of 4 tokens, different
    cov = guards.coverage(pairs, unk)
    assert (cov.tokens, cov.unk, cov.pairs, cov.identical) == (14, 5, 3, 1)
    assert cov.unk_share == pytest.approx(5 / 14) and cov.identical_share == pytest.approx(1 / 3)
    assert guards.coverage(pairs, None).unk == 0  # byte-level tokenizers have no <unk>
    guards.check_coverage(cov, 0.5, 0.34, "here", "m")  # under both limits: passes
    with pytest.raises(guards.DataCoverageError, match=r"35.7% of tokens are <unk> \(data.max_unk_share=0.3\)"):
        guards.check_coverage(cov, 0.3, 0.5, "here", "m")
    with pytest.raises(guards.DataCoverageError, match=r"33.3% of pairs \(1 of 3\) encode chosen and rejected"):
        guards.check_coverage(cov, 0.5, 0.3, "here", "m")


def test_check_finite_names_step_and_settings():
    guards.check_finite("loss", 0.69, 0, 10, {"train.lr": 1e-3})
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(guards.NonFiniteError, match=r"loss is (nan|inf|-inf) at step 4 of 10 \(train.lr=0.5, "
                                                        r"train.schedule=cosine\)"):
            guards.check_finite("loss", bad, 3, 10, {"train.lr": 0.5, "train.schedule": "cosine"})


def test_rm_training_stops_at_the_first_nonfinite_loss(world, zoo_cache, tmp_path):
    """Directly on the trainer: lr=1e30 diverges at once; the output directory is never created."""
    from rmexp import zoo
    from rmexp.config import load_model_config
    from rmexp.rm import train_reward_model
    from rmexp.world.data import preferences

    base = zoo.model_path(load_model_config("toy_llama_xs"), world, zoo_cache, progress=False)
    cfg = compose_config(["preset=tiny", "train.lr=1e30"])
    out = tmp_path / "rm"
    with pytest.raises(guards.NonFiniteError, match=r"RM train/loss is nan at step [23] of \d+ \(train.lr=1e\+30"):
        train_reward_model(base, preferences(world, 200, {"Math": 1.0}, 0.0, 0), cfg, out, progress=False)
    assert not out.exists() and not list(tmp_path.glob("rm.tmp*"))


def test_unreachable_hub_fails_in_seconds_naming_model_path(monkeypatch):
    """Online mode but no hub (an endpoint nothing listens on): one short request, not ~25 s of retries."""
    from huggingface_hub import constants

    from rmexp import preflight
    from tests.bad_inputs import closed_port_uri

    endpoint = closed_port_uri(None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    start = time.time()
    with pytest.raises(ConfigError, match=rf"model.path='org/model' is not a local directory and the hub is not "
                                          rf"reachable from here \(ConnectionError on {endpoint}\).*model.path=DIR"):
        preflight._check_hf_model("org/model")
    assert time.time() - start < preflight.HUB_TIMEOUT_S + 2


def test_json_array_and_jsonl_parse_alike(tmp_path):
    from rmexp.data import read_local_rows

    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "c", "rejected": "d"}]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=1))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_local_rows(tmp_path / "a.json") == read_local_rows(tmp_path / "b.jsonl") == rows


def test_cuda_is_not_required_of_the_driver_of_a_cluster_sweep():
    from tests.bad_inputs import _no_cuda_skip

    if _no_cuda_skip():
        pytest.skip(_no_cuda_skip())
    validate(compose_config(["+sweep=smoke", "device=cuda", "ray.address=ray://10.0.0.1:10001"]))  # workers decide
    with pytest.raises(ConfigError, match="device='cuda'"):
        validate(compose_config(["+sweep=smoke", "device=cuda"]))  # local Ray: the trials run on this machine
