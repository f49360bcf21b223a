"""Real preference layouts, column mapping, per-row margins and source mixes."""
from __future__ import annotations

from collections import Counter

import pytest

from rmexp.prefdata import PreferenceDataError, mix_counts, mix_sources, normalise_rows

U = {"role": "user", "content": "what is 2+2?"}


def test_three_layouts_give_the_same_row():
    strings = {"prompt": "what is 2+2?", "chosen": "4", "rejected": "5"}
    implicit = {"chosen": [U, {"role": "assistant", "content": "4"}],
                "rejected": [U, {"role": "assistant", "content": "5"}]}
    explicit = {"prompt": [U], "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "5"}]}
    got = [normalise_rows([r], "s") for r in (strings, implicit, explicit)]
    for rows in got:
        assert {k: rows[0][k] for k in ("prompt", "chosen", "rejected")} == strings


def test_anthropic_hh_transcripts_split_at_the_last_assistant_turn():
    ctx = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: what is 2+2?"
    row = {"chosen": ctx + "\n\nAssistant: 4", "rejected": ctx + "\n\nAssistant: 5"}
    out = normalise_rows([row], "hh")[0]
    assert (out["prompt"], out["chosen"], out["rejected"]) == (ctx.strip(), "4", "5")


def test_column_mapping_and_margin():
    rows = [{"instruction": "q", "good": "a", "bad": "b", "score_gap": 2.5}]
    out = normalise_rows(rows, "uf", columns={"prompt": "instruction", "chosen": "good", "rejected": "bad"},
                         margin_column="score_gap")
    assert out == [{"id": "uf:0", "prompt": "q", "chosen": "a", "rejected": "b", "domain": "uf", "margin": 2.5}]


@pytest.mark.parametrize("row, pattern", [
    ({"prompt": "q", "chosen": "a"}, r"src row 0: missing column 'rejected'.*map others with data.columns"),
    ({"chosen": [U, {"role": "assistant", "content": "a"}],
      "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]},
     "different prompts"),
    ({"prompt": "q", "chosen": [U], "rejected": "b"}, "must end with an assistant turn"),
    ({"chosen": "a", "rejected": "b"}, "no prompt"),
    ({"prompt": "q", "chosen": 3, "rejected": "b"}, "must be a string or a list of chat messages"),
])
def test_bad_rows_are_named(row, pattern):
    with pytest.raises(PreferenceDataError, match=pattern):
        normalise_rows([row], "src")


def test_bad_margin_is_named():
    with pytest.raises(PreferenceDataError, match=r"margin column 'm' must be a finite number"):
        normalise_rows([{"prompt": "q", "chosen": "a", "rejected": "b", "m": float("nan")}], "s", margin_column="m")


def test_mix_counts_by_largest_remainder():
    assert mix_counts([1, 1, 1], 10) == [4, 3, 3]  # 3.33 each: the first remainder tie gets the extra row
    assert mix_counts([3, 1], 10) == [8, 2]        # 7.5 / 2.5 -> 8 / 2 (tie broken by order)
    assert mix_counts([0.2, 0.8], 5) == [1, 4]
    with pytest.raises(PreferenceDataError):
        mix_counts([0, 0], 5)


def test_mix_draws_the_configured_shares_without_replacement():
    a = [{"id": f"a{i}"} for i in range(100)]
    b = [{"id": f"b{i}"} for i in range(100)]
    rows = mix_sources([("a", a, 0.75), ("b", b, 0.25)], 40, seed=1)
    assert Counter(r["id"][0] for r in rows) == {"a": 30, "b": 10}
    assert len({r["id"] for r in rows}) == 40
    assert rows == mix_sources([("a", a, 0.75), ("b", b, 0.25)], 40, seed=1)
    with pytest.raises(PreferenceDataError, match="has 100 rows but the mix asks for 120"):
        mix_sources([("a", a, 1.0)], 120, seed=0)
