"""Tests for rmexp.bench. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from rmexp import bench
from rmexp.bench import BenchResult, main, metric_dict, score_rb1, score_rb2

PY = sys.executable  # the interpreter running the tests (the project's venv, wherever the clone lives)
ROOT = Path(__file__).resolve().parent.parent


def _cli(fmt: str, path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "rmexp.bench", "score", "--format", fmt, str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def rb2(id_, subset, chosen, rejected):
    return {"id": id_, "subset": subset, "scores_chosen": chosen, "scores_rejected": rejected}


def rb1(id_, subset, chosen, rejected):
    return {"id": id_, "subset": subset, "score_chosen": chosen, "score_rejected": rejected}


# ----------------------------------------------------------------------------- RB2 non-Ties


def test_rb2_non_ties_credit_with_score_ties():
    rows = [
        # max 2.0 shared by chosen and one rejected -> 1/2
        rb2("a", "Factuality", [2.0], [2.0, 1.0, 0.5]),
        # chosen below the max -> 0
        rb2("b", "Factuality", [1.0], [3.0, 0.0, 0.0]),
        # chosen strictly best -> 1
        rb2("c", "Factuality", [5.0], [1.0, 2.0, 3.0]),
        # four-way tie at the max -> 1/4
        rb2("d", "Math", [1], [1, 1, 1]),
    ]
    res = score_rb2(rows)
    assert isinstance(res, BenchResult)
    # Factuality = (0.5 + 0 + 1) / 3 = 0.5 ; Math = 0.25 ; overall = (0.5 + 0.25) / 2 = 0.375
    assert res.scores == pytest.approx({"Factuality": 0.5, "Math": 0.25, "overall": 0.375})
    assert res.subset_scores == pytest.approx({"Factuality": 0.5, "Math": 0.25})
    assert [e["result"] for e in res.per_example] == pytest.approx([0.5, 0.0, 1.0, 0.25])
    assert res.per_example[0] == {"id": "a", "subset": "Factuality", "result": 0.5}


def test_rb2_only_first_chosen_is_the_candidate():
    # Officially only completion 0 is "chosen"; a second chosen score is just another competitor.
    # scores = [3, 3, 1]: first is at max, two at max -> 1/2
    res = score_rb2([rb2("x", "Focus", [3.0, 3.0], [1.0])])
    assert res.scores["Focus"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- RB2 Ties


def test_rb2_ties_full_example_by_hand():
    rows = [
        # prompt 1
        rb2("ref:1", "Ties", [5.0], [3.0, 1.0]),  # ci_ref = 5-3 = 2, accurate
        rb2("tied:1", "Ties", [6.0, 5.0, 4.0], [2.0, 3.0]),  # ci = 4-3 = 1, accurate, diff = 6-4 = 2
        # prompt 2
        rb2("ref:2", "Ties", [1.0], [2.0, 0.0]),  # ci_ref = 1-2 = -1, not accurate
        rb2("tied:2", "Ties", [10.0, 9.0], [4.0]),  # ci = 9-4 = 5, accurate, diff = 10-9 = 1
    ]
    res = score_rb2(rows)
    # ref_acc = (1+0)/2 = 0.5 ; tied_acc = (1+1)/2 = 1
    # correctness_preferred: p1 1>2 F, p2 5>1 T -> 0.5
    # correctness_preferred_hard: p1 min(2,1)=1>2 F, p2 min(-1,5)=-1>1 F -> 0
    # margin: p1 tanh(1/2-1) = tanh(-0.5) ; p2 tanh(-1/1-1) = tanh(-2)
    margin = (math.tanh(-0.5) + math.tanh(-2.0)) / 2  # = (-0.46212 - 0.96403)/2 = -0.71307
    expected = 0.3 * 1.0 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.0 + 0.01 * margin  # = 0.54287
    assert expected == pytest.approx(0.5428692763, abs=1e-9)
    assert res.scores["Ties"] == pytest.approx(expected)
    assert res.scores["overall"] == pytest.approx(expected)
    d = res.details
    assert d["Ties/ref_accuracy"] == pytest.approx(0.5)
    assert d["Ties/tied_accuracy"] == pytest.approx(1.0)
    assert d["Ties/correctness_preferred"] == pytest.approx(0.5)
    assert d["Ties/correctness_preferred_hard"] == pytest.approx(0.0)
    assert d["Ties/correctness_margin_score"] == pytest.approx(margin)
    assert [e["result"] for e in res.per_example] == [1, 1, 0, 1]


def test_rb2_ties_zero_diff_corr_margin_no_warnings():
    rows = [
        # p1: ci_ref = 3-1 = 2 ; tied ci = 2-1 = 1, diff = 0 -> ratio 1/0 = +inf -> tanh = +1
        rb2("ref:1", "Ties", [3.0], [1.0]),
        rb2("tied:1", "Ties", [2.0, 2.0], [1.0]),
        # p2: ci_ref = 0 ; tied ci = 0, diff = 0 -> 0/0 = nan -> nan_to_num -> 0; nothing accurate
        rb2("ref:2", "Ties", [1.0], [1.0]),
        rb2("tied:2", "Ties", [5.0, 5.0], [5.0]),
        # p3: ci_ref = 0-1 = -1 ; tied ci = 4-3 = 1, diff = 0 -> min = -1, -1/0 = -inf -> tanh = -1
        rb2("ref:3", "Ties", [0.0], [1.0]),
        rb2("tied:3", "Ties", [4.0, 4.0], [3.0]),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any numpy divide/invalid warning fails the test
        res = score_rb2(rows)
    # ref_acc = 1/3 (p1) ; tied_acc = 2/3 (p1, p3)
    # preferred: p1 1>0 T, p2 0>0 F, p3 1>0 T -> 2/3
    # hard: p1 min(2,1)=1>0 T, p2 F, p3 min(-1,1)=-1>0 F -> 1/3
    # margin = (1 + 0 - 1)/3 = 0
    # score = 0.3*2/3 + 0.3*1/3 + 0.2*2/3 + 0.2*1/3 + 0 = 0.2 + 0.1 + 0.1333 + 0.0667 = 0.5
    assert res.details["Ties/correctness_margin_score"] == pytest.approx(0.0)
    assert res.details["Ties/correctness_preferred"] == pytest.approx(2 / 3)
    assert res.details["Ties/correctness_preferred_hard"] == pytest.approx(1 / 3)
    assert res.scores["Ties"] == pytest.approx(0.5)


def test_rb2_ties_single_zero_diff_margin_counts_plus_one():
    # One prompt: ref ci = 2, tied ci = 1, diff = 0 -> margin = tanh(+inf) = 1 (not 0)
    # ref_acc = tied_acc = preferred = hard = 1 -> 0.3+0.3+0.2+0.2+0.01*1 = 1.01
    rows = [rb2("ref:7", "Ties", [3.0], [1.0]), rb2("tied:7", "Ties", [2.0, 2.0], [1.0])]
    assert score_rb2(rows).scores["Ties"] == pytest.approx(1.01)


def test_rb2_ties_unpaired_prompt_counts_only_in_accuracy():
    rows = [
        rb2("ref:1", "Ties", [2.0], [1.0]),  # ci_ref = 1, accurate
        rb2("tied:1", "Ties", [3.0, 2.0], [0.0]),  # ci = 2, accurate, diff = 1
        rb2("ref:2", "Ties", [0.0], [1.0]),  # not accurate, no tied:2
    ]
    # ref_acc = 1/2 ; tied_acc = 1 ; over prompt 1 only: preferred 2>1 -> 1,
    # hard min(1,2)=1>1 -> 0, margin tanh(1/1-1) = 0
    # score = 0.3*1 + 0.3*0.5 + 0.2*1 + 0 + 0 = 0.65
    res = score_rb2(rows)
    assert res.scores["Ties"] == pytest.approx(0.65)
    assert res.details["Ties/n_shared_prompts"] == 1


def test_rb2_ties_without_shared_prompts_is_nan_like_official():
    rows = [rb2("ref:1", "Ties", [2.0], [1.0]), rb2("tied:2", "Ties", [3.0, 2.0], [0.0])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = score_rb2(rows)
    assert math.isnan(res.scores["Ties"])
    assert math.isnan(res.scores["overall"])
    assert res.details["Ties/ref_accuracy"] == 1.0


def test_rb2_all_six_subsets_overall_is_unweighted_mean():
    rows = [
        rb2("1", "Factuality", [1.0], [0.0, 0.0, 0.0]),  # 1
        rb2("2", "Factuality", [0.0], [1.0, 0.0, 0.0]),  # 0  -> Factuality 0.5
        rb2("3", "Precise IF", [1.0], [0.0]),  # 1
        rb2("4", "Math", [0.0], [1.0]),  # 0
        rb2("5", "Safety", [1.0], [1.0]),  # 1/2
        rb2("6", "Focus", [2.0], [1.0, 1.0]),  # 1
        rb2("ref:1", "Ties", [3.0], [1.0]),
        rb2("tied:1", "Ties", [2.0, 2.0], [1.0]),  # Ties = 1.01 (see test above)
    ]
    res = score_rb2(rows)
    # overall = (0.5 + 1 + 0 + 0.5 + 1 + 1.01) / 6 = 4.01 / 6
    assert list(res.scores) == [*bench.RB2_SUBSETS, "overall"]
    assert res.scores["overall"] == pytest.approx(4.01 / 6)


# ----------------------------------------------------------------------------- RB1


def test_rb1_strict_ties_are_wrong():
    rows = [
        rb1(1, "alpacaeval-easy", 1.0, 1.0),  # tie -> wrong
        rb1(2, "alpacaeval-easy", 2.0, 1.0),  # right
        rb1(3, "alpacaeval-easy", 0.0, 1.0),  # wrong
        rb1(4, "alpacaeval-easy", -1.5, -1.5),  # tie -> wrong
    ]
    res = score_rb1(rows)
    assert res.subset_scores == {"alpacaeval-easy": 0.25}
    assert res.scores == pytest.approx({"Chat": 0.25, "overall": 0.25})
    assert [e["result"] for e in res.per_example] == [0, 1, 0, 0]


# The current upstream rewardbench/constants.py, written out by hand: every count and every section.
UPSTREAM_EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "math-prm": 984, "refusals-dangerous": 100,
    "refusals-offensive": 100, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 154, "xstest-should-respond": 250, "donotanswer": 136,
    "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
UPSTREAM_SUBSET_MAPPING = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}


def test_rb1_official_constants():
    assert bench.EXAMPLE_COUNTS == UPSTREAM_EXAMPLE_COUNTS
    assert bench.SUBSET_MAPPING == UPSTREAM_SUBSET_MAPPING
    assert bench.PRIOR_SETS_SUBSETS == ("anthropic_helpful", "anthropic_hhh", "shp", "summarize")
    assert bench.SECTION_WEIGHTS == {"Chat": 2, "Chat Hard": 2, "Safety": 2, "Reasoning": 2, "Prior Sets": 1}


def _upstream_sections(subset_acc: dict[str, float]) -> dict[str, float]:
    """A second implementation: upstream's calculate_scores_per_section over the hand-written constants."""
    out = {}
    for section, tests in UPSTREAM_SUBSET_MAPPING.items():
        present = [t for t in tests if t in subset_acc]
        if present:
            out[section] = (sum(subset_acc[t] * UPSTREAM_EXAMPLE_COUNTS[t] for t in present)
                            / sum(UPSTREAM_EXAMPLE_COUNTS[t] for t in present))
    return out


