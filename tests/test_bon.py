"""Tests for rmexp.bon: the exact best-of-N estimator against brute-force subset enumeration, and the metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rmexp.bon import (
    bon_curve_table,
    bon_metrics,
    bon_rank_weights,
    best_of_n_per_prompt,
    expected_best_of_n,
    plot_bon_curves,
)


def brute_force_bon(gold: np.ndarray, proxy: np.ndarray, n: int) -> float:
    """Average over every size-n subset of the gold of the proxy-max; tied maxima share the pick uniformly."""
    vals = []
    for sub in itertools.combinations(range(len(gold)), n):
        top = max(proxy[i] for i in sub)
        tied = [gold[i] for i in sub if proxy[i] == top]
        vals.append(sum(tied) / len(tied))
    return sum(vals) / len(vals)


def test_hand_worked_example_with_tie():
    # proxy = [0.9, 0.5, 0.5, 0.1], gold = [0.2, 1.0, 0.6, 0.0], n = 2. The 6 pairs and their pick's gold:
    #   {0,1} {0,2} {0,3} -> sample 0 (proxy 0.9)     -> 0.2 each
    #   {1,2}             -> tie at 0.5, coin flip     -> (1.0 + 0.6) / 2 = 0.8
    #   {1,3} -> 1.0      {2,3} -> 0.6
    # mean = (0.6 + 0.8 + 1.0 + 0.6) / 6 = 0.5.
    # Formula: tie-averaged gold in proxy order = [0.2, 0.8, 0.8, 0.0]; rank weights C(3-i, 1)/C(4, 2)
    # = [3, 2, 1, 0]/6, so 0.2*3/6 + 0.8*2/6 + 0.8*1/6 = 0.5.
    gold = np.array([0.2, 1.0, 0.6, 0.0])
    proxy = np.array([0.9, 0.5, 0.5, 0.1])
    assert expected_best_of_n(gold, proxy, 2) == pytest.approx(0.5, abs=1e-12)
    assert brute_force_bon(gold, proxy, 2) == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(bon_rank_weights(4, 2), [3 / 6, 2 / 6, 1 / 6, 0.0])


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_random(seed):
    rng = np.random.default_rng(seed)
    m = 6
    gold = rng.random(m)
    # Half the cases draw proxies from a few values so that ties (including ties at the top) are common.
    proxy = rng.integers(0, 3, size=m).astype(float) if seed % 2 else rng.normal(size=m)
    for n in range(1, m + 1):
        assert expected_best_of_n(gold, proxy, n) == pytest.approx(brute_force_bon(gold, proxy, n), abs=1e-12)


def test_all_tied_proxy_is_mean_gold_for_every_n():
    gold = np.array([0.1, 0.9, 0.4, 0.6, 0.0])
    for n in range(1, 6):
        assert expected_best_of_n(gold, np.zeros(5), n) == pytest.approx(gold.mean(), abs=1e-12)


def test_n1_is_mean_gold_and_nM_is_argmax_gold():
    rng = np.random.default_rng(0)
    gold, proxy = rng.random(16), rng.normal(size=16)
    assert expected_best_of_n(gold, proxy, 1) == pytest.approx(gold.mean(), abs=1e-12)
    assert expected_best_of_n(gold, proxy, 16) == pytest.approx(gold[np.argmax(proxy)], abs=1e-12)
    # With a tie at the top, n = M averages the tied maxima.
    proxy = np.array([1.0, 3.0, 2.0, 3.0])
    gold = np.array([0.5, 0.2, 0.9, 0.6])
    assert expected_best_of_n(gold, proxy, 4) == pytest.approx(0.4, abs=1e-12)


def test_large_m_is_finite_and_consistent():
    m = 400
    for n in (1, 2, 16, 200, 400):
        w = bon_rank_weights(m, n)
        assert np.isfinite(w).all() and (w >= 0).all()
        assert w.sum() == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(1)
    gold, proxy = rng.random(m), rng.normal(size=m)
    assert expected_best_of_n(gold, proxy, m) == pytest.approx(gold[np.argmax(proxy)], abs=1e-9)
    assert expected_best_of_n(gold, proxy, 1) == pytest.approx(gold.mean(), abs=1e-9)


def test_oracle_dominates_rm_pick_and_is_monotone():
    rng = np.random.default_rng(2)
    gold = rng.random((20, 16))
    proxy = gold + rng.normal(scale=0.5, size=gold.shape)
    prev = -math.inf
    for n in range(1, 17):
        rm = best_of_n_per_prompt(gold, proxy, n)
        oracle = best_of_n_per_prompt(gold, gold, n)
        assert (oracle >= rm - 1e-12).all()
        assert oracle.mean() >= prev - 1e-12
        prev = oracle.mean()


@pytest.mark.parametrize("n", [0, -1, 7, 2.0, True])
def test_bad_n_raises(n):
    with pytest.raises(ValueError, match="n"):
        expected_best_of_n(np.zeros(6), np.zeros(6), n)


def test_shape_and_nan_errors():
    with pytest.raises(ValueError, match="same shape"):
        expected_best_of_n(np.zeros(3), np.zeros(4), 1)
    with pytest.raises(ValueError, match="NaN"):
        expected_best_of_n(np.zeros(3), np.array([0.0, np.nan, 1.0]), 1)


def _toy_eval():
    rng = np.random.default_rng(3)
    domains = ["Factuality"] * 3 + ["Precise IF"] * 2 + ["Math"] * 4
    gold = rng.random((9, 16))
    proxy = np.round(gold + rng.normal(scale=0.3, size=gold.shape), 1)  # rounding makes ties
    return gold, proxy, domains


def test_bon_metrics_keys_and_values():
    gold, proxy, domains = _toy_eval()
    ns = (1, 2, 4, 8, 16)
    m = bon_metrics(gold, proxy, domains, ns)
    expected_keys = {f"bon/{k}_{n}" for k in ("gold", "oracle", "gain") for n in ns}
    expected_keys |= {f"bon/{d}/{k}_{n}" for d in set(domains) for k in ("gold", "oracle", "gain") for n in ns}
    assert set(m) == expected_keys
    assert "bon/Precise IF/gold_4" in m
    for n in ns:
        per = [expected_best_of_n(gold[i], proxy[i], n) for i in range(9)]
        assert m[f"bon/gold_{n}"] == pytest.approx(np.mean(per), abs=1e-12)
        assert m[f"bon/gain_{n}"] == pytest.approx(m[f"bon/gold_{n}"] - m["bon/gold_1"], abs=1e-12)
        assert m[f"bon/Math/gold_{n}"] == pytest.approx(np.mean(per[5:]), abs=1e-12)
        assert m[f"bon/Precise IF/gain_{n}"] == pytest.approx(
            np.mean(per[3:5]) - np.mean(gold[3:5]), abs=1e-12)
        assert m[f"bon/oracle_{n}"] >= m[f"bon/gold_{n}"] - 1e-12
        orc = [expected_best_of_n(gold[i], gold[i], n) for i in range(9)]
        assert m[f"bon/oracle_{n}"] == pytest.approx(np.mean(orc), abs=1e-12)
    assert m["bon/gain_1"] == 0.0
    assert m["bon/oracle_1"] == pytest.approx(gold.mean(), abs=1e-12)


def test_bon_metrics_gain_without_n1_and_errors():
    gold, proxy, domains = _toy_eval()
    m = bon_metrics(gold, proxy, domains, ns=(4,))
    assert m["bon/gain_4"] == pytest.approx(m["bon/gold_4"] - gold.mean(), abs=1e-12)
    with pytest.raises(ValueError, match="1 <= n <= M"):
        bon_metrics(gold, proxy, domains, ns=(1, 32))
    with pytest.raises(ValueError, match="domain labels"):
        bon_metrics(gold, proxy, domains[:-1])
    with pytest.raises(ValueError, match="reserved"):
        bon_metrics(gold, proxy, ["overall"] * 9)


def test_curve_table_and_plot(tmp_path):
    gold, proxy, domains = _toy_eval()
    m = bon_metrics(gold, proxy, domains)
    rows = bon_curve_table({**m, "train/loss": 1.0})
    assert rows[0] == {"domain": "overall", "n": 1, "gold": m["bon/gold_1"], "oracle": m["bon/oracle_1"]}
    assert {r["domain"] for r in rows} == {"overall", "Factuality", "Precise IF", "Math"}
    assert len(rows) == 4 * 5
    pif = [r for r in rows if r["domain"] == "Precise IF"]
    assert [r["n"] for r in pif] == [1, 2, 4, 8, 16]
    assert pif[2]["gold"] == m["bon/Precise IF/gold_4"]

    for src, name in ((m, "a.png"), (rows, "b.png")):
        out = plot_bon_curves(src, tmp_path / "sub" / name)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bon_extra_metrics_hand_worked():
    from rmexp.bon import bon_extra_metrics

    gold = [[0.0, 1.0], [1.0, 1.0]]
    proxy = [[0.0, 1.0], [1.0, 0.0]]
    m = bon_extra_metrics(gold, proxy, (2,))
    # best-of-2 picks sample 1 (gold 1) and sample 0 (gold 1); gold_1 = 0.5 and 1: gains 0.5 and 0
    # SE over prompts: sd([0.5, 0], ddof=1) / sqrt(2) = 0.353553 / 1.414214 = 0.25
    assert m["bon/gain_2_se"] == pytest.approx(0.25)
    # proxy of the pick (1, 1) minus the mean proxy (0.5, 0.5)
    assert m["bon/proxy_gain_2"] == pytest.approx(0.5)
    assert set(m) == {"bon/gain_2_se", "bon/proxy_gain_2"}
