"""Probe knowledge transfer in the toy world: does a pretrained base give an RM that judges held-out
Factuality and Math better than a random-init base? A quick experiment harness, no Ray or MLflow.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/world_transfer_probe.py --models toy_llama_s random_llama_s \
        --size 3000 --variant base

Per model it builds the base (zoo recipe, with the corpus of `--variant`, optionally another `--mix` or more
Factuality `--entities`), measures the base LM's held-out knowledge (`lm/*`: argmax of the first value/result
token after "... is" on held-out facts / one-step sums), trains a classifier RM (the trial's `train.*` config,
Hydra overrides as trailing arguments) on `--size` preference pairs of Factuality and Math only (train split),
and prints, per domain: the RM's pairwise accuracy on fresh pairs of train-split prompts (`pair_train/*`) and of
held-out prompts (`pair_heldout/*`; `Math1` = one-step questions only) and its RB2 accuracy (1 chosen vs 3
rejected, 150 rows) on held-out prompts (`rb2/*`). Results and the hypotheses they test: docs/world_calibration.md.
The world seed is 0 and the RM seed the trial's; the monkeypatched variants never touch the world's code.

`--readout` also asks where the base keeps what it knows, before any RM training (`readout/*`, held-out pairs):
`loglik` = how often the base LM's own log P(response | prompt) is higher for the correct answer (the knowledge
in its next-token predictions), `linear` = a Bradley-Terry linear head fitted on the frozen base's last hidden
state at the RM's read-out token (the last token) on train-split pairs, L2 picked on train-split prompts it was
not fitted on (is "this answer is right" linearly there, where a classifier RM reads?), and `verdict` = the LM's
own yes/no after a held-out fact in the corpus's checked-statement format (did checked statements teach a verdict?).

Variants (the corpus is the only thing they change). Since WORLD_VERSION 3 the world's own corpus holds checked
statements: the `fresh` variant of the 2026-12-05 probes, except that the claims' domains now follow the corpus mix
(fresh drew Factuality and Math claims half each; a llama base now gets 4 fact claims to 1 sum, a GPT-2 base the
reverse), and the stream is seeded by the world seed too:
  base     the world's corpus as it is: a third of the documents are checked statements ("the color of zorvex is
           blue . no ."), each drawn anew with a fresh wrong value.
  plain    the corpus of WORLD_VERSION 2: truths and dialogues, no checked statements.
  checked  the checked statements come from one pool per world with one fixed wrong value per fact (so a verdict
           can be memorised per fact).
  chatfresh  half of the checked items are dialogues on train prompts with a right or wrong answer and the verdict
           after the answer's end ("... <assistant> 3 plus 4 is 8 . <eos> no ."): the verdict where a classifier
           RM reads, in the chat context it reads.
  ctxfresh half of the checked statements are said as the answer of a dialogue on an unrelated train prompt, the
           verdict after the answer's end: judging a statement in the chat context.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_calibration import compose_trial, matched_pairs, t_interval  # noqa: E402

from rmexp import zoo  # noqa: E402
from rmexp.config import load_model_config  # noqa: E402
from rmexp.rm.classifier import train_reward_model  # noqa: E402
from rmexp.world import core  # noqa: E402
from rmexp.world.core import WORLD_VERSION, World, chat_text  # noqa: E402
from rmexp.world.data import preferences, rb2_rows  # noqa: E402
from rmexp.world.domains import ATTRIBUTES, Math, number_text, parse_numbers  # noqa: E402

DOMAINS = ("Factuality", "Math")


def checked_statements(world: World, rng: random.Random) -> dict[str, list[str]]:
    """Per domain, a true and a false statement about every fact with their verdict (one fixed wrong value each)."""
    fact = world.domains["Factuality"]
    out: dict[str, list[str]] = {"Factuality": [], "Math": []}
    for (e, a), v in fact.kb.items():
        out["Factuality"].append(f"the {a} of {e} is {v} . yes .")
        out["Factuality"].append(f"the {a} of {e} is {rng.choice([w for w in ATTRIBUTES[a] if w != v])} . no .")
    m = world.domains["Math"]
    for a, op, b in m._one_step_facts():
        r = Math.OPS[op](a, b)
        out["Math"].append(f"{a} {op} {b} is {number_text(r)} . yes .")
        w = rng.choice([n for n in range(max(0, r - 2), r + 3) if n != r] + [rng.randrange(19)])
        w = w if w != r else (r + 1)
        out["Math"].append(f"{a} {op} {b} is {number_text(w)} . no .")
    return out


def single_digit_math(world: World) -> bool:
    """Whether the world's Math states single-digit facts (its own, or a variant of them), which the one-step and
    near-miss splits and the Math verdict read-out assume; the column candidate does not."""
    return world.domains["Math"].MAX_RESULT == Math.MAX_RESULT


def checked_dialogue(world: World, rng: random.Random, domain: str) -> str:
    """A dialogue on a *train* prompt of `domain` (Factuality or Math), its answer right or wrong (half each, the
    world's own correct / wrong answers in every style), then the verdict after the end of the answer: "<bos> <user>
    what is 3 plus 4 ? <assistant> 3 plus 4 is 8 . <eos> no ." Held-out prompts never appear as dialogues."""
    p = rng.choice(world.prompts(domain, "train"))
    true = rng.random() < 0.5
    answer = world.correct(rng, p) if true else world.wrong(rng, p)
    return f"{chat_text(p.text, answer)} {'yes' if true else 'no'} ."


def checked_in_dialogue(world: World, rng: random.Random, domain: str) -> str:
    """The world's checked statement of `domain` (any fact, held-out ones included: knowledge) said as the answer of
    a dialogue on an unrelated train prompt of any domain, the verdict after the answer's end: "<bos> <user> (train
    question) <assistant> 3 plus 4 is 8 . <eos> no ." Teaches judging a statement inside the chat context without
    making a held-out fact's own question a dialogue."""
    from rmexp.world.domains import DOMAINS as ALL_DOMAINS

    text = WORLD_CHECKED_STATEMENT(world, rng, domain)  # "... . yes ." or "... . no ."
    statement, verdict = text.rsplit(" ", 2)[0], text.split()[-2]
    q = rng.choice(world.prompts(rng.choice(ALL_DOMAINS), "train"))
    return f"{chat_text(q.text, statement)} {verdict} ."


WORLD_CHECKED_STATEMENT = World.checked_statement  # the world's own, kept before any variant replaces it
CORPUS_VARIANTS = ("base", "plain", "checked", "chatfresh", "ctxfresh")


def install_corpus_variant(variant: str) -> None:
    """Make every World's corpus the `variant`'s (class-level, so the zoo's own builds see it; call once, before
    any base is built, with a cache of its own: the zoo's cache key does not know the variant). A variant changes
    what the world's checked documents hold (`World.checked_statement`), or removes them (`plain`)."""
    installed = getattr(World, "probe_corpus_variant", "base")
    if variant == installed:
        return
    if installed != "base":
        raise RuntimeError(f"corpus variant {installed!r} is installed already; one per process")
    if variant not in CORPUS_VARIANTS:
        raise ValueError(f"unknown corpus variant {variant!r}; one of {CORPUS_VARIANTS}")
    if variant == "plain":  # the corpus of WORLD_VERSION 2: truths and dialogues only
        core.CHECKED_DOC_SHARE = 0.0
    elif variant == "chatfresh":  # half the world's statements, half checked dialogues on train prompts
        World.checked_statement = lambda self, rng, domain: (WORLD_CHECKED_STATEMENT(self, rng, domain)
                                                             if rng.random() < 0.5 else checked_dialogue(self, rng, domain))
    elif variant == "ctxfresh":  # half the world's statements, half the same said in unrelated dialogues
        World.checked_statement = lambda self, rng, domain: (WORLD_CHECKED_STATEMENT(self, rng, domain)
                                                             if rng.random() < 0.5 else checked_in_dialogue(self, rng, domain))
    else:  # `checked`: from one pool per world, one fixed wrong value per fact
        pools: dict[int, dict[str, list[str]]] = {}  # by world seed: a World is a pure function of its seed

        def from_pool(self, rng, domain):
            if self.seed not in pools:
                pools[self.seed] = checked_statements(self, random.Random(f"pool-{self.seed}"))
            return rng.choice(pools[self.seed][domain])
        World.checked_statement = from_pool
    World.probe_corpus_variant = variant


@torch.no_grad()
def lm_knowledge(model, tok, world: World) -> dict[str, float]:
    """Argmax accuracy of the first answer token after '... is' on held-out facts / one-step sums."""
    out = {}
    for d in DOMAINS:
        hits = n = 0
        for p in world.prompts(d, "heldout"):
            if d == "Factuality":
                e, a = p.get("entity"), p.get("attribute")
                text, target = f"<bos> the {a} of {e} is", world.domains[d].kb[(e, a)]
            else:
                if len(p.get("ops")) != 1:
                    continue
                (a, op, b), = p.get("ops")
                text = f"<bos> {number_text(a)} {op} {number_text(b)} is"  # = "a op b is" for single digits
                target = number_text(Math.OPS[op](a, b)).split()[0]
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            pred = model(input_ids=ids).logits[0, -1].argmax().item()
            hits += tok.convert_ids_to_tokens(pred) == target
            n += 1
        out[f"lm/{d}"] = hits / max(1, n)
    return out


def association_baseline(world: World, size: int) -> dict[str, float]:
    """A scorer that knows only associations between what a question names and what an answer states: the net
    count of train preference pairs whose chosen minus rejected answer pairs that answer (Math: the final
    number; Factuality: the attribute value named) with that question item (Math: each operand, by position and
    in any position; Factuality: the entity and the attribute). It knows no arithmetic and no facts, so above
    chance on held-out prompts means the split leaks through associations, below chance that it is adversarial
    to them. The RM's training pairs (`preferences`, seed 0) and the prompts of `evaluate` (its own answer draws)."""
    prefs = preferences(world, size, {d: 1.0 for d in DOMAINS}, 0.0, seed=0)

    def feats(domain: str, prompt: str, response: str) -> list[tuple]:
        if domain == "Math":
            ops, nums = parse_numbers(prompt), parse_numbers(response)
            return [(i, o, nums[-1]) for i, o in enumerate(ops)] + [(o, nums[-1]) for o in ops] if nums else []
        words = prompt.split()  # "what is the A of E ?"
        attribute, entity = words[3], words[5]
        named = [w for w in response.split() if w in ATTRIBUTES[attribute]]
        return [(entity, v) for v in named] + [(attribute, v) for v in named]
    net: dict[tuple, int] = {}
    for r in prefs:
        for text, sign in ((r["chosen"], 1), (r["rejected"], -1)):
            for f in feats(r["domain"], r["prompt"], text):
                net[f] = net.get(f, 0) + sign

    def score(domain: str, prompt: str, response: str) -> float:
        return float(sum(net.get(f, 0) for f in feats(domain, prompt, response)))
    out = {}
    for split in ("train", "heldout"):
        rng = random.Random(f"probe-{split}")
        for d in DOMAINS:
            ps = world.sample_prompts(d, split, 400, seed=7)
            wins = []
            for p in ps:
                g, b = world.correct(rng, p), world.wrong(rng, p)
                sg, sb = score(d, p.text, g), score(d, p.text, b)
                wins.append(1.0 if sg > sb else 0.5 if sg == sb else 0.0)  # a tie is a coin flip
            out[f"assoc_pair_{split}/{d}"] = float(np.mean(wins))
    rows = [r for r in rb2_rows(world, 150, 0) if r["subset"] in DOMAINS]

    def rb2_win(d: str, r: dict) -> float:  # ties broken at random: the expected win (all tied: 1/4, chance)
        c, rej = score(d, r["prompt"], r["chosen"][0]), [score(d, r["prompt"], x) for x in r["rejected"]]
        return 1.0 if c > max(rej) else 1.0 / (1 + rej.count(c)) if c == max(rej) else 0.0
    for d in DOMAINS:
        out[f"assoc_rb2/{d}"] = float(np.mean([rb2_win(d, r) for r in rows if r["subset"] == d]))
    return out


def evaluate(rm, world: World, prefs_seed: int) -> dict[str, float]:
    out = {}
    for split in ("train", "heldout"):
        rng = random.Random(f"probe-{split}")
        for d in DOMAINS:
            ps = world.sample_prompts(d, split, 400, seed=prefs_seed + 7)
            good = [world.correct(rng, p) for p in ps]
            bad = [world.wrong(rng, p) for p in ps]
            sc = rm.score([p.text for p in ps] * 2, good + bad)
            win = sc[:len(ps)] > sc[len(ps):]
            out[f"pair_{split}/{d}"] = float(np.mean(win))
            if d == "Math" and single_digit_math(world):  # one-step questions only: a single fact the corpus states
                one = [len(p.get("ops")) == 1 for p in ps]
                out[f"pair_{split}/Math1"] = float(np.mean(win[np.array(one)]))
                # Near misses (off by 1-2) vs other wrong numbers: is the RM fooled by neighbouring results?
                near = np.array([abs(parse_numbers(b)[-1] - parse_numbers(g)[-1]) <= 2 for g, b in zip(good, bad)])
                out[f"pair_{split}/Math_near"] = float(np.mean(win[near]))
                out[f"pair_{split}/Math_far"] = float(np.mean(win[~near]))
    rows = [r for r in rb2_rows(world, 150, 0) if r["subset"] in DOMAINS]
    for d in DOMAINS:
        rs = [r for r in rows if r["subset"] == d]
        wins = []
        for r in rs:
            sc = rm.score([r["prompt"]] * 4, r["chosen"] + r["rejected"])
            wins.append(float(sc[0] > sc[1:].max()))
        out[f"rb2/{d}"] = float(np.mean(wins))
    return out


@torch.no_grad()
def readout_features(model, tok, prompts: list[str], responses: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per (prompt, response): the base's last hidden state at the last token (what a classifier RM's head
    reads) and the base LM's log P(response tokens | prompt), summed over the response's tokens."""
    feats, loglik = [], []
    for prompt, response in zip(prompts, responses):
        n_prompt = len(tok(chat_text(prompt), add_special_tokens=False)["input_ids"])
        ids = tok(chat_text(prompt, response), add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model(input_ids=ids, output_hidden_states=True)
        feats.append(out.hidden_states[-1][0, -1].double().numpy())
        logp = torch.log_softmax(out.logits[0, :-1].double(), -1).gather(1, ids[0, 1:, None])[:, 0]
        loglik.append(float(logp[n_prompt - 1:].sum()))  # the tokens after the prompt
    return np.stack(feats), np.array(loglik)


def fit_linear_bt(diff: np.ndarray, l2: float) -> np.ndarray:
    """w minimising mean(softplus(-diff @ w)) + l2 |w|^2 (Bradley-Terry with a linear head and no bias: the
    pair's score difference is linear in its feature difference), by L-BFGS in float64."""
    X = torch.tensor(diff, dtype=torch.float64)
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-(X @ w)).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach().numpy()


@torch.no_grad()
def verdict_readout(model, tok, world: World, seed: int = 0) -> dict[str, float]:
    """How often the base LM's own verdict, log P("yes") - log P("no") after a held-out fact stated in the
    `checked` corpus' exact format ("the color of zorvex is blue .", "3 plus 4 is 7 ."), is higher for the true
    value than for a wrong one: did pretraining on checked statements teach a verdict that generalises? (0.5 =
    no.) Math: held-out one-step facts, the wrong result a near miss (off by 1-2) or any other number, half each;
    `.../Math_near` and `.../Math_far` split the Math items by the wrong result's distance (a near miss is what RB2
    Math's best RMs cannot judge: benchmarks/math_forms.py).

    Per context of the statement: `verdict_heldout` right after <bos> (the corpus's own), `verdict_after_truth`
    after another true statement, `verdict_chat` as the answer of a chat dialogue on its own question, read at the
    statement's "." (before <eos>), and `verdict_chat_eos` at the dialogue's <eos> (where a classifier RM reads and
    where `chatfresh` puts the verdict): does the verdict survive the context an RM sees?"""
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    fact = world.domains["Factuality"]
    rng = random.Random(f"verdict-{seed}")

    def margin(text: str) -> float:
        ids = tok(f"<bos> {text}", add_special_tokens=False, return_tensors="pt")["input_ids"]
        logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)
        return float(logp[yes] - logp[no])

    contexts = {  # name -> (question, statement) -> the text after <bos>
        "verdict_heldout": lambda q, st: st,
        "verdict_after_truth": lambda q, st: f"2 plus 2 is 4 . {st}",
        "verdict_chat": lambda q, st: f"<user> {q} <assistant> {st}",
        "verdict_chat_eos": lambda q, st: f"<user> {q} <assistant> {st} <eos>",
    }
    items: dict[str, list[tuple[str, str, str]]] = {"Factuality": [], "Math": [], "Math_near": [], "Math_far": []}
    for p in world.prompts("Factuality", "heldout"):
        e, a = p.get("entity"), p.get("attribute")
        true = fact.kb[(e, a)]
        wrong = rng.choice([w for w in ATTRIBUTES[a] if w != true])
        items["Factuality"].append((p.text, f"the {a} of {e} is {true} .", f"the {a} of {e} is {wrong} ."))
    if single_digit_math(world):
        for p in world.prompts("Math", "heldout"):
            if len(p.get("ops")) != 1:
                continue
            (a, op, b), = p.get("ops")
            r = Math.OPS[op](a, b)
            w = Math.wrong_result(rng, r)
            item = (p.text, f"{a} {op} {b} is {number_text(r)} .", f"{a} {op} {b} is {number_text(w)} .")
            items["Math"].append(item)
            items["Math_near" if abs(w - r) <= 2 else "Math_far"].append(item)
    out = {}
    for d, rows in items.items():
        for name, ctx in contexts.items():
            if rows:
                out[f"readout/{name}/{d}"] = float(np.mean([margin(ctx(q, t)) > margin(ctx(q, w)) for q, t, w in rows]))
    return out


