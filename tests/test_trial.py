"""One trial end to end on the tiny preset, and the real-world path on local files and a local model."""
from __future__ import annotations

import json

import pytest

from rmexp import trial
from rmexp.config import validate
from rmexp.rm import classifier
from rmexp.world.data import rb1_rows, rb2_rows
from tests.conftest import compose_config

REQUIRED = ["rb2/overall", "rb2/Factuality", "rb2/Precise IF", "rb2/Math", "rb2/Safety", "rb2/Focus", "rb2/Ties",
            "rb1/overall", "bon/gain_8", "train/loss", "eval/acc", "decontam/overlap"]


def _run(overrides, out_dir):
    cfg = compose_config(overrides)
    validate(cfg)
    return trial.run_trial(cfg, out_dir, progress=lambda msg: None)


@pytest.fixture(scope="module")
def tiny(zoo_cache, tmp_path_factory):
    return _run(["preset=tiny", f"cache_dir={zoo_cache}"], tmp_path_factory.mktemp("tiny"))


def test_tiny_preset_end_to_end(tiny):
    for key in REQUIRED:
        assert key in tiny.metrics, key
    assert 0.0 <= tiny.metrics["rb2/Factuality"] <= 1.0
    names = {p.name for p in tiny.artifacts}
    assert {"rb2_scores.jsonl", "rb1_scores.jsonl", "bon_samples.jsonl", "bon_curves.png", "metrics.json"} <= names
    assert "model:" in (tiny.artifacts[0].parent / "config.yaml").read_text()  # the resolved config beside them
    assert tiny.params["model"] == "toy_llama_xs" and tiny.params["lineage"] == "same"
    assert len(tiny.history["train/loss"]) == tiny.metrics["train/steps"]
    # BoN: the oracle curve never falls below the RM's pick.
    assert tiny.metrics["bon/oracle_8"] >= tiny.metrics["bon/gold_8"]


