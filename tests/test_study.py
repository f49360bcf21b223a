"""Tests for rmexp.study: every check kind on hand-made trial tables with known answers, the study files in
sweeps/, and the CLI against a private SQLite MLflow store built here (no global tracking URI is set)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml

from rmexp import study as S

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "sweeps"
STUDY_FILES = sorted(SWEEPS.glob("*.yaml"))


# ---------------------------------------------------------------------------------------------------- helpers


def check(**kw):
    """A validated check (the same path a study file takes)."""
    return S._validate_check(0, kw, "<test>")


def run(c, table, n_boot=500):
    return S.evaluate_check(check(**c) if "name" not in c else c, table, n_boot=n_boot, seed=0)


def make_sweep(uri: str, name: str, trials, artifact_root: Path) -> str:
    """Experiment ``name`` (created if absent), one parent run and one FINISHED child run per (params, metrics)
    trial, tagged like the sweep driver's; returns the parent run id. Uses an explicit MlflowClient only."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from rmexp.analyze import PARENT_TAG, TRIAL_KEY_TAG

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    eid = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifact_root.as_uri())
    parent = client.create_run(eid, run_name="sweep").info.run_id
    ts = int(time.time() * 1000)
    for i, (params, metrics) in enumerate(trials):
        rid = client.create_run(
            eid, run_name=f"{params.get('model', 'trial')}-{i:02d}", tags={PARENT_TAG: parent, TRIAL_KEY_TAG: f"key{i}"}
        ).info.run_id
        client.log_batch(
            rid,
            metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        client.set_terminated(rid, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


def epochs_trials(effect: float = 0.1, seed: int = 0):
    """8 trials shaped like the epochs sweep: rb2/overall = base(model, lr) + effect * [epochs == 2] exactly."""
    rng = np.random.default_rng(seed)
    out = []
    for m_i, model in enumerate(["toy_llama_s", "toy_gpt2_s"]):
        for lr_i, lr in enumerate(["0.0003", "0.001"]):
            base = 0.40 + 0.05 * m_i + 0.02 * lr_i
            for ep in (1, 2):
                rb2 = base + effect * (ep == 2)
                out.append((
                    {"model": model, "model.family": model.split("_")[1], "train.epochs": ep, "train.lr": lr},
                    {"rb2/overall": rb2, "eval/acc": 0.5 + rb2 / 2, "bon/gain_16": 0.5 * rb2 + 0.01 * rng.normal()},
                ))
    return out


def frame(trials) -> pd.DataFrame:
    return pd.DataFrame([{**{f"param:{k}": str(v) for k, v in p.items()}, **m} for p, m in trials])


# ---------------------------------------------------------------------------------------------------- group_diff


def test_group_diff_exact_difference_paired():
    t = frame(epochs_trials(effect=0.1))
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a=2, b=1, expect="a_greater"), t)
    assert r.value == pytest.approx(0.1, abs=1e-12)
    assert (r.ci_lo, r.ci_hi) == (pytest.approx(0.1, abs=1e-12), pytest.approx(0.1, abs=1e-12))
    assert r.n == 4 and "paired" in r.detail and "4 pairs" in r.detail
    assert r.verdict == "agrees"
    assert "+0.100" in r.measured()
    # the same data, the opposite expectation: a finding against the paper, not an error
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a=2, b=1, expect="b_greater"), t)
    assert r.verdict == "disagrees"
    # b - a
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a="1", b="2", expect="a_greater"), t)
    assert r.value == pytest.approx(-0.1) and r.verdict == "disagrees"


def test_group_diff_unpaired_and_explicit_match():
    t = frame(epochs_trials(effect=0.1))
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a=2, b=1, match=[],
                 expect="a_greater"), t)
    assert r.value == pytest.approx(0.1) and "unpaired: 4 vs 4" in r.detail
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a=2, b=1, match=["model"],
                 expect="a_greater"), t)
    assert r.value == pytest.approx(0.1) and r.n == 2 and r.verdict == "agrees"