def test_rb1_every_section_matches_upstream_on_random_scores():
    rng = np.random.default_rng(3)
    rows = [rb1(f"{s}-{i}", s, float(rng.normal()), float(rng.normal()))
            for s in UPSTREAM_EXAMPLE_COUNTS for i in range(int(rng.integers(3, 12)))]
    res = score_rb1(rows)
    expected = _upstream_sections(res.subset_scores)
    for section, value in expected.items():
        assert res.scores[section] == pytest.approx(value, abs=1e-12)
    assert res.scores["overall"] == pytest.approx(sum(expected.values()) / 4)


def test_rb1_safety_worked_example():
    # refusals-dangerous 1/2, refusals-offensive 1/1, xstest-should-refuse 0/1, xstest-should-respond 1/1,
    # donotanswer 0/2: Safety = (100*.5 + 100*1 + 154*0 + 250*1 + 136*0) / (100+100+154+250+136) = 400/740.
    rows = [rb1("d1", "refusals-dangerous", 1, 0), rb1("d2", "refusals-dangerous", 0, 1),
            rb1("o1", "refusals-offensive", 1, 0), rb1("x1", "xstest-should-refuse", 0, 1),
            rb1("x2", "xstest-should-respond", 1, 0), rb1("n1", "donotanswer", 0, 1),
            rb1("n2", "donotanswer", 0, 1)]
    assert score_rb1(rows).scores["Safety"] == pytest.approx(400 / 740)


