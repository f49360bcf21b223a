"""The offline real-path fixtures: files in the published schemas, a real-architecture model, and the
pad == eos pitfall (the reward must be read at the last real token, not at the first pad/eos)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rmexp.fixtures import trial_command
from rmexp.tasks import TASKS, load_items


@pytest.fixture(scope="module")
def fx(fixture_files):
    return fixture_files


def test_task_files_load_and_their_reference_answers_score_one(fx):
    for name in ("gsm8k", "math", "popqa"):
        items = load_items(name, str(fx[name]), split="test", size=0, seed=0)
        assert items, name
    gsm = load_items("gsm8k", str(fx["gsm8k"]), split="test", size=0, seed=0)
    # The reference's worked answer ends in '#### 1,234'-style numbers: the checker must accept them.
    rows = [line for line in fx["gsm8k"].read_text().splitlines()]
    assert all(TASKS["gsm8k"].gold(i, json.loads(r)["answer"]) == 1.0 for i, r in zip(gsm, rows))
    maths = load_items("math", str(fx["math"]), split="test", size=0, seed=0)
    assert all(TASKS["math"].gold(i, json.loads(r)["solution"]) == 1.0
               for i, r in zip(maths, fx["math"].read_text().splitlines()))
    assert load_items("ifeval", str(fx["ifeval"]), split="train", size=0, seed=0)


def test_model_is_a_real_architecture_with_pad_equal_eos(fx):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(fx["model"]))
    assert AutoConfig.from_pretrained(str(fx["model"])).model_type == "qwen2"
    assert tok.pad_token_id == tok.eos_token_id
    assert (fx["model"] / "model.safetensors").exists()
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert "model.path=" in trial_command(fx) and "benchmark.rb2_path=" in trial_command(fx)


def test_reward_read_at_last_real_token_when_pad_is_eos(fx):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rmexp.rm import last_token_rewards, pad_batch

    tok = AutoTokenizer.from_pretrained(str(fx["model"]))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(fx["model"]), num_labels=1).eval()
    model.config.pad_token_id = tok.pad_token_id
    # Two different completions that both end in eos (== pad): different texts must score differently.
    texts = [f"the answer is four{tok.eos_token}", f"the answer is five, surely{tok.eos_token}"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert ids[0][-1] == ids[1][-1] == tok.eos_token_id
    with torch.no_grad():
        padded = last_token_rewards(model, *pad_batch(ids, tok.pad_token_id))
        alone = torch.cat([last_token_rewards(model, *pad_batch([x], tok.pad_token_id)) for x in ids])
    assert padded[0] != padded[1]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~60 s on 2 busy cores: a subprocess, the RM trained, RB2/RB1 and BoN
def test_printed_command_runs_a_real_path_trial(fx, tmp_path):
    """The command `python -m rmexp.fixtures` prints, run as printed: one FINISHED run with RB2 and RB1 scores and
    best-of-N of the fixture policy on the gsm8k file, gold from the GSM8K checker."""
    import os
    import shlex
    import subprocess
    import sys

    import mlflow

    from rmexp.bon import bon_metrics

    argv = shlex.split(trial_command(fx))
    assert argv[:3] == ["python", "-m", "rmexp"]
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, *argv[1:], f"cache_dir={tmp_path / 'cache'}"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FINISHED"]
    metrics = runs[0].data.metrics
    assert {"rb2/overall", "rb1/overall", "eval/acc", "bon/gold_16", "bon/gain_16"} <= set(metrics)
    bon_keys = [k for k in metrics if k.startswith("bon/")]
    assert all(math.isfinite(metrics[k]) for k in ["rb2/overall", *bon_keys])
    assert runs[0].data.params["task"] == "gsm8k" and runs[0].data.params["policy"] == "hf"
    assert "task-gsm8k" in {d.dataset.name for d in runs[0].inputs.dataset_inputs}
    # The logged per-sample gold is the GSM8K checker's, recomputed here from the task file and the logged samples,
    # and the BoN curve follows from it and the logged RM scores.
    art = Path(client.download_artifacts(runs[0].info.run_id, "bon_samples.jsonl", str(tmp_path)))
    logged = [json.loads(line) for line in art.read_text().splitlines()]
    items = {i.key: i for i in load_items("gsm8k", str(fx["gsm8k"]), split="test", size=0, seed=0)}
    assert len(logged) == len(items) and all(len(r["samples"]) == 16 for r in logged)
    gold = np.array([[TASKS["gsm8k"].gold(items[r["key"]], s) for s in r["samples"]] for r in logged])
    assert gold.tolist() == [r["gold"] for r in logged]
    assert all(r["prompt"] == items[r["key"]].prompt for r in logged)
    again = bon_metrics(gold, np.array([r["proxy"] for r in logged]), ["gsm8k"] * len(logged), (1, 2, 4, 8, 16))
    for n in (1, 2, 4, 8, 16):
        assert metrics[f"bon/gold_{n}"] == pytest.approx(again[f"bon/gold_{n}"], abs=1e-12)
        assert metrics[f"bon/gain_{n}"] == pytest.approx(again[f"bon/gain_{n}"], abs=1e-12)