def test_per_example_scores_reproduce_the_metrics(tiny):
    """The rb2_scores.jsonl artifact is in the `rmexp.bench score` format and rescoring it gives rb2/*."""
    from rmexp.bench import score_rb2

    path = next(p for p in tiny.artifacts if p.name == "rb2_scores.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert score_rb2(rows).scores["overall"] == pytest.approx(tiny.metrics["rb2/overall"])


def test_cached_rm_gives_the_same_metrics(tiny, zoo_cache, tmp_path, monkeypatch):
    """Rerunning the same trial loads the cached RM and samples: no training, metrics identical."""
    monkeypatch.setattr(classifier, "train_reward_model", lambda *a, **k: pytest.fail("retrained a cached RM"))
    again = _run(["preset=tiny", f"cache_dir={zoo_cache}", "data.seed=0", "train.seed=0"], tmp_path)
    for key in REQUIRED:
        assert again.metrics[key] == tiny.metrics[key], key


def test_downstream_change_reuses_the_rm_and_data_change_does_not(tiny, zoo_cache, tmp_path, monkeypatch):
    calls = []
    real = classifier.train_reward_model
    monkeypatch.setattr(classifier, "train_reward_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    _run(["preset=tiny", f"cache_dir={zoo_cache}", "downstream.bon.n_samples=4"], tmp_path / "a")
    assert calls == []  # only BoN changed: the RM comes from the cache
    _run(["preset=tiny", f"cache_dir={zoo_cache}", "data.size=2990"], tmp_path / "b")
    assert calls == [1]  # other preference rows: another RM


def test_retraining_from_scratch_is_deterministic(zoo_cache, tmp_path, tiny):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(zoo_cache / "zoo", cache / "zoo")  # reuse bases, retrain the RM, resample BoN
    again = _run(["preset=tiny", f"cache_dir={cache}"], tmp_path / "out")
    for key in REQUIRED:
        assert again.metrics[key] == tiny.metrics[key], key


def test_compiled_rm_training_gives_the_eager_packed_trial_to_rounding(zoo_cache, tmp_path):
    """train.compile=true through the whole trial: the RM trains through the compiled base (its own cache entry)
    and every RM and benchmark metric matches the eager packed trial's to float rounding (measured: 1e-8)."""
    from torch._dynamo.utils import counters

    common = ["preset=tiny", f"cache_dir={zoo_cache}", "downstream.bon.enabled=false", "train.packing=true"]
    eager = _run(common, tmp_path / "eager")
    counters.clear()
    compiled = _run([*common, "train.compile=true"], tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] == 1  # the base, once (fullgraph: a graph break would have raised)
    assert compiled.params["train.compile"] == "True" and eager.params["train.compile"] == "False"
    keys = [k for k in eager.metrics if k.startswith(("rb2/", "rb1/", "train/", "eval/")) and "seconds" not in k
            and "per_s" not in k]
    assert len(keys) > 20
    for key in keys:
        assert compiled.metrics[key] == pytest.approx(eager.metrics[key], rel=1e-5, abs=1e-6), key


def test_a_graph_break_under_train_compile_is_one_clear_error(zoo_cache, tmp_path, monkeypatch):
    """A base that does not compile as one graph (here: activation checkpointing, a real graph break) stops the RM's
    training with a line that names the option, instead of training partly eager under a compiled key."""
    real = classifier.compile_base

    def checkpointed(model):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return real(model)

    monkeypatch.setattr(classifier, "compile_base", checkpointed)
    with pytest.raises(RuntimeError, match=r"train.compile=true: the base model does not compile as one graph on cpu "
                                            r"\(.+\); train it with train.compile=false"):
        _run(["preset=tiny", f"cache_dir={zoo_cache}", "train.packing=true", "train.compile=true",
              "downstream.bon.enabled=false", "data.size=400"], tmp_path / "out")


def test_flipped_labels_make_a_worse_than_chance_rm(tiny, zoo_cache, tmp_path):
    flipped = _run(["preset=tiny", f"cache_dir={zoo_cache}", "data.label_noise=1.0"], tmp_path)
    assert flipped.metrics["data/label_noise_realised"] == 1.0
    # RB2 is best-of-4: chance is 0.25 on the five non-Ties subsets. The tiny preset's xs RM sat near chance on
    # world v2's RB2 (0.21 vs 0.20 flipped; v3: 0.38), so only the direction is checked there; the held-out pairs carry
    # the effect.
    assert tiny.metrics["rb2/overall"] > flipped.metrics["rb2/overall"]
    assert tiny.metrics["eval/acc"] > 0.5 > flipped.metrics["eval/acc"]


def test_fail_stage_hook_raises_in_that_stage(zoo_cache, tmp_path):
    with pytest.raises(trial.InjectedFailure, match="stage 'bench'"):
        _run(["preset=tiny", f"cache_dir={zoo_cache}", "fail_stage=bench"], tmp_path)


def test_trial_key_ignores_where_it_runs_but_not_the_thread_count():
    a = compose_config(["preset=tiny"])
    b = compose_config(["preset=tiny", "tracking.uri=sqlite:////tmp/x.db", "ray.cpus_per_trial=2"])
    c = compose_config(["preset=tiny", "train.epochs=1"])
    assert trial.trial_key(a) == trial.trial_key(b) != trial.trial_key(c)
    # The test hook is not part of what a trial computes.
    assert trial.trial_key(compose_config(["preset=tiny", "fail_stage=bon"])) == trial.trial_key(a)
    # torch threads change the last bits of every result (rmexp.config.torch_threads): part of the identity
    assert trial.trial_key(compose_config(["preset=tiny", "threads=2"])) != trial.trial_key(a)
    sweep1 = compose_config(["+sweep=smoke"])
    sweep2 = compose_config(["+sweep=smoke", "ray.cpus_per_trial=2"])
    assert trial.trial_key(sweep1) != trial.trial_key(sweep2)
    assert trial.trial_key(sweep1) == trial.trial_key(compose_config(["+sweep=smoke", "threads=4"]))


def test_trial_keys_are_pinned(monkeypatch):
    """Every study's results are keyed by these hashes: a change that moves them reruns every trial of every study, so
    it must be deliberate (update the literals with the reason). Numerics are fixed here (they vary by machine); the
    literals were computed at 0278abf, before model.rm_lr existed, and are unchanged by it."""
    monkeypatch.setattr(trial, "numerics", lambda: {"threads": 1, "cpu": "AVX2", "mkl_cbwr": "AVX2", "torch": "pinned",
                                                     "transformers": "pinned"})
    assert trial.trial_key(compose_config([])) == "9a45e0da918faf76"
    assert trial.trial_key(compose_config(["+sweep=base_models", "model=toy_gpt2_m", "seed=3"])) == "59adc6faf5ddb222"


def test_the_rm_rate_comes_from_the_base_recipe_and_keys_by_the_rate_used():
    """train.lr defaults to the model's rm_lr (8-layer bases train at 2e-4, the rest at 5e-4); a train.lr override
    wins; the key holds the rate the RM trains at, so rm_lr alone does not make another trial."""
    xl, m = compose_config(["model=toy_gpt2_xl"]), compose_config(["model=toy_gpt2_m"])
    assert (xl.train.lr, m.train.lr, compose_config(["model=random_gpt2_xl"]).train.lr) == (2e-4, 5e-4, 2e-4)
    assert [compose_config(["model=toy_gpt2_xl", f"rm={kind}"]).rm.lr for kind in ("orm", "prm")] == [2e-4, 2e-4]
    forced = compose_config(["model=toy_gpt2_xl", "train.lr=5e-4"])
    assert forced.train.lr == 5e-4
    assert trial.trial_key(forced) == trial.trial_key(compose_config(["model=toy_gpt2_xl", "model.rm_lr=5e-4"]))
    assert trial.trial_key(forced) != trial.trial_key(xl)
    assert trial.trial_key(compose_config(["model=toy_gpt2_xl", "model.rm_lr=1e-4"])) != trial.trial_key(xl)


# The default tiny trial's metrics. The registry refactor (issue 8) was checked to leave them unchanged (same values
# before and after it, main at 9e169c3 -> the contracts merge); they were re-pinned once after the changes that
# move them on purpose, all merged together: world v2 (WORLD_VERSION 2), fused AdamW (RM_VERSION 4), the KV-cache
# sampler (SAMPLER_VERSION 2); bon/gain_16 again for the inverse-CDF draws (SAMPLER_VERSION 3: other samples; the RM
# metrics stayed); rb2/overall again when the CPU numerics were pinned (rmexp/__init__.py: ATen at AVX2, MKL_CBWR=AVX2;
# unpinned, this AVX-512 machine gave 0.2095530756918521, the machine of the earlier pins 0.20955308692020577; the
# other three were equal on both); all four again for WORLD_VERSION 3 (checked statements in the corpus, 4x the
# pretraining steps; 2026-12-05). Produced by run_trial on `preset=tiny` with a fresh cache, CPU, 1 torch thread:
#   compose_config(["preset=tiny", f"cache_dir={fresh}"]) -> validate -> trial.run_trial, read at full precision
PINNED_TINY = {
    "eval/acc": 0.6024844720496895,
    "rb2/overall": 0.37927361370523444,
    "rb1/overall": 0.6353270309570793,
    "bon/gain_16": -0.07129629629629622,
}


def test_default_tiny_trial_metrics_are_pinned(tiny):
    for key, value in PINNED_TINY.items():
        assert tiny.metrics[key] == pytest.approx(value, abs=1e-9, rel=0), key


# PPO on the tiny preset, pinned the same way (preset=tiny downstream.ppo.enabled=true, fresh cache).
# PPO's rewards come from the RM's scoring path: re-pinned when that path became `grouped` scoring (rmexp.rm.scoring,
# equal to the padded path to ~1e-7), which moved ppo/kl by 3e-8 and ppo/train_reward by 1e-7; gold and proxy stayed.
# Re-pinned for SAMPLER_VERSION 3 (other rollouts; the tiny preset's 4 eval prompts a domain and 16 BoN samples kept),
# and when the CPU numerics were pinned (AVX2 kernels; unpinned on an AVX-512 machine PPO's trajectory moved to
# ppo/kl 0.0101, ppo/proxy -0.133: last-bit differences grow over PPO's steps); all four again for WORLD_VERSION 3,
# and again when downstream.ppo.kl_coef became 1.0 (2026-12-06; the RM metrics above stayed to the last bit).
PINNED_TINY_PPO = {
    "ppo/gold": 0.3611111111111111,
    "ppo/kl": 0.09027549054978105,
    "ppo/proxy": -0.1702852941690606,
    "ppo/train_reward": -0.372711718082428,
}


# The default trial (toy_llama_s RM, 8000 pairs, BoN over the s SFT policy), re-pinned when the default RM rate
# became 5e-4, and bon/gain_16 again when BoN became 64 samples on every held-out prompt with the version-3 sampler
# (the RM metrics stayed), from the `+sweep=base_models sweep.replicates=2` trial `model=toy_llama_s,seed=0` (trial
# key e34838be9e9c22d8, the default config's: seed 0, one torch thread; read back from its MLflow run at full
# precision). A cold cache builds the s base and its SFT first: minutes on 2 cores. rb2/overall and bon/gain_16
# re-pinned under the pinned CPU numerics (docs/reproducibility.md), from the regenerated study's trial
# `model=toy_llama_s,seed=0` (key 889463bd0a34a009, the default config's; 2026-12-05); eval/acc and rb1/overall
# came out equal to the earlier machine's to the last bit. All four re-pinned for WORLD_VERSION 3 from the cold `make
# run`'s trial `model=toy_llama_s` (seed 0; 2026-12-05).
PINNED_DEFAULT = {
    "eval/acc": 0.7829181494661922,
    "rb2/overall": 0.5062333969709676,
    "rb1/overall": 0.746750910609244,
    "bon/gain_16": 0.03969615413487593,
}


@pytest.mark.slow
def test_default_trial_metrics_are_pinned(zoo_cache, tmp_path):
    out = _run([f"cache_dir={zoo_cache}"], tmp_path)
    for key, value in PINNED_DEFAULT.items():
        assert out.metrics[key] == pytest.approx(value, abs=1e-9, rel=0), key


@pytest.mark.slow
def test_tiny_trial_with_ppo_metrics_are_pinned(zoo_cache, tmp_path):
    out = _run(["preset=tiny", f"cache_dir={zoo_cache}", "downstream.ppo.enabled=true"], tmp_path)
    for key, value in {**PINNED_TINY, **PINNED_TINY_PPO}.items():
        assert out.metrics[key] == pytest.approx(value, abs=1e-9, rel=0), key


# ---------------------------------------------------------------------------------------------------
# The real-world path: a local save_pretrained model, preference files in the public schemas.
def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_real_world_path_with_local_model_and_files(world, zoo_cache, tmp_path):
    import pandas as pd

    from rmexp import zoo
    from rmexp.config import load_model_config
    from rmexp.world.data import preferences

    # A "hub model": any save_pretrained directory (here a zoo base copied elsewhere).
    src = zoo.model_path(load_model_config("toy_llama_xs"), world, zoo_cache, progress=False)
    model, tok = zoo.load_causal_lm(src)
    model.save_pretrained(tmp_path / "local-model")
    tok.save_pretrained(tmp_path / "local-model")
    # Preferences in TRL's conversational format (chat messages), RB2 as jsonl, RB1 as parquet.
    prefs = [{"chosen": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}],
              "rejected": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["rejected"]}]}
             for r in preferences(world, 600, {"Safety": 1.0, "Focus": 1.0}, 0.0, 0)]
    _write_jsonl(tmp_path / "prefs.jsonl", prefs)
    _write_jsonl(tmp_path / "rb2.jsonl", rb2_rows(world, 4, 0))
    pd.DataFrame(rb1_rows(world, 0, max_per_subset=3)).to_parquet(tmp_path / "rb1.parquet")
    result = _run(["model=hf", f"model.path={tmp_path / 'local-model'}", "model.family=llama",
                   "data=files", f"data.path={tmp_path / 'prefs.jsonl'}", "data.size=600", "train.epochs=2",
                   "train.lr=3e-3",  # the tiny preset's rate: 34 steps on 600 pairs (the default 5e-4 is for 8000)
                   "benchmark=rewardbench2", f"benchmark.rb2_path={tmp_path / 'rb2.jsonl'}",
                   f"benchmark.rb1_path={tmp_path / 'rb1.parquet'}", "downstream.bon.enabled=false",
                   f"cache_dir={tmp_path / 'cache'}"], tmp_path / "out")
    m = result.metrics
    assert 0.0 <= m["rb2/overall"] <= 1.01 and 0.0 <= m["rb1/overall"] <= 1.0
    assert m["train/n_pairs"] + m["eval/n"] == 600 and m["decontam/overlap"] == 0.0
    # Safety/Focus pairs from clean labels are easy: the RM on the local model must learn them.
    # Measured (train.lr=3e-3): train/acc 0.70, eval/acc 0.79, train/loss 0.576 (< log 2 = 0.693).
    assert m["train/acc"] > 0.6 and m["eval/acc"] > 0.55 and m["train/loss"] < 0.65


