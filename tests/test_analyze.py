"""Tests for rmexp.analyze: correlation statistics, naming, plots and the MLflow round trip."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from rmexp import analyze as A

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------- names


def test_slug_and_corr_key_spelling():
    assert A.slug("rb2/overall") == "rb2_overall"
    assert A.slug("bon/gain_16") == "bon_gain_16"
    assert A.slug("rb2/Precise IF") == "rb2_Precise_IF"
    assert A.slug("bon/gain@16") == "bon_gain_16"
    assert A.corr_key("pearson", "rb2/overall", "bon/gain_16") == "corr/pearson/rb2_overall__bon_gain_16"
    assert A.corr_key("spearman", "rb1/Chat Hard", "ppo/gold_delta") == "corr/spearman/rb1_Chat_Hard__ppo_gold_delta"


def test_metric_predicates():
    for name in ["rb2/overall", "rb2/Precise IF", "rb1/Chat", "eval/acc"]:
        assert A.is_benchmark_metric(name) and not A.is_downstream_metric(name)
    for name in ["bon/gain_16", "bon/Math/gain_16", "ppo/gold", "ppo/kl"]:
        assert A.is_downstream_metric(name) and not A.is_benchmark_metric(name)
    for name in ["eval/acc_extra", "eval/loss", "train/acc", "rb3/x", "run_id", "param:model",
                 "rb2/overall_se", "rb2/Math_se", "bon/gain_16_se", "bon/proxy_gain_16", "bon/Math/oracle_4"]:
        assert not A.is_benchmark_metric(name) and not A.is_downstream_metric(name)
    # Diagnostics and times are not outcomes: the oracle curve and N=1 depend on the policy's samples alone, PPO's
    # training-curve diagnostics and its SFT start do not measure the RM.
    for name in ["bon/oracle_16", "bon/Math/oracle_4", "bon/gold_1", "bon/gain_1", "ppo/kl_coef", "ppo/value_loss",
                 "ppo/clipfrac", "ppo/seconds", "ppo/sft_gold", "ppo/approx_kl"]:
        assert not A.is_downstream_metric(name), name
    assert A.DOWNSTREAM_PREFIXES[:2] == ("bon/", "ppo/")


def test_methods_without_the_rm_are_reference_lines_not_correlated(monkeypatch):
    """A registered method with uses_rm=False (like RLVR) joins no RM-vs-downstream pair."""
    from rmexp.downstream import DOWNSTREAM, DownstreamMethod

    ref = DownstreamMethod(name="refline", uses_rm=False, outcomes=("gold",), run=lambda ctx: None)
    monkeypatch.setitem(DOWNSTREAM, "refline", ref)
    assert A.is_reference_metric("refline/gold") and not A.is_downstream_metric("refline/gold")
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"rb2/overall": rng.normal(size=8), "bon/gain_16": rng.normal(size=8),
                          "refline/gold": rng.normal(size=8)})
    df = A.correlate(table, n_boot=0)
    assert list(zip(df["bench"], df["downstream"])) == [("rb2/overall", "bon/gain_16")]


# ---------------------------------------------------------------------------------------------------- statistics


def _table(n=12, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(n)],
            "rb2/overall": x,
            "rb2/Precise IF": np.round(rng.normal(size=n), 0),  # ties, for Spearman
            "eval/acc": rng.uniform(size=n),
            "train/loss": rng.uniform(size=n),  # neither kind: ignored
            "bon/gain_16": 0.8 * x + 0.4 * rng.normal(size=n),
            "ppo/gold": rng.normal(size=n),
        }
    )


def test_correlate_matches_scipy():
    t = _table()
    df = A.correlate(t, n_boot=200)
    assert list(df.columns) == A.CORR_COLUMNS
    assert set(df["bench"]) == {"rb2/overall", "rb2/Precise IF", "eval/acc"}
    assert set(df["downstream"]) == {"bon/gain_16", "ppo/gold"}
    assert len(df) == 6
    for r in df.itertuples(index=False):
        assert r.n == len(t)
        assert r.pearson == pytest.approx(scipy.stats.pearsonr(t[r.bench], t[r.downstream])[0], abs=1e-12)
        assert r.spearman == pytest.approx(scipy.stats.spearmanr(t[r.bench], t[r.downstream])[0], abs=1e-12)


def test_hand_worked_pearson():
    # x=[1,2,3], y=[1,2,4]: means 2 and 7/3; dx=[-1,0,1], dy=[-4/3,-1/3,5/3];
    # sum dx*dy = 4/3 + 0 + 5/3 = 3; sum dx^2 = 2; sum dy^2 = (16+1+25)/9 = 14/3;
    # r = 3 / sqrt(2 * 14/3) = sqrt(27/28) ~= 0.98198.  Ranks are identical, so rho = 1.
    t = pd.DataFrame({"rb2/overall": [1.0, 2.0, 3.0], "bon/gain_16": [1.0, 2.0, 4.0]})
    row = A.correlate(t, n_boot=0).iloc[0]
    assert row["n"] == 3
    assert row["pearson"] == pytest.approx(math.sqrt(27 / 28), abs=1e-12)
    assert row["spearman"] == pytest.approx(1.0)
    assert math.isnan(row["pearson_lo"]) and row["n_boot_valid"] == 0  # no bootstrap asked for


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    t = pd.DataFrame({"rb2/overall": x, "bon/gain_16": x + 0.3 * rng.normal(size=30), "ppo/gold": rng.normal(size=30)})
    a = A.correlate(t, ["rb2/overall"], ["bon/gain_16"], n_boot=1000, seed=7)
    b = A.correlate(t, ["rb2/overall"], ["bon/gain_16"], n_boot=1000, seed=7)
    c = A.correlate(t, ["rb2/overall"], ["bon/gain_16"], n_boot=1000, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert a["pearson_lo"].iloc[0] != c["pearson_lo"].iloc[0]
    r = a.iloc[0]
    assert r["pearson"] > 0.9
    assert r["pearson_lo"] < r["pearson"] < r["pearson_hi"] <= 1.0
    assert r["spearman_lo"] < r["spearman"] <= r["spearman_hi"] <= 1.0
    assert r["pearson_lo"] > 0.7  # strongly correlated: CI well away from 0
    assert r["n_boot_valid"] == 1000
    # A pair's CI does not depend on which other pairs are analysed alongside it.
    full = A.correlate(t, n_boot=1000, seed=7)
    pd.testing.assert_frame_equal(full[full["downstream"] == "bon/gain_16"].reset_index(drop=True), a)
    # A wider CI level gives a wider interval.
    w = A.correlate(t, ["rb2/overall"], ["bon/gain_16"], n_boot=1000, seed=7, ci=0.99).iloc[0]
    assert w["pearson_lo"] <= r["pearson_lo"] and w["pearson_hi"] >= r["pearson_hi"]


def test_nan_rows_dropped_per_pair():
    t = _table(n=10)
    t.loc[[1, 4], "bon/gain_16"] = np.nan
    t.loc[7, "rb2/overall"] = np.nan
    df = A.correlate(t, ["rb2/overall", "eval/acc"], ["bon/gain_16", "ppo/gold"], n_boot=100)
    get = lambda b, d: df[(df.bench == b) & (df.downstream == d)].iloc[0]  # noqa: E731
    r = get("rb2/overall", "bon/gain_16")
    keep = t[["rb2/overall", "bon/gain_16"]].dropna()
    assert r["n"] == 7
    assert r["pearson"] == pytest.approx(scipy.stats.pearsonr(keep.iloc[:, 0], keep.iloc[:, 1])[0], abs=1e-12)
    assert get("eval/acc", "ppo/gold")["n"] == 10
    assert get("rb2/overall", "ppo/gold")["n"] == 9
    assert get("eval/acc", "bon/gain_16")["n"] == 8


def test_constant_columns_and_small_n_give_nan_quietly():
    t = pd.DataFrame(
        {
            "rb2/overall": [0.5, 0.5, 0.5, 0.5, 0.5],  # constant
            "rb1/overall": [0.1, 0.2, np.nan, np.nan, np.nan],  # n = 2 after dropping NaN
            "eval/acc": [np.nan] * 5,  # n = 0
            "bon/gain_16": [1.0, 2.0, 3.0, 5.0, 4.0],
            "ppo/gold": [1.0, 1.0, 1.0, 1.0, 1.0],  # constant
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any scipy/numpy warning fails the test
        df = A.correlate(t, n_boot=200)
    assert len(df) == 6
    assert df["pearson"].isna().all() and df["spearman"].isna().all()
    assert df["pearson_lo"].isna().all() and df["spearman_hi"].isna().all()
    assert dict(zip(df["bench"], df["n"])) == {"rb2/overall": 5, "rb1/overall": 2, "eval/acc": 0}
    assert A.corr_metrics(df) == {}


def test_too_few_valid_resamples_gives_nan_ci():
    # n=3, x=[0,0,1], y=[0,1,1]: a resample is constant in x or y with probability 15/27 > 1/2,
    # so most resamples are skipped and the CI is NaN, while the point estimate r = 0.5 stands.
    t = pd.DataFrame({"rb2/overall": [0.0, 0.0, 1.0], "bon/gain_16": [0.0, 1.0, 1.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = A.correlate(t, n_boot=2000, seed=0).iloc[0]
    assert r["pearson"] == pytest.approx(0.5)
    assert 0 < r["n_boot_valid"] < 1000
    assert abs(r["n_boot_valid"] / 2000 - 12 / 27) < 0.05
    assert math.isnan(r["pearson_lo"]) and math.isnan(r["spearman_hi"])


def test_bootstrap_is_fast_enough():
    import time

    rng = np.random.default_rng(0)
    cols = [f"rb2/s{i}" for i in range(12)] + [f"bon/d{i}/gain_16" for i in range(10)]
    t = pd.DataFrame(rng.normal(size=(40, len(cols))), columns=cols)
    t0 = time.perf_counter()
    df = A.correlate(t, n_boot=2000)
    assert len(df) == 120 and df["pearson_lo"].notna().all()
    assert time.perf_counter() - t0 < 10.0  # generous: shared CI machine; ~0.2 s when idle


def test_corr_metrics_and_headline_pairs():
    t = _table()
    t["rb1/overall"] = t["rb2/overall"] ** 2
    df = A.correlate(t, n_boot=50)
    m = A.corr_metrics(df)
    assert len(m) == 2 * len(df)
    key = "corr/pearson/rb2_overall__bon_gain_16"
    assert m[key] == pytest.approx(scipy.stats.pearsonr(t["rb2/overall"], t["bon/gain_16"])[0])
    assert "corr/spearman/rb2_Precise_IF__ppo_gold" in m
    pairs = A.headline_pairs(df, k=4)
    assert pairs[:3] == [("rb2/overall", "bon/gain_16"), ("rb1/overall", "bon/gain_16"), ("rb2/overall", "ppo/gold")]
    assert len(pairs) == 4 and len(set(pairs)) == 4
    rest = df[~df[["bench", "downstream"]].apply(tuple, axis=1).isin(pairs[:3])]
    best = rest.loc[rest["pearson"].abs().idxmax()]
    assert pairs[3] == (best["bench"], best["downstream"])
    # without the preferred metrics: strongest |pearson| first
    df2 = A.correlate(t[["eval/acc", "rb2/Precise IF", "ppo/gold", "bon/gain_16"]], n_boot=0)
    p2 = A.headline_pairs(df2, k=2)
    order = df2.assign(a=df2["pearson"].abs()).sort_values("a", ascending=False)
    assert p2 == list(zip(order["bench"], order["downstream"]))[:2]


def test_format_table_and_plot(tmp_path):
    t = _table(n=8)
    t["param:model"] = [f"m{i}" for i in range(8)]
    df = A.correlate(t, n_boot=200)
    text = A.format_table(df)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["bench", "downstream", "n"]
    assert len(lines) == 2 + len(df)
    assert any("rb2/Precise IF" in ln for ln in lines)
    assert len(A.format_table(df, top=2).splitlines()) == 4

    row = df[(df.bench == "rb2/overall") & (df.downstream == "bon/gain_16")].iloc[0]
    title = A._title("rb2/overall", "bon/gain_16", row)
    assert title == (
        f"rb2/overall vs bon/gain_16: r={row['pearson']:.2f} [{row['pearson_lo']:.2f}, {row['pearson_hi']:.2f}], "
        f"rho={row['spearman']:.2f}, n=8"
    )
    fake = {"pearson": 0.8123, "pearson_lo": 0.42, "pearson_hi": 0.9649, "spearman": 0.77, "n": 8}
    assert A._title("rb2/overall", "bon/gain_16", fake) == "rb2/overall vs bon/gain_16: r=0.81 [0.42, 0.96], rho=0.77, n=8"

    p = A.scatter_plot(t, "rb2/overall", "bon/gain_16", row, tmp_path / "a.png", label_column="param:model")
    with open(p, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # a constant column still plots (no fitted line, no exception)
    t["rb2/overall"] = 1.0
    A.scatter_plot(t, "rb2/overall", "bon/gain_16", row, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------------- MLflow


@pytest.fixture
def mlflow_env(tmp_path, monkeypatch):
    """A private SQLite tracking store in tmp_path; the fluent API sees it through the environment only."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # anything MLflow writes relative to cwd stays in tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    if mlflow.get_tracking_uri() != uri:
        pytest.skip("a global mlflow.set_tracking_uri() from elsewhere overrides MLFLOW_TRACKING_URI")
    client = mlflow.MlflowClient(tracking_uri=uri)
    return uri, client