def readout(model, tok, world: World, n_pairs: int = 1500) -> dict[str, float]:
    """`readout/loglik_heldout/<d>` and `readout/linear_heldout/<d>` (see the module docstring). The linear
    head is fitted on pairs of 80% of the train-split prompts (`n_pairs`, each prompt several times with other
    answers, as the preference data repeats them) and its L2 picked on pairs of the other 20%, prompts it never
    saw (`readout/linear_val/<d>`), so the pick rewards transfer, not memorisation."""

    def pairs(d: str, ps: list, n: int, tag: str) -> tuple[np.ndarray, np.ndarray]:
        rng = random.Random(f"readout-{d}-{tag}")
        ps = [ps[i % len(ps)] for i in range(n)]
        texts = [p.text for p in ps]
        hg, lg = readout_features(model, tok, texts, [world.correct(rng, p) for p in ps])
        hb, lb = readout_features(model, tok, texts, [world.wrong(rng, p) for p in ps])
        return hg - hb, lg - lb

    out = verdict_readout(model, tok, world)
    for d in DOMAINS:
        train = list(world.prompts(d, "train"))
        random.Random(f"readout-split-{d}").shuffle(train)
        cut = int(0.8 * len(train))
        x_fit, _ = pairs(d, train[:cut], n_pairs, "fit")
        x_val, _ = pairs(d, train[cut:], max(1, n_pairs // 4), "val")
        held = list(world.prompts(d, "heldout"))
        x_held, ll_held = pairs(d, held, len(held), "heldout")
        scale = np.abs(x_fit).mean(0) + 1e-6
        fits = [(float(np.mean((x_val / scale) @ w > 0)), w)
                for w in (fit_linear_bt(x_fit / scale, l2) for l2 in (1e-4, 1e-3, 1e-2, 1e-1))]
        val, w = max(fits, key=lambda t: t[0])
        out[f"readout/loglik_heldout/{d}"] = float(np.mean(ll_held > 0))
        out[f"readout/linear_val/{d}"] = val
        out[f"readout/linear_heldout/{d}"] = float(np.mean((x_held / scale) @ w > 0))
    return out


def _patch_entities(n: int) -> None:
    from rmexp.world import domains

    def init(self, rng):
        self.entities = sorted({a + b for a in domains.SYLLABLES_A for b in domains.SYLLABLES_B})
        rng.shuffle(self.entities)
        self.entities = sorted(self.entities[:n])
        self.kb = {(e, a): rng.choice(values) for e in self.entities for a, values in ATTRIBUTES.items()}
    domains.Factuality.__init__ = init


def parse_result_line(line: str) -> tuple[str, str, int, dict[str, float]] | None:
    """A result line of this script -> (model, setting without the seed, seed, cells); None for any other line."""
    head, sep, rest = line.partition("] ")
    if not sep or " [" not in head:
        return None
    name, setting = head.split(" [", 1)
    words = setting.split()
    seed = next((int(w.split("=", 1)[1]) for w in words if w.startswith("seed=")), 0)
    setting = " ".join(w for w in words if not w.startswith("seed="))
    cells = {k: float(v) for k, v in (kv.split("=", 1) for kv in rest.split()[1:] if "=" in kv)}
    return name, setting, seed, cells


def summarize(lines: list[str]) -> list[str]:
    """Mean ± SE over seeds of every cell per (model, setting), and for each toy_X with a random_X run of the same
    setting and seeds, the paired difference with its t interval (95%, over the seeds)."""
    runs: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for line in lines:
        parsed = parse_result_line(line)
        if parsed:
            name, setting, seed, cells = parsed
            runs.setdefault((name, setting), {})[seed] = cells
    control_of = dict(matched_pairs([name for name, _ in runs]))
    out = []
    for (name, setting), by_seed in runs.items():
        keys = sorted(set.intersection(*(set(c) for c in by_seed.values())))
        cells = []
        for k in keys:
            v = np.array([by_seed[s][k] for s in sorted(by_seed)])
            cells.append(f"{k}={v.mean():.3f}" + (f"±{v.std(ddof=1) / np.sqrt(v.size):.3f}" if v.size > 1 else ""))
        out.append(f"{name} [{setting}] n={len(by_seed)}  " + "  ".join(cells))
        control = runs.get((control_of.get(name), setting), {})
        seeds = sorted(set(by_seed) & set(control))
        if len(seeds) >= 2:
            diffs = []
            for k in keys:
                if all(k in control[s] for s in seeds):
                    mean, lo, hi = t_interval([by_seed[s][k] - control[s][k] for s in seeds])
                    diffs.append(f"{k}={mean:+.3f}[{lo:+.3f},{hi:+.3f}]")
            out.append(f"{name} - {control_of[name]} [{setting}] paired over {len(seeds)} seeds  " + "  ".join(diffs))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["toy_llama_s", "random_llama_s"],
                    help="bases to probe; none (`--models` alone) with --association: the baseline only")
    ap.add_argument("--variant", default="base", choices=CORPUS_VARIANTS)
    ap.add_argument("--size", type=int, default=3000, help="RM preference pairs; 0: no RM (with --readout)")
    ap.add_argument("--mix", default=None, help="corpus mix of the base instead of the model's, e.g. 'Math=4,Ties=2'")
    ap.add_argument("--entities", type=int, default=48, help="Factuality entities (the world has 48)")
    ap.add_argument("--base-set", action="append", default=[], metavar="KEY=NUMBER",
                    help="change a numeric field of the base's zoo recipe, e.g. pretrain_steps=1600 (repeatable)")
    ap.add_argument("--math", default="world", choices=("world", "columns", "statement"),
                    help="Math domain: the world's, or a candidate of benchmarks/math_variants.py")
    ap.add_argument("--math-split", default="fact", choices=("fact", "minus-train"),
                    help="Math's split: the world's (by fact), or minus questions for training and plus ones held out "
                         "(benchmarks/math_splits.py; the corpus's dialogues follow the split, its truths do not)")
    ap.add_argument("--association", action="store_true",
                    help="also the association baseline on Math (assoc_*: no model, only number associations)")
    ap.add_argument("--pair-domains", nargs="+", default=list(DOMAINS), choices=DOMAINS,
                    help="domains of the RM's preference pairs (default both; evaluation always covers both)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--readout", action="store_true", help="also the frozen base's read-outs (readout/*)")
    ap.add_argument("--readout-pairs", type=int, default=1500, help="pairs the linear read-out is fitted on")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the RM trial config (train.lr=...)")
    ap.add_argument("--summarize", nargs="+", default=None, metavar="FILE",
                    help="files of this script's result lines: mean ± SE over seeds per model and setting, and "
                         "pretrained - random-init paired over seeds (runs nothing)")
    ap.add_argument("--saved-bases", nargs="+", default=None, metavar="DIR",
                    help="built zoo base directories (e.g. .rmexp_cache/zoo/llama_m-*/): their held-out knowledge and "
                         "verdict read-outs (lm/*, readout/verdict_*) on the world they were built for (trains nothing; "
                         "the world's own Math and split)")
    args = ap.parse_args(argv)
    if args.saved_bases:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        torch.set_num_threads(args.threads)
        for d in map(Path, args.saved_bases):
            if not (d / "rmexp_zoo.json").is_file():  # e.g. a shell glob's *.lock file beside the base
                print(f"skipped {d}: not a built zoo base (no rmexp_zoo.json)", flush=True)
                continue
            world = World(json.loads((d / "rmexp_zoo.json").read_text())["world_seed"])
            model, tok = AutoModelForCausalLM.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)
            cells = lm_knowledge(model, tok, world) | verdict_readout(model, tok, world)
            print(f"{d.name}  " + "  ".join(f"{k}={v:.3f}" for k, v in cells.items()), flush=True)
        return 0
    if args.summarize:
        print("\n".join(summarize([line for f in args.summarize for line in Path(f).read_text().splitlines()])))
        return 0
    torch.set_num_threads(args.threads)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="rmexp_probe_")
    install_corpus_variant(args.variant)
    if args.math != "world":
        import math_variants
        math_variants.install(args.math)
    def make_world() -> World:
        world = World(0)
        if args.math_split == "minus-train":
            from math_splits import resplit
            resplit(world, lambda p: all(op == "plus" for _, op, _ in p.get("ops")))
        return world

    if args.association:  # no model: the same for every base, so printed once
        world = make_world()
        cells = association_baseline(world, args.size or 3000)
        print(f"association baseline [math={args.math} split={args.math_split} size={args.size or 3000}]  "
              + "  ".join(f"{k}={v:.3f}" for k, v in sorted(cells.items())), flush=True)
    for name in args.models:
        t0 = time.time()
        if args.entities != 48:
            _patch_entities(args.entities)
        world = make_world()
        mcfg = load_model_config(name)
        mcfg.name = name
        if args.mix:
            mix = {d: 1.0 for d in mcfg.corpus_mix}
            mix |= {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
            if set(mix) - set(mcfg.corpus_mix):
                ap.error(f"--mix names unknown domains {sorted(set(mix) - set(mcfg.corpus_mix))}; "
                         f"the domains are {list(mcfg.corpus_mix)}")
            mcfg.corpus_mix = mix
        for kv in args.base_set:
            key, value = kv.split("=", 1)
            if key not in mcfg or not isinstance(mcfg[key], (int, float)):
                raise SystemExit(f"--base-set {kv!r}: {key!r} is not a numeric field of the model config")
            mcfg[key] = type(mcfg[key])(value)
        folder = Path(cache) / "_".join([name, f"world{WORLD_VERSION}", args.variant, *([args.math] if args.math != "world" else []),
                                         *(["minus-train"] if args.math_split == "minus-train" else []), str(args.entities), str(args.mix), *sorted(args.base_set)])
        if not (folder / "config.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            zoo.build(mcfg, world, folder, progress=False)
        base, tok = zoo.load_causal_lm(folder)
        base.eval()
        know = lm_knowledge(base, tok, world)
        if args.readout:
            know |= readout(base, tok, world, args.readout_pairs)
        res = {}
        if args.size > 0:  # --size 0: the base's knowledge and read-outs only, no RM
            cfg = compose_trial(name, list(args.overrides), cache, bon=False)
            prefs = preferences(world, args.size, {d: 1.0 for d in args.pair_domains}, 0.0, seed=0)
            with tempfile.TemporaryDirectory() as out:
                rm = train_reward_model(folder, prefs, cfg, Path(out), progress=False)
                res = evaluate(rm, world, 0)
        cells = know | res
        setting = " ".join([args.variant, f"math={args.math}", f"split={args.math_split}", "pairs=" + "+".join(args.pair_domains), f"size={args.size}", f"ent={args.entities}", f"mix={args.mix}", *args.base_set,
                            *args.overrides])
        print(f"{name} [{setting}] {time.time() - t0:.0f}s  "
              + "  ".join(f"{k}={v:.3f}" for k, v in sorted(cells.items())), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