def test_contaminated_benchmark_is_refused(world, zoo_cache, tmp_path):
    from rmexp.world.data import preferences

    prefs = preferences(world, 200, {"Safety": 1.0}, 0.0, 0)
    planted = rb2_rows(world, 4, 0)
    planted[0] = {**planted[0], "prompt": prefs[0]["prompt"]}  # a training prompt in the benchmark
    _write_jsonl(tmp_path / "rb2.jsonl", planted)
    _write_jsonl(tmp_path / "prefs.jsonl", [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in prefs])
    with pytest.raises(trial.DecontaminationError, match="1 exact"):
        _run(["preset=tiny", f"cache_dir={zoo_cache}", "data=files", f"data.path={tmp_path / 'prefs.jsonl'}",
              "benchmark=rewardbench2", f"benchmark.rb2_path={tmp_path / 'rb2.jsonl'}", "benchmark.rb1_path=null",
              "benchmark.decontam_max_overlap=0.0"], tmp_path / "out")


def test_offline_hub_dataset_gives_one_clear_error(zoo_cache, tmp_path):
    from rmexp.config import ConfigError

    # refused by validate(), before any work: the data is read when the config is checked
    with pytest.raises(ConfigError, match="data.path: could not load dataset 'no-such-org/no-such-data'.*local copy"):
        _run(["preset=tiny", f"cache_dir={zoo_cache}", "data=files", "data.path=no-such-org/no-such-data"],
             tmp_path)