def _log_sweep(client, name, artifact_root, trials, failed=()):
    """Parent run + one nested child per trial (fluent API, like the sweep driver); returns parent run id."""
    import mlflow

    exp = client.get_experiment_by_name(name)
    eid = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifact_root.as_uri())
    try:
        with mlflow.start_run(experiment_id=eid, run_name="sweep") as parent:
            for i, metrics in enumerate(list(trials) + list(failed)):
                mlflow.start_run(experiment_id=eid, run_name=f"trial-{i}", nested=True)
                mlflow.log_params({"model": f"m{i}", "train.epochs": 1 + i % 2})
                mlflow.set_tag(A.TRIAL_KEY_TAG, f"key{i}")
                mlflow.log_metric("rb2/overall", -1.0, step=0)  # superseded below: latest value wins
                mlflow.log_metrics(metrics, step=1)
                mlflow.end_run(status="FAILED" if i >= len(trials) else "FINISHED")
        return parent.info.run_id
    finally:
        mlflow.end_run()
        mlflow.end_run()


TRIALS = [
    {"rb2/overall": 0.61, "rb2/Precise IF": 0.40, "rb1/overall": 0.70, "eval/acc": 0.80, "bon/gain_16": 0.10, "ppo/gold": 0.2},
    {"rb2/overall": 0.72, "rb2/Precise IF": 0.55, "rb1/overall": 0.69, "eval/acc": 0.83, "bon/gain_16": 0.14, "ppo/gold": 0.1},
    {"rb2/overall": 0.55, "rb2/Precise IF": 0.35, "rb1/overall": 0.75, "eval/acc": 0.78, "bon/gain_16": 0.09, "ppo/gold": 0.4},
    {"rb2/overall": 0.80, "rb2/Precise IF": 0.60, "rb1/overall": 0.72, "eval/acc": 0.88, "bon/gain_16": 0.21, "ppo/gold": 0.3},
]
FAILED = [{"rb2/overall": 0.99, "rb2/Precise IF": 0.1, "rb1/overall": 0.1, "eval/acc": 0.1, "bon/gain_16": -5.0, "ppo/gold": 9.0}]