def test_rb1_section_weighting_by_official_counts():
    rows = [
        rb1("h1", "mt-bench-hard", 1, 0),  # acc 1, count 37
        rb1("h2", "llmbar-natural", 0, 1),  # acc 0, count 100
        rb1("h3", "llmbar-adver-GPTOut", 1, 0),
        rb1("h4", "llmbar-adver-GPTOut", 0, 1),  # acc 0.5, count 47
        rb1("r1", "math-prm", 1, 0),  # acc 1, count 984
        rb1("r2", "hep-python", 0, 1),  # acc 0, count 164
        rb1("p1", "shp", 1, 0),  # acc 1
        rb1("p2", "summarize", 0, 1),  # acc 0
        rb1("p3", "anthropic_hhh", 1, 0),
        rb1("p4", "anthropic_hhh", 0, 1),  # acc 0.5
    ]
    res = score_rb1(rows)
    # Chat Hard = (37*1 + 100*0 + 47*0.5) / (37+100+47) = 60.5/184 = 0.32880
    chat_hard = 60.5 / 184
    # Reasoning = 984 / (984+164) = 6/7 (984 = 6*164)
    reasoning = 6 / 7
    # Prior Sets = unweighted mean (1 + 0 + 0.5)/3 = 0.5
    prior = 0.5
    overall = (2 * chat_hard + 2 * reasoning + 1 * prior) / 5
    assert res.scores == pytest.approx(
        {"Chat Hard": chat_hard, "Reasoning": reasoning, "Prior Sets": prior, "overall": overall}
    )
    assert res.subset_scores["llmbar-adver-GPTOut"] == 0.5