def test_a_registered_rm_kind_plugs_into_the_trial(zoo_cache, tmp_path, monkeypatch):
    """Any Scorer works: a 'longer is better' kind scores RewardBench exactly as the length baseline does, and
    PPO refuses it (no value model) with one line before training."""
    from dataclasses import dataclass

    import numpy as np

    from rmexp.bench import score_rb1
    from rmexp.rm import RM_KINDS, RMKind
    from rmexp.world.core import World
    from rmexp.world.data import rb1_length_scores, word_count

    @dataclass
    class WordCount:
        tok: object = None
        kind = "wordcount"

        def score(self, prompts, responses, batch_tokens=4096):
            return np.array([word_count(r) for r in responses], dtype=np.float64)

        def describe(self):
            return {"kind": self.kind, "params": 0, "metrics": {}, "history": {}}

        def value_init(self):
            return None

    @dataclass
    class NoOptions:
        pass

    monkeypatch.setitem(RM_KINDS, "wordcount", RMKind("wordcount", NoOptions, lambda ctx: WordCount()))
    out = _run(["preset=tiny", f"cache_dir={zoo_cache}", "rm.kind=wordcount"], tmp_path / "a")
    assert f"{out.metrics['rb2/overall']:.4f}" == out.params["length_baseline.rb2.overall"]
    rb1 = rb1_rows(World(0), 0)
    assert out.metrics["rb1/overall"] == pytest.approx(score_rb1(rb1_length_scores(rb1)).scores["overall"], abs=1e-12)
    assert "bon/gain_16" in out.metrics and out.params["rm.kind"] == "wordcount" and "eval/acc" not in out.metrics
    with pytest.raises(ValueError, match="rm=wordcount offers no value-model initialisation"):
        _run(["preset=tiny", f"cache_dir={zoo_cache}", "rm.kind=wordcount", "downstream.ppo.enabled=true"],
             tmp_path / "b")