def test_group_diff_matches_numeric_values_across_spellings():
    t = frame(epochs_trials(effect=0.0))
    t.loc[t["param:train.lr"] == "0.001", "rb2/overall"] += 0.03
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.lr", a=1.0e-3, b=3.0e-4,
                 expect="a_greater"), t)
    assert r.value == pytest.approx(0.02 + 0.03) and r.n == 4 and r.verdict == "agrees"  # base has +0.02
    t["param:train.epochs"] = t["param:train.epochs"].map({"1": "1.0", "2": "2.0"})
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a=2, b="1", expect="a_greater"), t)
    assert r.n == 4  # "2.0" == 2


def test_group_diff_ci_spanning_zero_is_inconclusive():
    t = pd.DataFrame({"param:g": ["a", "b"] * 4, "param:cell": [str(i // 2) for i in range(8)],
                      "m": [0.1, 0.0, 0.0, 0.1, 0.05, 0.0, 0.0, 0.05]})
    r = run(dict(kind="group_diff", metric="m", param="g", a="a", b="b", expect="a_greater"), t)
    assert r.value == pytest.approx(0.0, abs=1e-12) and r.ci_lo < 0 < r.ci_hi
    assert r.verdict == "inconclusive" and "spans 0" in r.detail


def test_group_diff_tiny_n_and_empty_group():
    t = pd.DataFrame({"param:g": ["a", "b"], "m": [1.0, 0.0]})
    r = run(dict(kind="group_diff", metric="m", param="g", a="a", b="b", expect="a_greater"), t)
    assert r.value == pytest.approx(1.0) and r.n == 1 and r.verdict == S.N_TOO_SMALL and "1 unit(s) < 3" in r.detail
    r = run(dict(kind="group_diff", metric="m", param="g", a="a", b="c", expect="a_greater"), t)
    assert r.verdict == S.N_TOO_SMALL and "c: 0 trials" in r.detail


def replicated(pairs: int, seeds: int, effect: float = 0.2, noise: float = 0.01):
    """``pairs`` families x {pretrained, random} x ``seeds`` seeds; pretrained is ``effect`` better."""
    rng = np.random.default_rng(0)
    rows = []
    for f in range(pairs):
        for init in ("pretrained", "random"):
            for s in range(seeds):
                rows.append({"param:model.family": f"fam{f}", "param:model.init": init, "param:seed": str(s),
                             "m": 0.3 + 0.05 * f + effect * (init == "pretrained") + noise * rng.normal()})
    return pd.DataFrame(rows)


def test_group_diff_needs_three_pairs_or_seed_replicates():
    c = dict(kind="group_diff", metric="m", param="model.init", a="pretrained", b="random", expect="a_greater")
    # 2 pairs, no replicates: a large, clean effect is still "n too small" (the old rule said "agrees")
    r = run(c, replicated(pairs=2, seeds=1))
    assert r.value == pytest.approx(0.2, abs=0.03) and r.n == 2 and r.verdict == S.N_TOO_SMALL
    assert r.ci_method == "bootstrap over pairs"
    # 3 pairs: enough
    r = run(c, replicated(pairs=3, seeds=1))
    assert r.n == 3 and r.verdict == "agrees"
    # 2 pairs x 2 seeds: the seed is not a match param, the interval is replicate-level
    r = run(c, replicated(pairs=2, seeds=2))
    assert r.n == 2 and r.verdict == "agrees" and r.ci_method == "two-stage bootstrap (pairs, seeds)"
    assert "paired on model.family: 2 pairs, >= 2 trials per arm" in r.detail
    # 1 pair x 2 seeds: 2 units, too few; seed noise as large as the effect: the interval spans 0
    assert run(c, replicated(pairs=1, seeds=2)).verdict == S.N_TOO_SMALL
    assert run(c, replicated(pairs=2, seeds=3, effect=0.0, noise=0.1)).verdict == "inconclusive"


def test_verdict_needs_every_interval_on_one_side():
    assert S._verdict(0.5, [(0.1, 0.9), (0.2, 0.8)], 5, 3, 1) == ("agrees", "")
    assert S._verdict(0.5, [(0.1, 0.9), (-0.1, 0.8)], 5, 3, 1)[0] == "inconclusive"
    assert S._verdict(-0.5, [(-0.9, -0.1)], 5, 3, 1) == ("disagrees", "")
    assert S._verdict(0.5, [(0.1, 0.9)], 2, 1, 1)[0] == S.N_TOO_SMALL
    assert S._verdict(0.5, [(0.1, 0.9)], 2, 1, 1, units=4) == ("agrees", "")


def test_group_diff_where_filter():
    t = frame(epochs_trials(effect=0.1))
    t.loc[t["param:model"] == "toy_gpt2_s", "rb2/overall"] = 0.5  # no epoch effect for gpt2
    c = dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a=2, b=1, expect="a_greater")
    assert run(c, t).value == pytest.approx(0.05)
    r = run({**c, "where": {"model": "toy_llama_s"}}, t)
    assert r.value == pytest.approx(0.1) and r.n == 2
    r = run({**c, "where": {"model": ["toy_llama_s", "toy_gpt2_s"]}}, t)
    assert r.value == pytest.approx(0.05)


# ---------------------------------------------------------------------------------------------------- rank


def test_rank_perfectly_increasing():
    t = pd.DataFrame({"param:model.size": ["l", "xs", "m", "s"], "rb2/overall": [0.4, 0.1, 0.3, 0.2]})
    c = dict(kind="rank", metric="rb2/overall", param="model.size", order=["xs", "s", "m", "l"], expect="increasing")
    r = run(c, t)
    assert r.value == pytest.approx(1.0) and r.ci_lo == pytest.approx(1.0) and r.ci_hi == pytest.approx(1.0)
    assert r.n == 4 and r.verdict == "agrees"
    assert run({**c, "expect": "decreasing"}, t).verdict == "disagrees"


def test_rank_numeric_order_drops_unlisted_values():
    t = pd.DataFrame({"param:data.label_noise": ["0.0", "0.2", "0.4", "0.0", "0.2", "0.4", "0.9"],
                      "rb2/overall": [0.9, 0.8, 0.7, 0.85, 0.75, 0.65, 5.0]})
    r = run(dict(kind="rank", metric="rb2/overall", param="data.label_noise", order=[0.0, 0.2, 0.4],
                 expect="decreasing"), t)
    pos = [0, 1, 2, 0, 1, 2]
    assert r.n == 6
    assert r.value == pytest.approx(scipy.stats.spearmanr(pos, t["rb2/overall"][:6])[0])
    assert r.verdict == "agrees"


def test_rank_one_level_is_inconclusive():
    t = pd.DataFrame({"param:model.size": ["s", "s", "s"], "m": [0.1, 0.2, 0.3]})
    r = run(dict(kind="rank", metric="m", param="model.size", order=["xs", "s"], expect="increasing"), t)
    assert r.verdict == "inconclusive"


# ---------------------------------------------------------------------------------------------------- correlation


def test_correlation_sign_known():
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 12)
    y = -2.0 * x + 0.05 * rng.normal(size=12)
    t = pd.DataFrame({"rb2/overall": x, "bon/gain_16": y})
    c = dict(kind="correlation", bench="rb2/overall", downstream="bon/gain_16", expect="positive")
    r = run(c, t)
    assert r.value == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert r.value < -0.9 and r.ci_hi < 0 and r.n == 12
    assert r.verdict == "disagrees"
    assert run({**c, "expect": "negative"}, t).verdict == "agrees"
    r = run({**c, "method": "spearman", "expect": "negative"}, t)
    assert r.value == pytest.approx(scipy.stats.spearmanr(x, y)[0]) and r.verdict == "agrees"
    assert "rho=" in r.measured()


