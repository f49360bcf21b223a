"""rmexp.stats and rmexp.replicates against hand-worked examples and second computations."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from rmexp import replicates as R
from rmexp import stats as S


def test_standard_errors_hand_worked():
    assert S.binomial_se([1, 1, 0, 0]) == pytest.approx(0.25)            # sqrt(0.5 * 0.5 / 4)
    assert S.binomial_se([1, 1, 1, 0]) == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert math.isnan(S.binomial_se([]))
    assert S.mean_se([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.2909944 / 2)  # sd 1.2910, / sqrt(4)
    assert math.isnan(S.mean_se([1.0]))
    assert S.mean_of_means_se([0.03, 0.04]) == pytest.approx(0.025)       # sqrt(0.0009 + 0.0016) / 2


def test_bootstrap_se_of_a_mean_matches_the_formula():
    x = np.random.default_rng(0).normal(size=60)
    se = S.bootstrap_se(list(x), lambda s: float(np.mean(s)), n_boot=2000, seed=1)
    # the bootstrap SE of a mean is sd(ddof=0) / sqrt(n), up to resampling noise
    assert se == pytest.approx(x.std() / math.sqrt(60), rel=0.08)
    assert S.bootstrap_se(list(x), np.mean, seed=3) == S.bootstrap_se(list(x), np.mean, seed=3)


def test_fisher_z_hand_worked():
    # r = 0.5, n = 12: atanh(0.5) = 0.549306, half-width 1.959964 / 3 = 0.653321
    lo, hi = S.fisher_z_ci(0.5, 12)
    assert lo == pytest.approx(math.tanh(0.549306 - 0.653321), abs=1e-5)  # -0.10364
    assert hi == pytest.approx(math.tanh(0.549306 + 0.653321), abs=1e-5)  # 0.83445
    assert lo == pytest.approx(-0.10364, abs=1e-4) and hi == pytest.approx(0.83445, abs=1e-4)
    assert all(math.isnan(v) for v in S.fisher_z_ci(0.9, 3))


def test_icc1_balanced_hand_worked():
    # configs [1, 2, 3] and [4, 5, 6]: means 2, 5, grand 3.5
    # MSB = 3 * (1.5^2 + 1.5^2) / 1 = 13.5 ; MSW = (1 + 0 + 1 + 1 + 0 + 1) / (6 - 2) = 1 ; k0 = 3
    # ICC(1) = (13.5 - 1) / (13.5 + 2 * 1) = 12.5 / 15.5
    out = S.icc1([[1, 2, 3], [4, 5, 6]])
    assert out["msb"] == pytest.approx(13.5) and out["msw"] == pytest.approx(1.0) and out["k0"] == pytest.approx(3)
    assert out["icc1"] == pytest.approx(12.5 / 15.5)
    assert out["icc1k"] == pytest.approx(12.5 / 13.5)
    assert out["seed_sd"] == pytest.approx(1.0) and out["between_sd"] == pytest.approx(math.sqrt(12.5 / 3))
    assert out["config_sd"] == pytest.approx(np.std([2, 5], ddof=1))
    assert (out["n_configs"], out["n_trials"]) == (2, 6)


def test_icc1_unbalanced_hand_worked():
    # [1, 3] and [2, 4, 6]: means 2, 4, grand 16/5 = 3.2
    # MSB = 2 * 1.2^2 + 3 * 0.8^2 = 4.8 ; MSW = (1 + 1 + 4 + 0 + 4) / 3 = 10/3 ; k0 = 5 - 13/5 = 2.4
    # ICC(1) = (4.8 - 10/3) / (4.8 + 1.4 * 10/3) = 0.154930
    out = S.icc1([[1, 3], [2, 4, 6]])
    assert out["k0"] == pytest.approx(2.4)
    assert out["icc1"] == pytest.approx((4.8 - 10 / 3) / (4.8 + 1.4 * 10 / 3))
    assert out["icc1"] == pytest.approx(0.154930, abs=1e-6)


def test_icc1_recovers_the_variance_share_by_simulation():
    rng = np.random.default_rng(5)
    sigma_b, sigma_w = 2.0, 1.0  # true share 4 / 5
    groups = [rng.normal(rng.normal(0, sigma_b), sigma_w, size=4) for _ in range(3000)]
    assert S.icc1(groups)["icc1"] == pytest.approx(0.8, abs=0.02)


def test_icc1_without_replicates_is_nan():
    out = S.icc1([[1.0], [2.0], [4.0]])
    assert math.isnan(out["icc1"]) and math.isnan(out["seed_sd"])
    assert out["config_sd"] == pytest.approx(1.527525, abs=1e-6)  # sd([1, 2, 4], ddof=1)


def test_two_stage_means_keeps_pairs_and_reduces_to_the_plain_bootstrap():
    rng = np.random.default_rng(0)
    groups = [np.array([[1.0, 2.0], [3.0, 6.0]]), np.array([[5.0, 10.0]]),
              np.array([[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]])]
    m = S.two_stage_means(groups, 500, rng)
    assert m.shape == (500, 3, 2)
    assert np.allclose(m[..., 1], 2 * m[..., 0])  # y = 2 x in every trial: the resampled means keep the pairs
    # one replicate per config: every bootstrap mean is one of the config values (the ordinary bootstrap)
    single = [np.array([[v, v]]) for v in (1.0, 2.0, 3.0)]
    m1 = S.two_stage_means(single, 300, np.random.default_rng(1))
    assert set(np.unique(m1[..., 0])) <= {1.0, 2.0, 3.0}
    # one config with n replicates: the bootstrap mean's variance is the population variance / n
    one = [np.random.default_rng(2).normal(size=(8, 1))]
    mm = S.two_stage_means(one, 20000, np.random.default_rng(3))[:, 0, 0]
    assert mm.var() == pytest.approx(one[0].var() / 8, rel=0.05)


# ------------------------------------------------------------------------------------------ two-level analysis


def replicated_table(k=3, n_configs=6, noise=0.01, seed=0):
    """n_configs configs x k seeds; the config effect drives both metrics, the seed adds noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_configs):
        for s in range(k):
            q = 0.1 * c
            rows.append({"param:model": f"m{c}", "param:seed": str(s), "run_name": f"m{c}-s{s}",
                         "rb2/overall": q + noise * rng.normal(), "bon/gain_16": 0.5 * q + noise * rng.normal()})
    return pd.DataFrame(rows)