def test_seed_drives_every_per_trial_stage_and_the_key():
    a, b = compose_config(["preset=tiny"]), compose_config(["preset=tiny", "seed=1"])
    assert (b.data.seed, b.train.seed, b.downstream.ppo.seed) == (1, 1, 1)
    assert (b.world.seed, b.benchmark.seed, b.model.seed) == (a.world.seed, a.benchmark.seed, a.model.seed) == (0, 0, 0)
    assert trial.trial_key(a) != trial.trial_key(b)
    assert trial.trial_key(compose_config(["preset=tiny", "data.seed=0", "train.seed=0"])) == trial.trial_key(a)


def test_trial_logs_its_seed_and_standard_errors(tiny):
    import math

    import numpy as np

    from rmexp.stats import binomial_se

    assert tiny.params["seed"] == "0"
    path = next(p for p in tiny.artifacts if p.name == "rb2_scores.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    facts = [r["result"] for r in rows if r["subset"] == "Factuality"]
    assert tiny.metrics["rb2/Factuality_se"] == pytest.approx(binomial_se(facts))
    assert 0 < tiny.metrics["rb2/overall_se"] < 0.2
    bon_rows = [json.loads(line) for line in
                next(p for p in tiny.artifacts if p.name == "bon_samples.jsonl").read_text().splitlines()]
    gold, proxy = np.array([r["gold"] for r in bon_rows]), np.array([r["proxy"] for r in bon_rows])
    from rmexp.bon import best_of_n_per_prompt

    gains = best_of_n_per_prompt(gold, proxy, 16) - gold.mean(axis=1)
    assert tiny.metrics["bon/gain_16_se"] == pytest.approx(gains.std(ddof=1) / math.sqrt(len(gains)))


def test_thread_count_is_part_of_every_cache_key():
    """1 and 2 torch threads give different last bits (benchmarks/thread_identity.py), so cached zoo models, RMs,
    samples and trial keys are keyed by the thread count instead of being shared across it."""
    import torch

    from rmexp import zoo
    from rmexp.config import load_model_config, torch_threads

    cfg = load_model_config("toy_llama_xs")
    before, key1 = torch.get_num_threads(), zoo.zoo_key(cfg, 0)
    try:
        torch.set_num_threads(2)
        assert torch_threads() == 2 and zoo.zoo_key(cfg, 0) != key1
    finally:
        torch.set_num_threads(before)
    assert zoo.zoo_key(cfg, 0) == key1
