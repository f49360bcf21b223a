"""Data sources: on-policy pairs from a zoo policy, and real-schema preference rows."""
from __future__ import annotations

import pytest

from rmexp import data
from tests.conftest import compose_config


def test_on_policy_pairs_are_sampled_labelled_by_gold_and_cached(world, zoo_cache, monkeypatch):
    cfg = compose_config(["preset=tiny", f"cache_dir={zoo_cache}", "data.on_policy=toy_llama_xs_sft",
                          "data.size=60"])
    rows = data.preference_rows(cfg, world)
    assert len(rows) == 60
    by_key = {p.key: p for d in world.domains for p in world.prompts(d, "train")}
    for r in rows:
        p = by_key[r["prompt_key"]]
        assert world.gold(p, r["chosen"]) == r["gold_chosen"] > r["gold_rejected"] == world.gold(p, r["rejected"])
    # Second call: read from the cache, no sampling.
    from rmexp import zoo
    monkeypatch.setattr(zoo, "sample", lambda *a, **k: pytest.fail("resampled cached on-policy data"))
    assert data.preference_rows(cfg, world) == rows


def test_conversational_rows_are_normalised():
    rows = data.normalise_preference_rows([
        {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": "x"},
    ])
    assert rows[0]["prompt"] == "hi" and rows[0]["chosen"] == "hello" and rows[0]["rejected"] == "go away"
    assert rows[1] == {"id": "x", "prompt": "2+2?", "chosen": "4", "rejected": "5", "domain": "files"}


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "chosen": "a"}, "row 0: missing column 'rejected'"),
    ({"chosen": "a", "rejected": "b"}, "row 0: no prompt"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, "row 0: chosen must be a string or a list of chat messages"),
])
def test_bad_rows_are_named(row, message):
    with pytest.raises(data.DataSourceError, match=message):
        data.normalise_preference_rows([row])


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(data.DataSourceError, match="does not exist"):
        data.read_rows(str(tmp_path / "nope.jsonl"))
