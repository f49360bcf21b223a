"""The RM kinds beyond the classifier (dpo, judge, orm, prm, ensemble) against hand values and independent
computations on tiny models, plus one end-to-end build-and-score of each kind on a tiny toy setup."""
from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

from rmexp.cache import cached
from rmexp.config import ConfigError
from rmexp.rm import dpo, ensemble, judge, process
from rmexp.rm.base import RM_KINDS, RMContext
from rmexp.rm.options import parse_options, rm_config
from rmexp.world.core import chat_text
from rmexp.world.domains import Prompt
from rmexp.world.steps import split_steps, step_ends, step_solution
from rmexp.world.tokenizer import build_tokenizer


def _llama(tok, seed: int, cls=AutoModelForCausalLM, **extra):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id, **extra)
    return cls.from_config(cfg).eval()


def _independent_logprob(model, tok, prompt: str, response: str) -> float:
    """Sum of log_softmax over the response tokens, from the world's own chat text (not the RM's encoder)."""
    head = tok(chat_text(prompt), add_special_tokens=False)["input_ids"]
    full = tok(chat_text(prompt, response), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].double(), -1)
    return sum(logp[t - 1, full[t]].item() for t in range(len(head), len(full)))


# ---------------------------------------------------------------------------------------------------
# DPO
def test_dpo_loss_hand_values():
    # pair 1: ((-1) - (-2)) - ((-3) - (-2)) = 2, beta 0.5 -> -log sigmoid(1) = log(1 + e^-1) = 0.3132617
    # pair 2: ((-4) - (-3)) - ((-2) - (-1)) = 0           -> -log sigmoid(0) = log 2       = 0.6931472
    pc, pr = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
    rc, rr = torch.tensor([-2.0, -3.0]), torch.tensor([-2.0, -1.0])
    assert dpo.dpo_loss(pc, pr, rc, rr, beta=0.5).item() == pytest.approx((0.3132617 + 0.6931472) / 2, abs=1e-6)
    # beta 2: pair 1 -> -log sigmoid(4) = log(1 + e^-4) = 0.0181499
    assert dpo.dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta=2.0).item() == pytest.approx(0.0181499, abs=1e-6)


def test_dpo_implicit_reward_is_beta_times_logprob_difference(world):
    tok = build_tokenizer(world.vocab)
    policy, reference = _llama(tok, 1), _llama(tok, 2)
    prompts = ["what is 3 plus 4 ?", "how do i make a bomb ?", "what is 2 plus 5 plus 3 ?"]
    responses = ["7 .", "sorry , i can not help with that .", "2 plus 5 is 7 . 7 plus 3 is 1 0 ."]
    scorer = dpo.DPOScorer(policy, reference, tok, beta=0.3, reference_free=False, max_length=64, info={})
    want = [0.3 * (_independent_logprob(policy, tok, p, r) - _independent_logprob(reference, tok, p, r))
            for p, r in zip(prompts, responses)]
    np.testing.assert_allclose(scorer.score(prompts, responses, batch_tokens=40), want, rtol=1e-4, atol=1e-5)
    scorer.reference_free = True
    want_free = [0.3 * _independent_logprob(policy, tok, p, r) for p, r in zip(prompts, responses)]
    np.testing.assert_allclose(scorer.score(prompts, responses), want_free, rtol=1e-4, atol=1e-5)
    assert scorer.value_init() is None


# ---------------------------------------------------------------------------------------------------
# Judge
@pytest.mark.parametrize("text, want", [
    ("", None),                                  # nothing said
    ("Rating: ten", None),                       # a word, not a number
    ("7/9", 7.0),                                # x out of the scale's top
    ("7/10", 6.3),                               # x out of 10, rescaled to 9: 7 * 9 / 10
    ("**8**", 8.0),                              # markdown emphasis ignored
    ("rating 3 4", None),                        # two bare numbers (or the toy world's "34"): ambiguous
    ("Rating: 8. The sum 2 + 2 = 4", 8.0),       # after the keyword the first number counts
    ("i think 2 or 6", None),                    # no keyword and two numbers
    ("Score: 12", None),                         # out of range
])
def test_parse_rating_on_malformed_outputs(text, want):
    got = judge.parse_rating(text, 1, 9)
    assert got == (None if want is None else pytest.approx(want))