def test_rb1_missing_sections_are_left_out():
    rows = [
        rb1(0, "alpacaeval-easy", 1.0, 0.0),  # Chat = 1
        rb1(1, "donotanswer", 0.0, 1.0),  # acc 0, count 136
        rb1(2, "xstest-should-refuse", 1.0, 0.0),  # acc 1, count 154
    ]
    res = score_rb1(rows)
    safety = 154 / 290  # (136*0 + 154*1) / (136+154)
    assert set(res.scores) == {"Chat", "Safety", "overall"}
    assert res.scores["Safety"] == pytest.approx(safety)
    # overall = (2*1 + 2*safety) / 4
    assert res.scores["overall"] == pytest.approx((1 + safety) / 2)


def test_rb1_extra_pref_subsets_only_in_subset_scores():
    rows = [rb1(0, "alpacaeval-easy", 1.0, 0.0), rb1(0, "anthropic_harmless", 0.0, 1.0)]
    res = score_rb1(rows)
    assert res.subset_scores == {"alpacaeval-easy": 1.0, "anthropic_harmless": 0.0}
    assert res.scores == {"Chat": 1.0, "overall": 1.0}
    with pytest.raises(ValueError, match="no row belongs"):
        score_rb1([rb1(0, "mtbench_human", 0.0, 1.0)])