def test_correlation_tiny_n_is_inconclusive():
    t = pd.DataFrame({"rb2/overall": [0.1, 0.2], "bon/gain_16": [0.1, 0.3]})
    r = run(dict(kind="correlation", bench="rb2/overall", downstream="bon/gain_16", expect="positive"), t)
    assert r.n == 2 and r.verdict == S.N_TOO_SMALL
    # n=4 below the default min_n of 5, even with a perfect r
    t = pd.DataFrame({"rb2/overall": [0.1, 0.2, 0.3, 0.4], "bon/gain_16": [0.1, 0.3, 0.5, 0.6]})
    c = dict(kind="correlation", bench="rb2/overall", downstream="bon/gain_16", expect="positive")
    r = run(c, t)
    assert r.value > 0.98 and r.verdict == S.N_TOO_SMALL and "n=4 < min_n=5" in r.detail
    assert run({**c, "min_n": 3}, t).verdict == "agrees"


def test_correlation_over_config_means_with_both_intervals():
    rng = np.random.default_rng(3)
    rows = []
    for c in range(6):
        for s in range(3):
            rows.append({"param:model": f"m{c}", "param:seed": str(s), "rb2/overall": 0.1 * c + 0.02 * rng.normal(),
                         "bon/gain_16": 0.05 * c + 0.02 * rng.normal()})
    t = pd.DataFrame(rows)
    r = run(dict(kind="correlation", bench="rb2/overall", downstream="bon/gain_16", expect="positive"), t)
    means = t.groupby("param:model")[["rb2/overall", "bon/gain_16"]].mean()
    assert r.n == 6 and r.value == pytest.approx(scipy.stats.pearsonr(means["rb2/overall"], means["bon/gain_16"])[0])
    assert r.ci_method == "two-stage bootstrap (configs, seeds) + Fisher z"
    assert "18 trials" in r.detail and "Fisher z [" in r.detail and r.verdict == "agrees"


