"""The gold source seam (rmexp.gold), the task config group, and hf policies (rmexp.policy): toy = the world as
before; a real task = its items and checker; chat-template queries; stops at the template's end of turn."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rmexp.config import CONF_DIR, ConfigError, validate
from rmexp.gold import TaskGold, ToyGold, gold_source
from rmexp.world.core import WORLD_VERSION
from rmexp.world.domains import DOMAINS
from tests.conftest import compose_config


# ------------------------------------------------------------------------------------------- toy = the world
def test_toy_gold_source_is_the_world_exactly(world):
    import random

    src = gold_source(compose_config(["preset=tiny"]), world)
    assert isinstance(src, ToyGold)
    prompts = src.prompts(5)
    assert prompts == [p for d in DOMAINS for p in world.sample_prompts(d, "heldout", 5)]
    rng = random.Random(0)
    for p in prompts:
        for text in (world.correct(rng, p), world.wrong(rng, p), "", "nonsense words"):
            assert src.gold(p, text) == world.gold(p, text)
    assert src.train_prompts() == {d: world.prompts(d, "train") for d in DOMAINS}
    assert set(src.known()) == {p.text for d in DOMAINS for s in ("train", "heldout") for p in world.prompts(d, s)}
    assert src.identity() == [0, WORLD_VERSION]  # what the BoN sample key held before the seam


# ------------------------------------------------------------------------------------------- a real task
def _gsm8k_cfg(fx, *extra):
    return compose_config(["preset=tiny", "task=gsm8k", f"task.path={fx['gsm8k']}", *extra])


def test_real_task_source_reads_the_file_in_order(fixture_files, world):
    src = gold_source(_gsm8k_cfg(fixture_files), world)
    rows = [json.loads(line) for line in fixture_files["gsm8k"].read_text().splitlines()]
    assert isinstance(src, TaskGold) and src.train_prompts() is None
    assert [p.text for p in src.prompts(3)] == [r["question"] for r in rows[:3]]
    assert {p.domain for p in src.prompts(100)} == {"gsm8k"} and len(src.prompts(100)) == len(rows)
    other = gold_source(_gsm8k_cfg(fixture_files, "task.size=5"), world)  # a seeded sample: other rows
    assert other.identity() != src.identity() and len(other.prompts(100)) == 5


# Samples for the first two fixture problems, gold worked by hand: (20 + 27) * 9 = 423 and (38 + 5) * 4 = 172.
HAND = [
    ("Sam has 20 shells and finds 27 more.", [
        ("They are worth 47 * 9 = 423 points.", 1.0, 0.1),
        ("#### 424", 0.0, 0.9),              # the RM's pick of all four: wrong
        ("423.0", 1.0, 0.5),
        ("Sam has 47 shells.", 0.0, 0.2)]),  # last number 47
    ("Mia has 38 cards and finds 5 more.", [
        ("#### 172", 1.0, 0.3),
        ("The total is 1,720 points", 0.0, 0.1),
        ("43", 0.0, 0.2),
        ("so 43 * 4 = $172", 1.0, 0.8)]),   # the RM's pick: right
]


class _TableRM:
    """Scores each response by a fixed table (the hand-picked proxy above)."""
    kind = "table"

    def __init__(self, table):
        self.table = table

    def score(self, prompts, responses, batch_tokens=4096):
        return np.array([self.table[r] for r in responses], dtype=np.float64)


def test_real_task_bon_uses_the_task_checker(fixture_files, world, tmp_path, monkeypatch):
    from rmexp.downstream import DOWNSTREAM, DownstreamContext
    from rmexp.downstream import bon as bon_method

    cfg = _gsm8k_cfg(fixture_files, "downstream.bon.prompts_per_domain=2", "downstream.bon.n_samples=4")
    validate(cfg)
    src = gold_source(cfg, world)
    prompts = src.prompts(2)
    assert [p.text.startswith(h) for (h, _), p in zip(HAND, prompts)] == [True, True]
    samples = [[s for s, _, _ in rows] for _, rows in HAND]
    monkeypatch.setattr(bon_method, "policy_samples", lambda *a, **k: (prompts, samples, None))
    rm = _TableRM({s: x for _, rows in HAND for s, _, x in rows})
    out = DOWNSTREAM["bon"].run(DownstreamContext(cfg=cfg, world=world, rm=rm, cache=tmp_path / "cache",
                                                  out_dir=tmp_path, progress=False, gold=src))
    logged = [json.loads(line) for line in (tmp_path / "bon_samples.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in logged] == [[g for _, g, _ in rows] for _, rows in HAND]
    assert [r["domain"] for r in logged] == ["gsm8k", "gsm8k"] and [r["key"] for r in logged] == ["0", "1"]
    m = out.metrics
    assert m["bon/gold_1"] == pytest.approx(0.5)    # half of each prompt's samples are right
    assert m["bon/gold_4"] == pytest.approx(0.5)    # the RM picks 424 (0) and $172 (1)
    assert m["bon/oracle_4"] == pytest.approx(1.0)  # both prompts have a right sample
    assert m["bon/gain_4"] == pytest.approx(0.0) and m["bon/gsm8k/gold_4"] == pytest.approx(0.5)


def test_hf_policy_samples_are_cached_by_task_rows(fixture_files, world, tmp_path):
    from rmexp.downstream.bon import policy_samples

    fx = fixture_files
    base = ["downstream.policy.model=hf", f"downstream.policy.path={fx['model']}", "downstream.bon.n_samples=2",
            "downstream.bon.prompts_per_domain=2", "downstream.policy.max_new_tokens=4"]
    cfg = _gsm8k_cfg(fx, *base)
    validate(cfg)
    prompts, samples, pcfg = policy_samples(cfg, world, tmp_path, False)
    assert pcfg.source == "hf" and len(samples) == 2 and all(len(row) == 2 for row in samples)
    assert not any("<|im_end|>" in s or "<|endoftext|>" in s for row in samples for s in row)
    again = policy_samples(cfg, world, tmp_path, False)[1]
    entries = lambda: [p for p in (tmp_path / "samples").iterdir() if p.is_dir()]  # noqa: E731
    assert again == samples and len(entries()) == 1  # read back from the one entry
    policy_samples(_gsm8k_cfg(fx, *base, "task.size=3", "task.seed=1"), world, tmp_path, False)
    assert len(entries()) == 2  # other task rows: other samples


# ------------------------------------------------------------------------------------------- chat template, stops
def test_chat_template_queries_equal_a_hand_built_chatml_string(fixture_files, world):
    from transformers import AutoTokenizer

    from rmexp.policy import queries
    from rmexp.world.core import chat_text
    from rmexp.world.tokenizer import build_tokenizer

    tok = AutoTokenizer.from_pretrained(str(fixture_files["model"]))
    prompt = "Tom has 3 apples. How many?"
    hand = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert queries(tok, [prompt], zoo_policy=False) == [tok(hand, add_special_tokens=False)["input_ids"]]
    assert tok.convert_tokens_to_ids("<|im_start|>") in queries(tok, [prompt], False)[0]  # one id, not pieces
    toy = build_tokenizer(world.vocab)
    text = world.prompts("Math", "heldout")[0].text
    assert queries(toy, [text], zoo_policy=True) == [toy(chat_text(text), add_special_tokens=False)["input_ids"]]


def test_stop_ids_hold_eos_and_the_templates_end_of_turn(fixture_files, world):
    from transformers import AutoTokenizer

    from rmexp.policy import end_of_turn_id, stop_ids
    from rmexp.world.tokenizer import build_tokenizer

    tok = AutoTokenizer.from_pretrained(str(fixture_files["model"]))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tok) == im_end
    assert stop_ids(tok) == sorted({tok.eos_token_id, im_end})
    from transformers import GenerationConfig  # chat models often list several eos ids there

    assert stop_ids(tok, GenerationConfig(eos_token_id=[7, im_end])) == sorted({7, tok.eos_token_id, im_end})
    toy = build_tokenizer(world.vocab)
    assert end_of_turn_id(toy) == toy.eos_token_id  # the toy template closes a turn with eos


def test_sampling_stops_at_any_stop_id():
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rmexp import sampling

    pad, eos = 0, 1
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, pad_token_id=pad, eos_token_id=eos)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)  # sharp: greedy has clear winners
    greedy = dict(max_new_tokens=10, temperature=1e-4, pad_id=pad)
    free = sampling.generate(model, [[5, 6, 7]], eos_id=eos, generator=torch.Generator(), **greedy)[0].tolist()
    cut = next(i for i, t in enumerate(free) if t not in (eos, pad) and i >= 1)  # a token the model emits, not eos
    turn_end = free[cut]
    first = free.index(turn_end)
    stopped = sampling.generate(model, [[5, 6, 7]], eos_id={eos, turn_end}, generator=torch.Generator(),
                                **greedy)[0].tolist()
    assert stopped == free[:first + 1]  # the same tokens up to the end-of-turn, then the row ends


# ------------------------------------------------------------------------------------------- config
TASK_FILES = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def test_the_task_group_has_toy_and_every_registered_task():
    from rmexp.tasks import TASKS

    assert TASK_FILES == sorted(["toy", *TASKS])
    assert compose_config([]).task.name == "toy"  # the default


@pytest.mark.parametrize("name", TASK_FILES)
def test_every_task_config_composes_and_validates(name, fixture_files):
    from omegaconf import OmegaConf

    cfg = compose_config(["preset=tiny", f"task={name}"])
    assert cfg.task.name == name and cfg.task.seed == 0  # a fixed seed, not the trial's
    first = (CONF_DIR / "task" / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("# python -m rmexp task=" + name)
    if name == "toy":
        validate(cfg)
        assert cfg.task.path is None
        return
    assert "/" in cfg.task.path  # the real hub id by default
    local = compose_config(["preset=tiny", f"task={name}", f"task.path={fixture_files[name]}"])
    validate(local)
    assert OmegaConf.select(local, "task.path") == str(fixture_files[name])


def test_gsm8k_config_names_the_hub_config_main():
    cfg = compose_config(["task=gsm8k"])
    assert (cfg.task.path, cfg.task.subset, cfg.task.split) == ("openai/gsm8k", "main", "test")


@pytest.mark.parametrize("overrides, message", [
    (["task.name=nope"], "task.name='nope' is not allowed; choose one of ['toy', 'gsm8k', 'ifeval', 'math', 'popqa']"),
    (["task.path=/x.jsonl"], "task.path='/x.jsonl' is not allowed; it applies to real tasks only"),
    (["task=gsm8k", "task.path=null"], "task.path=None is not allowed; task=gsm8k needs a hub dataset id"),
    (["task=gsm8k", "task.size=-1"], "task.size=-1 is not allowed"),
    (["downstream.policy.model=hf"], "downstream.policy.path=None is not allowed"),
    (["downstream.policy.path=/some/dir"], "it applies to hf policies only"),
])
def test_bad_task_and_policy_values(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["preset=tiny", *overrides]))
    assert message in str(err.value)


def test_rl_on_a_real_task_needs_its_train_items(fixture_files):
    for method in ("ppo", "rlvr"):
        with pytest.raises(ConfigError, match=f"downstream.{method}.enabled=True is not allowed; {method} trains on "
                                              f"the task's prompts and task=gsm8k has none: set task.train_path"):
            validate(_gsm8k_cfg(fixture_files, f"downstream.{method}.enabled=true"))
        validate(_gsm8k_cfg(fixture_files, f"downstream.{method}.enabled=true",
                            f"task.train_path={fixture_files['gsm8k_train']}"))
    validate(_gsm8k_cfg(fixture_files, "downstream.dpo.enabled=true"))  # DPO only evaluates on the task


def test_task_train_items_are_the_rl_prompts_and_never_eval_prompts(fixture_files, world):
    from rmexp import preflight

    cfg = _gsm8k_cfg(fixture_files, f"task.train_path={fixture_files['gsm8k_train']}", "downstream.rlvr.enabled=true")
    src = gold_source(cfg, world)
    rows = [json.loads(line) for line in fixture_files["gsm8k_train"].read_text().splitlines()]
    train = src.train_prompts()["gsm8k"]
    assert [p.text for p in train] == [r["question"] for r in rows] and len(train) == 48
    assert not {p.text for p in train} & {p.text for p in src.prompts(1000)}
    first = rows[0]["answer"].rsplit("####", 1)[1].strip()  # e.g. "1,104": the checker reads commas
    assert src.gold(train[0], f"So the total is #### {first}") == 1.0
    assert src.gold(train[0], "So the total is #### 7") == 0.0
    assert src.known()[train[0].text] is train[0]  # the RLVR verifier finds train prompts by text
    preflight.reset_memo()
    with pytest.raises(ConfigError, match=r"task.train_path=.*gsm8k.jsonl' shares 24 prompt\(s\) with the eval items"):
        validate(_gsm8k_cfg(fixture_files, f"task.train_path={fixture_files['gsm8k']}", "downstream.rlvr.enabled=true"))


def test_ppo_and_rlvr_run_on_a_real_task_with_an_hf_policy(fixture_files, tmp_path):
    from rmexp.trial import run_trial

    fx = fixture_files
    cfg = compose_config(["preset=tiny", "model=hf", f"model.path={fx['model']}", "data=files",
                          f"data.path={fx['preferences']}", "task=gsm8k", f"task.path={fx['gsm8k']}",
                          f"task.train_path={fx['gsm8k_train']}", "downstream.policy.model=hf",
                          f"downstream.policy.path={fx['model']}", "downstream.bon.enabled=false",
                          "downstream.ppo.enabled=true", "downstream.rlvr.enabled=true", f"cache_dir={tmp_path / 'c'}"])
    validate(cfg)
    m = run_trial(cfg, tmp_path / "out", progress=lambda msg: None).metrics
    for key in ("ppo/gold", "ppo/kl", "rlvr/gold", "rlvr/kl"):
        assert np.isfinite(m[key]), key
    assert 0.0 <= m["ppo/gold"] <= 1.0 and 0.0 <= m["rlvr/gold"] <= 1.0


def test_ppo_refuses_a_policy_whose_tokenizer_differs_from_the_rms(fixture_files, tmp_path):
    cfg = compose_config(["preset=tiny", "downstream.policy.model=hf", f"downstream.policy.path={fixture_files['model']}",
                          "downstream.ppo.enabled=true", f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(ConfigError, match=r"needs one tokenizer for the RM and the policy: the RM's base "
                                          r"'toy_llama_xs' has \d+ tokens, the policy '.*model' 1024"):
        validate(cfg)
    assert not (tmp_path / "cache").exists()  # refused before any work
    cfg.downstream.ppo.algorithm = "grpo"  # rewards from text: any tokenizer
    validate(cfg)


@pytest.mark.parametrize("name", [t for t in TASK_FILES if t != "toy"])
def test_each_real_task_offline_gives_one_line_naming_its_dataset_before_work(name, tmp_path, monkeypatch):
    """No network and an empty Hugging Face cache: the default hub id of every real task is refused by the checks
    that run before any work, in one line naming the dataset and the file route (task.path)."""
    from huggingface_hub import constants

    from rmexp import preflight

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    preflight.reset_memo()
    cfg = compose_config(["preset=tiny", f"task={name}"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"could not load dataset '{cfg.task.path}'" in msg and "the hub is offline" in msg, msg
    assert "to_parquet('FILE.parquet')" in msg and "task.path=FILE.parquet" in msg


def test_an_offline_hub_policy_gives_one_line_before_work(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from rmexp import preflight

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    preflight.reset_memo()
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["preset=tiny", "downstream.policy.model=hf",
                                 "downstream.policy.path=Qwen/Qwen2.5-1.5B-Instruct"]))
    msg = str(err.value)
    assert "\n" not in msg and "downstream.policy.path='Qwen/Qwen2.5-1.5B-Instruct'" in msg
    assert "the hub is offline" in msg and "huggingface-cli download Qwen/Qwen2.5-1.5B-Instruct" in msg