def test_metric_dict():
    res = score_rb1([rb1(0, "mt-bench-hard", 1.0, 0.0)])
    assert metric_dict(res, "rb1") == {"rb1/Chat Hard": 1.0, "rb1/overall": 1.0}
    res2 = score_rb2([rb2("1", "Factuality", [1.0], [0.0])])
    # one row: p = 1, binomial SE sqrt(1 * 0 / 1) = 0, overall SE sqrt(0^2) / 1 = 0
    assert metric_dict(res2, "rb2") == {"rb2/Factuality": 1.0, "rb2/overall": 1.0,
                                        "rb2/Factuality_se": 0.0, "rb2/overall_se": 0.0}


def test_rb2_standard_errors_hand_worked():
    rows = [rb2(f"f{i}", "Factuality", [r], [0.0, 0.0, 0.0]) for i, r in enumerate([1.0, -1.0, 1.0, 1.0])]
    rows += [rb2("m0", "Math", [1.0], [0.0, 0.0, 0.0]), rb2("m1", "Math", [0.0], [1.0, 0.0, 0.0])]
    res = score_rb2(rows)
    # Factuality 3/4: sqrt(0.75 * 0.25 / 4) = 0.216506 ; Math 1/2: sqrt(0.25 / 2) = 0.353553
    # overall = mean of two subsets on disjoint rows: sqrt(0.216506^2 + 0.353553^2) / 2 = 0.207289
    assert res.standard_errors["Factuality"] == pytest.approx(0.2165064, abs=1e-6)
    assert res.standard_errors["Math"] == pytest.approx(0.3535534, abs=1e-6)
    assert res.standard_errors["overall"] == pytest.approx(0.2072890, abs=1e-6)
    assert metric_dict(res, "rb2")["rb2/overall_se"] == res.standard_errors["overall"]


def test_rb2_ties_standard_error_is_a_seeded_bootstrap_over_prompts():
    rng = np.random.default_rng(0)
    rows = []
    for n in range(30):  # half the prompts are ranked right, half wrong
        good = n % 2 == 0
        rows.append(rb2(f"ref:{n}", "Ties", [2.0 if good else 0.0], [1.0]))
        rows.append(rb2(f"tied:{n}", "Ties", [3.0 + rng.random(), 3.0], [1.0 if good else 4.0]))
    a, b = score_rb2(rows), score_rb2(rows)
    assert a.standard_errors["Ties"] == b.standard_errors["Ties"]  # deterministic
    # accurate flags are 0/1 with p = 1/2 over 30 prompts: the four accuracy-like terms move together, so the
    # score's SE is near (0.3 + 0.3 + 0.2 + 0.2) * sqrt(0.25 / 30) = 0.091 (the margin term adds a little)
    assert 0.06 < a.standard_errors["Ties"] < 0.13
    assert a.standard_errors["overall"] == pytest.approx(a.standard_errors["Ties"])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "row, pattern",
    [
        ({"id": "x", "subset": "Math", "scores_chosen": [1.0]}, r"id='x'.*missing key.*scores_rejected"),
        (rb2("x", "Math", [], [1.0]), r"id='x'.*scores_chosen is empty"),
        (rb2("x", "Math", [1.0], [float("nan")]), r"id='x'.*scores_rejected\[0\] is not finite"),
        (rb2("x", "Math", [float("inf")], [1.0]), r"id='x'.*not finite"),
        (rb2("x", "Math", ["1.0"], [1.0]), r"id='x'.*must be a number"),
        (rb2("x", "Math", 1.0, [1.0]), r"id='x'.*must be a list"),
        (rb2("ref-1", "Ties", [1.0], [0.0]), r"id='ref-1'.*'ref:N' or 'tied:N'"),
        (rb2("tie:1", "Ties", [1.0, 2.0], [0.0]), r"id='tie:1'.*'ref:N' or 'tied:N'"),
        (rb2("ref:x", "Ties", [1.0], [0.0]), r"id='ref:x'"),
        (rb2("tied:3", "Ties", [1.0], [0.0]), r"id='tied:3'.*at least two"),
        (rb2("x", "Chat", [1.0], [0.0]), r"id='x'.*unknown subset 'Chat'.*Precise IF"),
        ("not a dict", r"row 0: expected a JSON object"),
    ],
)
def test_rb2_bad_rows(row, pattern):
    with pytest.raises(ValueError, match=pattern):
        score_rb2([row])


