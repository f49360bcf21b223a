"""Data sources: on-policy pairs from a zoo policy, and real-schema preference rows."""
from __future__ import annotations

import json

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


def _files_cfg(tmp_path, rows: list[dict], *extra: str):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return compose_config(["data=files", f"data.path={path}", *extra]), str(path)


def test_conversational_rows_are_normalised_through_the_data_config(tmp_path):
    cfg, path = _files_cfg(tmp_path, [
        {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": "x"},
    ])
    rows = data.preference_rows(cfg, None)
    assert rows[0]["prompt"] == "hi" and rows[0]["chosen"] == "hello" and rows[0]["rejected"] == "go away"
    assert rows[1] == {"id": f"{path}:x", "prompt": "2+2?", "chosen": "4", "rejected": "5", "domain": path}


def test_data_path_keeps_the_first_rows_in_file_order(tmp_path):
    cfg, _ = _files_cfg(tmp_path, [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(10)],
                        "data.size=4")
    assert [r["prompt"] for r in data.preference_rows(cfg, None)] == ["q0", "q1", "q2", "q3"]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "chosen": "a"}, "row 0: missing column 'rejected'"),
    ({"chosen": "a", "rejected": "b"}, "row 0: no prompt"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, "row 0: chosen must be a string or a list of chat messages"),
])
def test_bad_rows_are_named(tmp_path, row, message):
    cfg, path = _files_cfg(tmp_path, [row])
    with pytest.raises(data.DataSourceError, match=f"^data.path: {path} {message}"):
        data.preference_rows(cfg, None)


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(data.DataSourceError, match="does not exist"):
        data.read_rows(str(tmp_path / "nope.jsonl"))