# ---------------------------------------------------------------------------------------------------- missing


def test_metric_diff_paired_within_trials():
    # Three trials: ppo - dpo = 0.10, 0.05, 0.12 -> mean 0.09; the bootstrap CI lies within [min, max] of the diffs.
    t = pd.DataFrame({"param:data.label_noise": ["0.0", "0.2", "0.4"], "ppo/gold_delta": [0.30, 0.20, 0.02],
                      "dpo/gold_delta": [0.20, 0.15, -0.10]})
    r = run(dict(kind="metric_diff", a="ppo/gold_delta", b="dpo/gold_delta", expect="a_greater"), t)
    assert r.value == pytest.approx(0.09) and r.n == 3 and r.verdict == "agrees"
    assert 0.05 - 1e-12 <= r.ci_lo <= r.value <= r.ci_hi <= 0.12 + 1e-12
    r = run(dict(kind="metric_diff", a="ppo/gold_delta", b="dpo/gold_delta", expect="b_greater"), t)
    assert r.verdict == "disagrees"
    r = run(dict(kind="metric_diff", a="ppo/gold_delta", b="dpo/gold_delta", expect="a_greater",
                 where={"data.label_noise": "0.0"}), t)
    assert r.n == 1 and r.verdict == S.N_TOO_SMALL  # below min_n 3
    assert run(dict(kind="metric_diff", a="ppo/gold_delta", b="rlvr/gold_delta", expect="a_greater"), t).verdict == "missing"
    with pytest.raises(S.StudyError, match="same metric"):
        check(kind="metric_diff", a="ppo/gold", b="ppo/gold", expect="a_greater")


