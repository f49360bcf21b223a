"""`python -m rmexp.world export|report`: files read back equal the in-memory rows; the exported RB2
benchmark is scored end to end by `python -m rmexp.bench score`; bad input exits 2 with one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rmexp.bench import score_rb1, score_rb2
from rmexp.world import DOMAINS, World, preferences, rb1_rows, rb2_rows
from rmexp.world.__main__ import main

PY = sys.executable
EVEN = {d: 1.0 for d in DOMAINS}

# (--what, extra argv, the rows computed in memory with the same settings)
CASES = {
    "rb2": (["--rows-per-subset", "6", "--seed", "3"], lambda w: rb2_rows(w, 6, 3)),
    "rb1": (["--rows-per-subset", "4", "--seed", "3"], lambda w: rb1_rows(w, 3, max_per_subset=4)),
    "preferences": (["--size", "40", "--seed", "3", "--label-noise", "0.3"],
                    lambda w: preferences(w, 40, EVEN, 0.3, 3)),
    "corpus": (["--size", "30", "--seed", "3"], lambda w: [{"text": t} for t in w.pretraining_docs(EVEN, 30, 3)]),
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_parquet(path: Path, cache: Path) -> list[dict]:
    """Through `datasets`, the loader the real-world path uses (rmexp.data.read_rows)."""
    import datasets

    return list(datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(cache)))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("what", list(CASES))
def test_export_round_trip(what, suffix, tmp_path, capsys):
    extra, expected = CASES[what]
    out = tmp_path / f"{what}{suffix}"
    assert main(["export", "--what", what, "--out", str(out), "--world-seed", "1", *extra]) == 0
    rows = expected(World(1))
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and str(len(rows)) in printed[0] and str(out) in printed[0]
    back = read_jsonl(out) if suffix == ".jsonl" else read_parquet(out, tmp_path / "hf_cache")
    assert back == rows
    assert [list(r) for r in back] == [list(r) for r in rows]  # column order too
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [out.name]  # no temp file left
    if what == "rb2":  # the list columns and the metadata struct kept their types
        assert all(isinstance(r["chosen"], list) and isinstance(r["additional_metadata"], dict) for r in back)


def test_parquet_schema_of_rb2(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "rb2.parquet"
    assert main(["export", "--what", "rb2", "--out", str(out), "--rows-per-subset", "2"]) == 0
    schema = pq.read_schema(out)
    assert schema.names == ["id", "prompt", "chosen", "rejected", "num_correct", "num_incorrect",
                            "total_completions", "models", "subset", "additional_metadata"]
    assert schema.field("chosen").type == pa.list_(pa.string())
    assert schema.field("models").type == pa.list_(pa.string())
    assert schema.field("num_correct").type == pa.int64()
    assert pa.types.is_struct(schema.field("additional_metadata").type)


def test_export_mix_and_label_noise(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    assert main(["export", "--what", "corpus", "--out", str(corpus), "--size", "40", "--mix", '{"Math": 1}']) == 0
    docs = [r["text"] for r in read_jsonl(corpus)]
    assert len(docs) == 40 and all(" plus " in d or " minus " in d for d in docs)
    prefs = tmp_path / "prefs.jsonl"
    assert main(["export", "--what", "preferences", "--out", str(prefs), "--size", "30",
                 "--mix", '{"Safety": 2, "Focus": 0}', "--label-noise", "1.0"]) == 0
    rows = read_jsonl(prefs)
    assert {r["domain"] for r in rows} == {"Safety"} and all(r["flipped"] for r in rows)
    assert all(r["gold_chosen"] < 1.0 and r["gold_rejected"] == 1.0 for r in rows)


def _with_length_scores(rows: list[dict]) -> list[dict]:
    return [{**r, "scores_chosen": [len(c.split()) for c in r["chosen"]],
             "scores_rejected": [len(c.split()) for c in r["rejected"]]} for r in rows]


def test_rb2_export_scored_by_the_bench_cli(tmp_path):
    out = tmp_path / "rb2.jsonl"
    assert main(["export", "--what", "rb2", "--out", str(out), "--rows-per-subset", "8"]) == 0
    scored = _with_length_scores(read_jsonl(out))
    scores_file = tmp_path / "scores.jsonl"
    scores_file.write_text("".join(json.dumps(r) + "\n" for r in scored), encoding="utf-8")
    proc = subprocess.run([PY, "-m", "rmexp.bench", "score", "--format", "rb2", str(scores_file)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    expected = score_rb2(_with_length_scores(rb2_rows(World(0), 8, 0))).scores
    assert set(cli) == set(DOMAINS) | {"overall"}
    assert cli["overall"] == pytest.approx(expected["overall"])
    assert all(cli[d] == pytest.approx(expected[d]) for d in DOMAINS)
    # The parquet export scores the same.
    pq_out = tmp_path / "rb2.parquet"
    assert main(["export", "--what", "rb2", "--out", str(pq_out), "--rows-per-subset", "8"]) == 0
    from_parquet = score_rb2(_with_length_scores(read_parquet(pq_out, tmp_path / "hf_cache"))).scores
    assert from_parquet["overall"] == pytest.approx(expected["overall"])


def test_rb1_export_scored_by_the_bench_cli(tmp_path, capsys):
    from rmexp.bench import main as bench_main

    out = tmp_path / "rb1.jsonl"
    assert main(["export", "--what", "rb1", "--out", str(out)]) == 0
    rows = [{**r, "score_chosen": len(r["chosen"]), "score_rejected": len(r["rejected"])} for r in read_jsonl(out)]
    scores_file = tmp_path / "scores.jsonl"
    scores_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    capsys.readouterr()
    assert bench_main(["score", "--format", "rb1", str(scores_file)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["overall"] == pytest.approx(score_rb1(rows).scores["overall"])


@pytest.mark.parametrize("argv,needle", [
    (["--what", "rb2", "--out", "x.csv"], "suffix"),
    (["--what", "rb2", "--out", "noext"], "suffix"),
    (["--what", "rb2", "--out", "x.jsonl", "--size", "3"], "--size"),
    (["--what", "rb1", "--out", "x.jsonl", "--label-noise", "0.1"], "--label-noise"),
    (["--what", "preferences", "--out", "x.jsonl", "--label-noise", "1.5"], "--label-noise"),
    (["--what", "corpus", "--out", "x.jsonl", "--mix", '{"Maths": 1}'], "Maths"),
    (["--what", "corpus", "--out", "x.jsonl", "--mix", '{"Math": -1}'], "Math"),
    (["--what", "corpus", "--out", "x.jsonl", "--mix", '{"Math": 0}'], "positive"),
    (["--what", "corpus", "--out", "x.jsonl", "--mix", "[1, 2]"], "--mix"),
    (["--what", "rb2", "--out", "x.parquet", "--rows-per-subset", "0"], "--rows-per-subset"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bad_suffix_exit_status_of_the_process(tmp_path):
    proc = subprocess.run([PY, "-m", "rmexp.world", "export", "--what", "rb2", "--out", str(tmp_path / "x.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and ".csv" in proc.stderr
    assert not (tmp_path / "x.csv").exists()


def test_report_text_and_json(tmp_path, capsys):
    path = tmp_path / "report.json"
    assert main(["report", "--world-seed", "0", "--rows-per-subset", "10", "--json", str(path)]) == 0
    text = capsys.readouterr().out
    rep = json.loads(path.read_text())
    world = World(0)
    for d in DOMAINS:
        assert rep["splits"][d] == {"train": len(world.prompts(d, "train")),
                                    "heldout": len(world.prompts(d, "heldout"))}
        assert d in text
    rb2 = rb2_rows(world, 10, 0)
    rb1 = rb1_rows(world, 0)
    assert rep["rb2"]["rows"] == len(rb2) == 60
    assert all(rep["rb2"]["subsets"][d]["rows"] == 10 for d in DOMAINS)
    assert rep["rb2"]["distinct_prompts"] == len({r["prompt"] for r in rb2})
    assert rep["rb1"]["pairs"] == len(rb1)
    assert sum(v["pairs"] for v in rep["rb1"]["subsets"].values()) == len(rb1)
    assert rep["decontamination"]["exact"] == 0 and rep["decontamination"]["ngram"] == 0
    assert all(rep["rb2"]["subsets"][d]["chance"] == 0.25 for d in DOMAINS if d != "Ties")
    # Accuracies are in [0, 1]; the official Ties score has a tanh margin term and can dip below 0.
    assert all(0.0 <= v["longer"] <= 1.0 for d, v in rep["rb2"]["subsets"].items() if d != "Ties")
    assert -1.0 <= rep["rb2"]["subsets"]["Ties"]["longer"] <= 1.0
    assert "RewardBench 2" in text and "RewardBench 1" in text and "decontamination" in text