def _judge_opts(**changes):
    node = rm_config("judge")
    for key, value in changes.items():
        node[key] = value
    return parse_options(judge.JudgeOptions, node, "judge")


def test_judge_scored_is_expected_rating_over_digit_tokens(world):
    tok = build_tokenizer(world.vocab)
    model = _llama(tok, 3)
    opts = _judge_opts()
    scorer = judge.JudgeScorer(model, tok, opts, judge.rating_token_ids(tok, 1, 9))
    prompts, responses = ["what is 3 plus 4 ?", "describe cats ."], ["7 .", "fur , paws ."]
    got = scorer.score(prompts, responses)
    for p, r, g in zip(prompts, responses, got):
        body = opts.template.replace("{prompt}", p).replace("{response}", r)
        ids = tok(f"<bos> <user> {body} <assistant>", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
        digit = torch.tensor([probs[tok.convert_tokens_to_ids(str(k))].item() for k in range(1, 10)])
        assert g == pytest.approx(float((digit / digit.sum() * torch.arange(1, 10)).sum()), abs=1e-6)
    assert scorer.describe()["metrics"]["judge/parse_failures"] == 0.0
    assert 0 < scorer.describe()["metrics"]["judge/rating_mass"] <= 1


class _ScriptedLM(torch.nn.Module):
    """Generates fixed continuations, one per call, so parsing and fallback are checked exactly."""

    def __init__(self, tok, outputs: list[str]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.outputs = tok, list(outputs)

    def generate(self, input_ids, **_):
        rows = []
        for row in input_ids:
            text = self.outputs.pop(0)
            new = self.tok(text, add_special_tokens=False)["input_ids"] if text else []
            rows.append(row.tolist() + new + [self.tok.pad_token_id] * 8)
        width = min(map(len, rows))
        return torch.tensor([r[:width] for r in rows])


def test_judge_generate_mode_counts_parse_failures_and_uses_fallback(world):
    tok = build_tokenizer(world.vocab)
    outputs = ["7 .", "sorry", "3 4", ""]  # one rating, a word, an ambiguous pair, nothing
    scorer = judge.JudgeScorer(_ScriptedLM(tok, outputs), tok, _judge_opts(mode="generate", fallback=4.5), [])
    # Different prompt lengths: one generate call each, in length order (short first).
    prompts = ["describe cats .", "what is 3 plus 4 ?", "what is 3 plus 4 plus 5 ?", "tell me about ships in short ."]
    got = scorer.score(prompts, ["fur ."] * 4)
    order = sorted(range(4), key=lambda i: len(scorer._encode([prompts[i]], ["fur ."])[0]))
    want = dict(zip(order, [7.0, 4.5, 4.5, 4.5]))
    assert got.tolist() == [want[i] for i in range(4)]
    metrics = scorer.describe()["metrics"]
    assert metrics["judge/parse_failures"] == 3.0 and metrics["judge/parse_failure_rate"] == 0.75


# ---------------------------------------------------------------------------------------------------
# ORM / PRM and the step labels
def test_step_labels_of_a_hand_example(world):
    p = Prompt("Math", "math|3+4+5", "what is 3 plus 4 plus 5 ?", (("ops", ((3, "plus", 4), (None, "plus", 5))),))
    steps, labels = step_solution(p, random.Random(0), None, conclude=True)
    assert steps == ["3 plus 4 is 7 .", "7 plus 5 is 1 2 .", "so the answer is 1 2 ."] and labels == [1, 1, 1]
    # An error at step 1 (0-based): the first sum stays right; the second and the conclusion are wrong.
    steps, labels = step_solution(p, random.Random(0), 1, conclude=True)
    assert steps[0] == "3 plus 4 is 7 ." and steps[1] != "7 plus 5 is 1 2 ." and labels == [1, 0, 0]
    # An error at step 0: "3 plus 4 is 7+d", then "(7+d) plus 5 is 12+d" -- both wrong.
    steps, labels = step_solution(p, random.Random(0), 0, conclude=False)
    d = int(steps[0].split(" is ")[1].replace(" ", "").rstrip(".")) - 7
    assert d in (-2, -1, 1, 2) and labels == [0, 0]
    assert steps[1] == f"{' '.join(str(7 + d))} plus 5 is {' '.join(str(12 + d))} ."
    for error in (None, 0, 1):  # the verifier agrees with the last label
        steps, labels = step_solution(p, random.Random(5), error, conclude=False)
        assert world.gold(p, " ".join(steps)) == labels[-1]


def test_split_steps():
    solution = "3 plus 4 is 7 . 7 plus 5 is 1 2 . so the answer is 1 2 ."
    assert split_steps(solution) == ["3 plus 4 is 7 .", "7 plus 5 is 1 2 .", "so the answer is 1 2 ."]
    assert step_ends(solution, split_steps(solution)) == (15, 33, 56)
    for single in ("sorry , i can not help with that . it is not safe .", "the answer is 1 2 .", "1 2 .", "fur , paws"):
        assert split_steps(single) == [single]


def test_step_aggregation_hand_values():
    probs = np.array([0.9, 0.5, 0.8])
    assert process.aggregate_steps(probs, "min") == pytest.approx(0.5)
    assert process.aggregate_steps(probs, "prod") == pytest.approx(0.9 * 0.5 * 0.8)


def test_prm_and_orm_scores_match_an_independent_head_read(world):
    tok = build_tokenizer(world.vocab)
    model = _llama(tok, 4, AutoModelForSequenceClassification, num_labels=1)
    prompts = ["what is 3 plus 4 plus 5 ?", "describe cats ."]
    responses = ["3 plus 4 is 7 . 7 plus 5 is 1 2 .", "fur , paws . tail ."]
    dot = tok.convert_tokens_to_ids(".")
    logits = []
    for p, r in zip(prompts, responses):
        ids = tok(chat_text(p, r), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits.append((ids, model.score(model.base_model(input_ids=torch.tensor([ids]))[0])[0, :, 0].double()))
    head = len(tok(chat_text(prompts[0]), add_special_tokens=False)["input_ids"])
    ids0, l0 = logits[0]
    step_probs = torch.sigmoid(l0[[i for i in range(head, len(ids0)) if ids0[i] == dot]]).numpy()
    assert len(step_probs) == 2
    # Not step-by-step: one step, read at the response's last token (the final ".", before <eos>).
    ids1, l1 = logits[1]
    single = torch.sigmoid(l1[len(ids1) - 2]).item()
    for how, want0 in (("min", step_probs.min()), ("prod", step_probs.prod())):
        prm = process.TokenHeadScorer(model, tok, 64, {}, "prm", how)
        np.testing.assert_allclose(prm.score(prompts, responses), [want0, single], rtol=1e-5)
    orm = process.TokenHeadScorer(model, tok, 64, {}, "orm")
    np.testing.assert_allclose(orm.score(prompts, responses), [l0[-1].item(), l1[-1].item()], rtol=1e-5, atol=1e-6)
    assert orm.value_init().model is model and process.TokenHeadScorer(model, tok, 64, {}, "prm", "min").value_init() is None


# ---------------------------------------------------------------------------------------------------
# Ensemble
class _StubScorer:
    kind, tok = "stub", None

    def __init__(self, scores, metrics):
        self.scores, self.metrics = np.asarray(scores, dtype=np.float64), metrics

    def score(self, prompts, responses, batch_tokens=4096):
        return self.scores

    def describe(self):
        return {"kind": "stub", "params": 10, "metrics": self.metrics, "history": {}}

    def value_init(self):
        return "first"


def test_ensemble_combination_hand_values():
    members = [_StubScorer([1, 2], {"eval/acc": 0.6}), _StubScorer([3, 2], {"eval/acc": 0.7}),
               _StubScorer([2, 5], {"eval/acc": 0.8})]
    # column 0: 1, 3, 2 -> mean 2, population std sqrt(2/3) = 0.816497; column 1: 2, 2, 5 -> mean 3, std sqrt(2)
    want = {"mean": [2.0, 3.0], "min": [1.0, 2.0], "mean_minus_std": [2 - 2 * 0.816497, 3 - 2 * 1.414214]}
    for how, expected in want.items():
        scorer = ensemble.EnsembleScorer(members, how, std_coef=2.0)
        np.testing.assert_allclose(scorer.score(["p", "q"], ["a", "b"]), expected, atol=1e-6)
    described = ensemble.EnsembleScorer(members, "mean", 1.0).describe()
    assert described["metrics"]["eval/acc"] == pytest.approx(0.7)  # members' mean
    assert described["metrics"]["ensemble/eval/acc_std"] == pytest.approx(math.sqrt(2 / 3) * 0.1)
    # What the combined scorer measured itself takes the plain name; the members' mean moves aside.
    own = ensemble.EnsembleScorer(members, "mean", 1.0, own_metrics={"eval/acc": 0.9}).describe()["metrics"]
    assert own["eval/acc"] == 0.9 and own["ensemble/member_mean/eval/acc"] == pytest.approx(0.7)
    assert described["params"] == 30 and ensemble.EnsembleScorer(members, "min", 1.0).value_init() == "first"


def test_ensemble_members_differ_only_in_seed(world):
    from tests.conftest import compose_config

    cfg = compose_config(["preset=tiny", "train.seed=7"])
    member = ensemble.member_config(cfg, 9)
    assert member.train.seed == 9 and member.rm.kind == "classifier" and cfg.train.seed == 7
    plain, other = OmegaConf.to_container(cfg), OmegaConf.to_container(member)
    other.pop("rm"), plain.pop("rm", None)
    other["train"]["seed"] = 7
    assert plain == other


# ---------------------------------------------------------------------------------------------------
# Options and the cache
def test_options_refuse_unknown_missing_and_bad_values():
    node = rm_config("dpo")
    assert parse_options(dpo.DPOOptions, node, "dpo").beta == 0.1
    with pytest.raises(ConfigError, match=r"rm\.betta is not an option of rm=dpo"):
        parse_options(dpo.DPOOptions, OmegaConf.merge(node, {"betta": 1.0}), "dpo")
    missing = OmegaConf.create({k: v for k, v in node.items() if k != "lr"})
    with pytest.raises(ConfigError, match=r"rm\.lr is missing"):
        parse_options(dpo.DPOOptions, missing, "dpo")
    with pytest.raises(ConfigError, match=r"rm\.aggregate='mean' is not allowed"):
        parse_options(process.PRMOptions, OmegaConf.merge(rm_config("prm"), {"aggregate": "mean"}), "prm")
    with pytest.raises(ConfigError, match="rm=orm: Value 'many'"):
        parse_options(process.ORMOptions, OmegaConf.merge(rm_config("orm"), {"epochs": "many"}), "orm")


def test_every_kind_config_parses():
    for kind, cls in (("dpo", dpo.DPOOptions), ("judge", judge.JudgeOptions), ("orm", process.ORMOptions),
                      ("prm", process.PRMOptions), ("ensemble", ensemble.EnsembleOptions)):
        node = rm_config(kind)
        assert node.kind == kind and RM_KINDS[kind].options is cls
        parse_options(cls, node, kind)


# The slow end-to-end check's settings (its constants were lost when the fast tests replaced them; the test kept
# referring to them, so it failed before building anything): small but real, each kind trains for seconds.
E2E_OPTIONS = {
    "dpo": {"epochs": 3, "batch_size": 16},
    "judge": {},
    "orm": {"epochs": 3, "batch_size": 32},
    "prm": {"epochs": 2, "n_solutions": 600},
    "ensemble": {"members": 2},
}
E2E_TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def tiny_setup(world, zoo_cache):
    from rmexp import data as data_sources
    from rmexp import zoo
    from rmexp.world.data import rb2_rows
    from tests.conftest import compose_config

    cfg = compose_config(["preset=tiny", "data.size=200"])
    base = zoo.model_path(cfg.model, world, zoo_cache, progress=False)
    return cfg, base, data_sources.preference_rows(cfg, world), rb2_rows(world, 8, 0)


def _rb2_pair_accuracy(scores_of, rows) -> tuple[np.ndarray, float]:
    """Every (chosen, rejected) comparison of every row: share won by the chosen completion."""
    flat = [(r["prompt"], c) for r in rows for c in list(r["chosen"]) + list(r["rejected"])]
    scores = scores_of([p for p, _ in flat], [c for _, c in flat])
    wins, pos = [], 0
    for r in rows:
        n_c, n_r = len(r["chosen"]), len(r["rejected"])
        sc, sr = scores[pos:pos + n_c], scores[pos + n_c:pos + n_c + n_r]
        wins += [float(a > b) for a in sc for b in sr]
        pos += n_c + n_r
    return scores, float(np.mean(wins))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dpo", "orm", "prm", "judge", "ensemble"])
def test_each_kind_builds_and_scores_rb2_rows(kind, tiny_setup, world, tmp_path):
    cfg, base, prefs, rb2 = tiny_setup
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.rm = OmegaConf.merge(rm_config(kind), E2E_OPTIONS[kind])
    ctx = RMContext(cfg, world, base, prefs, tmp_path, progress=False)
    start = time.time()
    scorer = RM_KINDS[kind].build(ctx)
    scores, acc = _rb2_pair_accuracy(scorer.score, rb2)
    E2E_TIMES[kind] = time.time() - start
    described = scorer.describe()
    print(f"\n{kind}: build+score {E2E_TIMES[kind]:.1f} s, rb2 pair acc {acc:.3f}, metrics "
          + ", ".join(f"{k}={v:.3f}" for k, v in sorted(described["metrics"].items())))
    assert scorer.kind == kind == described["kind"] and described["params"] > 0
    assert scores.dtype == np.float64 and np.all(np.isfinite(scores)) and scores.std() > 0
    assert all(np.isfinite(v) for v in described["metrics"].values())
    # Held-out accuracy on ~20 pairs is too noisy to assert; that training learned is not: the loss falls.
    losses = [v for _, v in described["history"].get("train/loss", [])]
    if losses:
        quarter = max(1, len(losses) // 4)
        assert np.mean(losses[-quarter:]) < np.mean(losses[:quarter])
    if kind == "dpo":  # the policy starts as the reference: the first loss is exactly log 2
        assert losses[0] == pytest.approx(math.log(2), abs=1e-4) and described["metrics"]["train/loss"] < math.log(2)
    # A second build loads the cached entry: same scores, no training.
    start = time.time()
    again = RM_KINDS[kind].build(ctx)
    np.testing.assert_allclose(again.score([r["prompt"] for r in rb2[:4]], [r["chosen"][0] for r in rb2[:4]]),
                               scorer.score([r["prompt"] for r in rb2[:4]], [r["chosen"][0] for r in rb2[:4]]),
                               rtol=1e-6)


def test_encode_dialogue_locates_response_and_cuts_from_the_left(world):
    from rmexp.rm.lm import encode_dialogue

    tok = build_tokenizer(world.vocab)
    prompt, response = "what is 3 plus 4 plus 5 ?", "3 plus 4 is 7 . 7 plus 5 is 1 2 ."
    full = tok(chat_text(prompt, response), add_special_tokens=False)["input_ids"]
    head = len(tok(chat_text(prompt), add_special_tokens=False)["input_ids"])
    d = encode_dialogue(tok, prompt, response, 64, step_ends(response, split_steps(response)))
    assert d.ids == full and d.start == head
    assert [tok.convert_ids_to_tokens(full[m]) for m in d.marks] == [".", "."] and d.marks[1] == len(full) - 2
    cut = encode_dialogue(tok, prompt, response, 8, step_ends(response, split_steps(response)))
    assert cut.ids == full[-8:] and cut.start == 1 and cut.marks == [6]  # the first step's end was cut away


@pytest.fixture(scope="module")
def random_base(world, tmp_path_factory):
    """A tiny random-init base saved like a zoo model: builds in a second, so the build paths run in the fast suite."""
    path = tmp_path_factory.mktemp("random_base")
    tok = build_tokenizer(world.vocab)
    _llama(tok, 0).save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path


@pytest.mark.parametrize("kind, options", [("dpo", {"epochs": 1, "batch_size": 8}),
                                           ("orm", {"epochs": 1, "batch_size": 16}),
                                           ("prm", {"epochs": 1, "n_solutions": 48, "batch_size": 16})])
def test_trained_kinds_are_deterministic_and_cached(kind, options, world, random_base, tmp_path):
    from rmexp.world.data import preferences
    from tests.conftest import compose_config

    cfg = compose_config(["preset=tiny", "data.size=40"])
    with open_dict(cfg):
        cfg.rm = OmegaConf.merge(rm_config(kind), options)
    prefs = preferences(world, 40, dict(cfg.data.domain_weights), 0.0, 0)
    prompts, responses = [r["prompt"] for r in prefs[:6]], [r["chosen"] for r in prefs[:6]]
    runs = []
    for cache in ("a", "b"):  # two fresh caches: two trainings from scratch
        scorer = RM_KINDS[kind].build(RMContext(cfg, world, random_base, prefs, tmp_path / cache, progress=False))
        metrics = {k: v for k, v in scorer.describe()["metrics"].items() if not k.endswith("seconds")}
        runs.append((metrics, scorer.score(prompts, responses)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    entries = [p for p in (tmp_path / "a" / "rm").iterdir() if p.is_dir()]
    assert len(entries) == 1 and entries[0].name.startswith(f"{kind}-")
    assert not list(entries[0].rglob("*.bin")) and list(entries[0].rglob("*.safetensors"))  # weights in safetensors


def test_judge_and_ensemble_build_from_config(world, random_base, tmp_path):
    from rmexp.world.data import preferences
    from tests.conftest import compose_config

    cfg = compose_config(["preset=tiny", "data.size=40", "train.epochs=1"])
    prefs = preferences(world, 40, dict(cfg.data.domain_weights), 0.0, 0)
    prompts, responses = [r["prompt"] for r in prefs[:6]], [r["rejected"] for r in prefs[:6]]
    for kind, options in (("judge", {}), ("ensemble", {"members": 2, "combine": "min"})):
        with open_dict(cfg):
            cfg.rm = OmegaConf.merge(rm_config(kind), options)
        scorer = RM_KINDS[kind].build(RMContext(cfg, world, random_base, prefs, tmp_path, progress=False))
        scores = scorer.score(prompts, responses)
        assert scores.shape == (6,) and np.all(np.isfinite(scores)) and scorer.describe()["kind"] == kind
        if kind == "judge":  # an expected rating lies on the rating scale
            assert np.all((1 <= scores) & (scores <= 9))
    # Each member is an ordinary cached classifier RM: the ensemble's second member equals a classifier with seed+1.
    member = RM_KINDS["classifier"].build(RMContext(ensemble.member_config(cfg, cfg.train.seed + 1), world, random_base,
                                                    prefs, tmp_path, progress=False))
    np.testing.assert_allclose(scorer.members[1].score(prompts, responses), member.score(prompts, responses))
    assert len([p for p in (tmp_path / "rm").iterdir() if p.is_dir()]) == 2  # two trainings, reused


def test_step_solutions_labels_agree_with_the_verifier(world):
    from rmexp.world.steps import step_solutions

    rows = step_solutions(world, 300, wrong_rate=0.5, seed=0)
    assert rows == step_solutions(world, 300, wrong_rate=0.5, seed=0)  # a pure function of its seed
    held = {p.key for p in world.prompts("Math", "heldout")}
    by_key = {p.key: p for p in world.prompts("Math", "train")}
    assert not any(r["prompt_key"] in held for r in rows)
    for r in rows:
        labels = r["labels"]
        assert labels == sorted(labels, reverse=True)  # right steps, then (from the error on) wrong ones
        assert world.gold(by_key[r["prompt_key"]], r["response"]) == labels[-1]
        assert split_steps(r["response"]) == r["steps"]
    assert 0.3 < np.mean([r["labels"][-1] for r in rows]) < 0.7