def test_missing_metric_or_param():
    t = frame(epochs_trials())
    r = run(dict(kind="correlation", bench="rb2/overall", downstream="ppo/gold", expect="positive"), t)
    assert r.verdict == "missing" and "ppo/gold" in r.detail
    r = run(dict(kind="group_diff", metric="ppo/gold_delta", param="lineage", a="same", b="cross",
                 expect="a_greater"), t)
    assert r.verdict == "missing" and "ppo/gold_delta" in r.detail and "param:lineage" in r.detail
    r = run(dict(kind="rank", metric="rb2/overall", param="model.size", order=["xs", "s"], expect="increasing"), t)
    assert r.verdict == "missing" and "param:model.size" in r.detail
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a=2, b=1, expect="a_greater",
                 where={"model.init": "pretrained"}), t)
    assert r.verdict == "missing"
    r = run(dict(kind="group_diff", metric="rb2/overall", param="train.epochs", a=2, b=1, expect="a_greater",
                 match=["policy"]), t)
    assert r.verdict == "missing" and "param:policy" in r.detail
    # an empty table (a sweep with no finished trials): everything missing, nothing raises
    study = S.load_study(SWEEPS / "epochs.yaml")
    assert {r.verdict for r in S.evaluate(study, pd.DataFrame(), n_boot=50)} == {"missing"}


# ---------------------------------------------------------------------------------------------------- validation


def minimal(**over):
    d = {
        "sweep": "smoke",
        "command": "python -m rmexp +sweep=smoke",
        "paper": "p",
        "finding": "f",
        "paper_numbers": {"source": "Section X"},
        "checks": [{"kind": "correlation", "bench": "rb2/overall", "downstream": "bon/gain_16", "expect": "positive"}],
    }
    d.update(over)
    return d