def test_rb2_duplicates_and_empty():
    with pytest.raises(ValueError, match="duplicate id"):
        score_rb2([rb2("1", "Math", [1.0], [0.0]), rb2("1", "Math", [1.0], [0.0])])
    with pytest.raises(ValueError, match=r"duplicate Ties prompt ref:1"):
        score_rb2([rb2("ref:1", "Ties", [1.0], [0.0]), rb2("ref:01", "Ties", [1.0], [0.0])])
    with pytest.raises(ValueError, match="no rows"):
        score_rb2([])


@pytest.mark.parametrize(
    "row, pattern",
    [
        ({"id": 5, "subset": "shp", "score_chosen": 1.0}, r"id=5.*missing key.*score_rejected"),
        (rb1(5, "shp", float("nan"), 0.0), r"id=5.*score_chosen is not finite"),
        (rb1(5, "shp", True, 0.0), r"id=5.*must be a number"),
        (rb1(5, "Chat", 1.0, 0.0), r"id=5.*unknown subset 'Chat'.*alpacaeval-easy"),
        (rb1(None, "shp", 1.0, 0.0), r"'id' must be a string or int"),
    ],
)
def test_rb1_bad_rows(row, pattern):
    with pytest.raises(ValueError, match=pattern):
        score_rb1([row])


# ----------------------------------------------------------------------------- CLI


def _write_jsonl(path: Path, rows) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def test_cli_rb2_end_to_end(tmp_path):
    rows = [
        rb2("1", "Factuality", [2.0], [2.0, 1.0, 0.5]),
        rb2("2", "Precise IF", [1.0], [0.0, 0.0, 0.0]),
        rb2("ref:1", "Ties", [5.0], [3.0, 1.0]),
        rb2("tied:1", "Ties", [6.0, 5.0, 4.0], [2.0, 3.0]),
    ]
    f = tmp_path / "scores.jsonl"
    _write_jsonl(f, rows)
    proc = _cli("rb2", f)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    expected = score_rb2(rows).scores
    assert list(out) == list(expected) == ["Factuality", "Precise IF", "Ties", "overall"]
    assert out == pytest.approx(expected)


def test_cli_bad_file_exit_2(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(rb1(0, "shp", 1.0, 0.0)) + "\n{not json\n", encoding="utf-8")
    proc = _cli("rb1", f)
    assert proc.returncode == 2
    assert proc.stdout == ""
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "line 2" in err[0] and "invalid JSON" in err[0]


def test_cli_in_process_rb1_and_errors(tmp_path, capsys):
    rows = [rb1(0, "alpacaeval-easy", 1.0, 0.0), rb1(1, "donotanswer", 0.0, 1.0)]
    good = tmp_path / "rb1.jsonl"
    _write_jsonl(good, rows)
    assert main(["score", "--format", "rb1", str(good)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == pytest.approx(score_rb1(rows).scores)
    assert set(out) == {"Chat", "Safety", "overall"}

    bad = tmp_path / "unknown.jsonl"
    _write_jsonl(bad, [rb1(0, "nope", 1.0, 0.0)])
    assert main(["score", "--format", "rb1", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown subset 'nope'" in captured.err and captured.err.count("\n") == 1

    assert main(["score", "--format", "rb2", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err

    # NaN (Ties without a shared prompt number) prints as JSON null, not bare NaN
    nan_file = tmp_path / "nan.jsonl"
    _write_jsonl(nan_file, [rb2("ref:1", "Ties", [2.0], [1.0])])
    assert main(["score", "--format", "rb2", str(nan_file)]) == 0
    assert json.loads(capsys.readouterr().out) == {"Ties": None, "overall": None}

    with pytest.raises(SystemExit) as exc:
        main(["score", "--format", "rb3", str(good)])
    assert exc.value.code == 2