def test_analyze_experiment_end_to_end(mlflow_env, tmp_path, capsys):
    uri, client = mlflow_env
    art = tmp_path / "artifacts"
    old = _log_sweep(client, "sweep-a", art, TRIALS[:3])  # an earlier sweep invocation: not the default
    parent = _log_sweep(client, "sweep-a", art, TRIALS, failed=FAILED)
    assert old != parent

    table = A.load_trials("sweep-a", uri)
    assert table.attrs["parent_run_id"] == parent
    assert len(table) == 4  # the FAILED child is excluded
    assert table["param:model"].tolist() == ["m0", "m1", "m2", "m3"]
    assert table["trial_key"].tolist() == ["key0", "key1", "key2", "key3"]
    assert table["rb2/Precise IF"].tolist() == [t["rb2/Precise IF"] for t in TRIALS]
    assert table["rb2/overall"].tolist() == [t["rb2/overall"] for t in TRIALS]  # latest value, not step 0
    assert len(A.load_trials("sweep-a", uri, parent_run_id=old)) == 3

    df = A.analyze_experiment("sweep-a", uri, n_boot=300, seed=1)
    out = capsys.readouterr().out
    assert "4 finished trials" in out and "rb2/overall" in out

    x = [t["rb2/overall"] for t in TRIALS]
    y = [t["bon/gain_16"] for t in TRIALS]
    metrics = client.get_run(parent).data.metrics
    assert metrics["corr/pearson/rb2_overall__bon_gain_16"] == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert metrics["corr/spearman/rb2_overall__bon_gain_16"] == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    # Only the headline pairs are parent metrics; every pair (e.g. Precise IF vs PPO gold) is in the table.
    from rmexp.sweep.summary import headline_rows

    assert "corr/pearson/rb2_Precise_IF__ppo_gold" not in metrics and "corr/pearson/rb2_Precise_IF__ppo_gold" in A.corr_metrics(df)
    assert set(k for k in metrics if k.startswith("corr/")) == set(A.corr_metrics(headline_rows(df)))
    assert client.get_run(old).data.metrics == {}  # the other sweep is untouched
    assert client.get_run(parent).info.status == "FINISHED"

    top = {f.path for f in client.list_artifacts(parent)}
    assert {"correlations.csv", "correlations.txt", "plots"} <= top
    plots = {f.path for f in client.list_artifacts(parent, "plots")}
    assert "plots/rb2_overall__bon_gain_16.png" in plots and len(plots) == 4
    local = client.download_artifacts(parent, "correlations.csv", str(tmp_path / "dl"))
    back = pd.read_csv(local)
    assert back[["bench", "downstream", "n"]].values.tolist() == df[["bench", "downstream", "n"]].values.tolist()
    assert str(art) in client.get_run(parent).info.artifact_uri  # stayed inside tmp_path

    # --no-log through the CLI leaves the parent's metrics as they were and exits 0
    before = client.get_run(old).data.metrics
    assert A.main(["--experiment", "sweep-a", "--tracking-uri", uri, "--parent-run-id", old, "--n-boot", "50", "--no-log"]) == 0
    assert client.get_run(old).data.metrics == before


def test_cli_errors_exit_2(mlflow_env, tmp_path, capsys):
    uri, client = mlflow_env
    client.create_experiment("empty", artifact_location=(tmp_path / "art").as_uri())
    assert A.main(["--experiment", "nope", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "not found" in err and len(err.splitlines()) == 1
    assert A.main(["--experiment", "empty", "--tracking-uri", uri]) == 2  # no parent run at all
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    _log_sweep(client, "empty", tmp_path / "art", [], failed=FAILED)  # only a FAILED trial
    assert A.main(["--experiment", "empty", "--tracking-uri", uri]) == 2
    assert "no FINISHED child runs" in capsys.readouterr().err


def test_cli_module_missing_database_exit_2(tmp_path):
    # Default tracking URI is sqlite:///<cwd>/mlflow.db; reading must not create it.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run(
        [sys.executable, "-m", "rmexp.analyze", "--experiment", "nope"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "mlflow.db" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()