@pytest.mark.parametrize(
    "data, msg",
    [
        (minimal(checks=[{"kind": "anova", "metric": "m"}]), "not a known kind"),
        (minimal(checks=[{"kind": "correlation", "bench": "rb2/overall", "expect": "positive"}]), "missing field"),
        (minimal(checks=[{"kind": "correlation", "bench": "b", "downstream": "d", "expect": "up"}]), "expect='up'"),
        (minimal(checks=[{"kind": "correlation", "bench": "b", "downstream": "d", "expect": "positive",
                          "method": "kendall"}]), "method='kendall'"),
        (minimal(checks=[{"kind": "correlation", "bench": "b", "downstream": "d", "expect": "positive",
                          "bogus": 1}]), "unknown field"),
        (minimal(checks=[{"kind": "group_diff", "metric": "m", "param": "p", "a": 1, "b": "1.0",
                          "expect": "a_greater"}]), "same value"),
        (minimal(checks=[{"kind": "rank", "metric": "m", "param": "p", "order": ["xs"], "expect": "increasing"}]),
         "at least 2"),
        (minimal(checks=[]), "non-empty list"),
        ({k: v for k, v in minimal().items() if k != "finding"}, "missing field(s) ['finding']"),
        (minimal(paper_numbers={"r": 0.9}), "source"),
        (minimal(command="python -m rmexp +sweep=epochs"), "+sweep=smoke"),
        (minimal(extra=1), "unknown field"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_study_rejected(data, msg):
    with pytest.raises(S.StudyError) as e:
        S.study_from_dict(data, "bad.yaml")
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_good_minimal_study_defaults():
    s = S.study_from_dict(minimal(), "ok.yaml")
    assert s.checks[0]["method"] == "pearson" and s.checks[0]["name"] == "pearson(rb2/overall, bon/gain_16)"


def test_study_files_exist():
    names = {p.stem for p in STUDY_FILES}
    assert {"smoke", "base_models", "epochs", "rm_size", "data_mix", "lineage"} <= names
    assert (SWEEPS / "README.md").exists()


@pytest.mark.parametrize("path", STUDY_FILES, ids=[p.stem for p in STUDY_FILES])
def test_study_file_valid_and_names_its_sweep(path):
    s = S.load_study(path)
    assert s.sweep == path.stem
    assert s.command.split()[:4] == ["python", "-m", "rmexp", f"+sweep={s.sweep}"]
    assert all(re.fullmatch(r"[a-z_.]+=\S+", o) for o in s.command.split()[4:])  # plain overrides, e.g. replicates
    conf = REPO / "conf" / "sweep" / f"{s.sweep}.yaml"
    assert conf.exists(), f"{path.name} names sweep {s.sweep!r} but {conf.relative_to(REPO)} does not exist"
    assert yaml.safe_load(conf.read_text())["sweep"]["name"] == s.sweep  # the MLflow experiment the study reads
    assert s.paper_numbers["source"].strip()
    # the README's table lists every study
    assert f"`{s.sweep}`" in (SWEEPS / "README.md").read_text()


def test_smoke_study_is_one_correlation():
    s = S.load_study(SWEEPS / "smoke.yaml")
    assert [c["kind"] for c in s.checks] == ["correlation"]


def test_study_runs_on_sweep_shaped_tables():
    """Every study evaluates without error on a table with its params (values absent or not)."""
    t = frame(epochs_trials())
    for path in STUDY_FILES:
        res = S.evaluate(S.load_study(path), t, n_boot=50)
        assert all(r.verdict in S.VERDICTS for r in res)
        assert S.format_results(res, S.load_study(path), t)


def test_format_results_table():
    t = frame(epochs_trials())
    study = S.load_study(SWEEPS / "epochs.yaml")
    text = S.format_results(S.evaluate(study, t, n_boot=200), study, t)
    for word in ("check", "paper says", "sweep measured", "verdict", "2 epochs > 1 epoch on RB2", "agrees",
                 "8 finished trials", "CI method", "bootstrap over pairs"):
        assert word in text
    assert "0 disagrees" in text


# ---------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow_study")
    uri = f"sqlite:///{tmp}/mlflow.db"
    parent = make_sweep(uri, "epochs", epochs_trials(effect=0.1), tmp / "artifacts")
    return tmp, uri, parent


def test_cli_agrees_and_writes_json(store, capsys):
    tmp, uri, parent = store
    out_json = tmp / "out" / "epochs.json"
    rc = S.main([str(SWEEPS / "epochs.yaml"), "--tracking-uri", uri, "--json", str(out_json), "--n-boot", "300"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"parent run {parent}" in out and "8 finished trials" in out
    assert "diff=+0.100 [+0.100, +0.100] n=4" in out
    data = json.loads(out_json.read_text())
    assert data["sweep"] == "epochs" and data["parent_run_id"] == parent and data["n_trials"] == 8
    by_name = {r["name"]: r for r in data["results"]}
    assert by_name["2 epochs > 1 epoch on RB2"]["verdict"] == "agrees"
    assert by_name["2 epochs > 1 epoch on RB2"]["value"] == pytest.approx(0.1)
    assert by_name["RB2 vs BoN gain (pearson)"]["verdict"] in S.VERDICTS


def test_cli_disagreement_is_exit_0(store, capsys):
    tmp, uri, _ = store
    other = make_sweep(uri, "epochs", epochs_trials(effect=-0.1), tmp / "artifacts")
    rc = S.main([str(SWEEPS / "epochs.yaml"), "--tracking-uri", uri, "--parent-run-id", other, "--n-boot", "200"])
    out = capsys.readouterr().out
    assert rc == 0 and "disagrees" in out and "diff=-0.100" in out


def test_cli_missing_experiment_exit_2(store, capsys):
    tmp, uri, _ = store
    rc = S.main([str(SWEEPS / "rm_size.yaml"), "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert rc == 2 and "'rm_size' not found" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_study_exit_2_before_loading(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(minimal(checks=[{"kind": "anova", "metric": "m"}])))
    nodb = tmp_path / "absent" / "mlflow.db"
    rc = S.main([str(bad), "--tracking-uri", f"sqlite:///{nodb}"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a known kind" in err and len(err.strip().splitlines()) == 1
    assert not nodb.parent.exists()  # nothing was loaded or created
    bad.write_text("sweep: [unclosed\n")
    assert S.main([str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert S.main([str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_module_entry_point(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(minimal(checks=[{"kind": "correlation", "bench": "rb2/overall",
                                                    "expect": "positive"}])))
    p = subprocess.run([sys.executable, "-m", "rmexp.study", str(bad)], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("rmexp.study: error:") and "missing field" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""