def test_config_means_group_by_everything_but_the_seed():
    t = replicated_table(k=3, n_configs=4)
    m = R.config_means(t)
    assert len(m) == 4 and list(m["n_replicates"]) == [3, 3, 3, 3]
    expected = t.groupby("param:model", sort=False)["rb2/overall"].mean().to_numpy()
    assert np.allclose(m["rb2/overall"], expected)
    # without a seed param, two trials with equal params are not taken for replicates
    assert len(R.config_means(t.drop(columns="param:seed"))) == 12


def test_correlate_two_level_point_estimate_and_both_intervals():
    t = replicated_table(k=3, n_configs=8, noise=0.02)
    res = R.correlate_two_level(t, "rb2/overall", "bon/gain_16", n_boot=1000, seed=0)
    m = R.config_means(t)
    r = scipy.stats.pearsonr(m["rb2/overall"], m["bon/gain_16"])[0]
    assert res["r"] == pytest.approx(r) and res["n"] == 8 and res["n_trials"] == 24 and res["min_replicates"] == 3
    assert (res["fisher_lo"], res["fisher_hi"]) == pytest.approx(S.fisher_z_ci(r, 8))
    assert res["boot_lo"] <= r <= res["boot_hi"] and res["boot_lo"] > 0.5
    rho = R.correlate_two_level(t, "rb2/overall", "bon/gain_16", method="spearman", n_boot=200)
    assert rho["r"] == pytest.approx(scipy.stats.spearmanr(m["rb2/overall"], m["bon/gain_16"])[0])
    # seed noise larger than the config effect widens the replicate-aware interval
    noisy = R.correlate_two_level(replicated_table(k=3, n_configs=8, noise=0.3), "rb2/overall", "bon/gain_16",
                                  n_boot=1000)
    assert noisy["boot_hi"] - noisy["boot_lo"] > res["boot_hi"] - res["boot_lo"]


def test_reliability_table_reads_the_replicates():
    t = replicated_table(k=4, n_configs=5, noise=0.01)
    rel = R.reliability_table(t).set_index("metric")
    assert list(rel.index) == ["rb2/overall", "bon/gain_16"]
    groups = [t[t["param:model"] == f"m{c}"]["rb2/overall"].to_numpy() for c in range(5)]
    assert rel.loc["rb2/overall", "icc1"] == pytest.approx(S.icc1(groups)["icc1"])
    assert rel.loc["rb2/overall", "icc1"] > 0.95  # config spread 0.16 vs seed sd 0.01
    text = R.format_reliability(R.reliability_table(t))
    assert "ICC(1)" in text and "rb2/overall" in text
