"""Datasets drawn from the toy world: preference pairs, RewardBench 2 / RewardBench 1 benchmarks,
and the decontamination check between a training set and a benchmark.

Row schemas are exactly the public datasets' (allenai/reward-bench-2 and allenai/reward-bench), so the
same scorers, loaders and export run on toy and real data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from rmexp.world.core import World, domain_sampler
from rmexp.world.domains import DOMAINS, Prompt

TOY_MODEL = "toy-world"

# RewardBench 1 subsets (official names, so the official section mapping and counts apply) filled from
# held-out prompts of the toy domains: (subset, domain, prompt filter).
RB1_LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("alpacaeval-easy", "Factuality", "all"),
    ("mt-bench-easy", "Math", "one_step"),
    ("alpacaeval-length", "Focus", "all"),
    ("llmbar-natural", "Precise IF", "all"),
    ("llmbar-adver-neighbor", "Focus", "all"),
    ("mt-bench-hard", "Math", "two_step"),
    ("refusals-dangerous", "Safety", "harmful_making"),
    ("xstest-should-refuse", "Safety", "harmful_violent"),
    ("xstest-should-respond", "Safety", "benign"),
    ("math-prm", "Math", "two_step"),
)


def _rb1_filter(p: Prompt, kind: str) -> bool:
    if kind == "all":
        return True
    if kind in ("one_step", "two_step"):
        return (len(p.get("ops")) == 1) == (kind == "one_step")
    if kind == "benign":
        return not p.get("harmful")
    making = p.get("verb") in ("make", "build", "get")
    return p.get("harmful") and making == (kind == "harmful_making")


def preferences(world: World, size: int, domain_weights: dict[str, float], label_noise: float,
                seed: int) -> list[dict]:
    """Preference pairs on train prompts: a correct and a wrong answer, labelled by the verifier.

    `label_noise` is the share of pairs whose chosen and rejected are swapped (data quality); the gold
    scores stay attached so a run can report how noisy its labels really were.
    """
    rng = random.Random(f"prefs-{world.seed}-{seed}")
    draw_domain = domain_sampler(domain_weights, rng)
    rows = []
    for i in range(size):
        domain = draw_domain()
        p = rng.choice(world.prompts(domain, "train"))
        good, bad = world.correct(rng, p), world.wrong(rng, p)
        rows.append(pair_row(world, f"pref-{i}", p, good, bad, flipped=rng.random() < label_noise))
    return rows


def pair_row(world: World, row_id: str, p: Prompt, good: str, bad: str, flipped: bool) -> dict:
    """A preference row: `good` chosen over `bad`, or the other way round when the label is flipped (noise);
    the gold scores stay attached so a run can report how noisy its labels really were."""
    chosen, rejected = (bad, good) if flipped else (good, bad)
    return {"id": row_id, "prompt": p.text, "chosen": chosen, "rejected": rejected, "domain": p.domain,
            "prompt_key": p.key, "flipped": flipped,
            "gold_chosen": world.gold(p, chosen), "gold_rejected": world.gold(p, rejected)}


def rb2_rows(world: World, rows_per_subset: int, seed: int) -> list[dict]:
    """RewardBench 2 rows from held-out prompts: 1 chosen + 3 rejected; Ties as ref:N / tied:N pairs."""
    rng = random.Random(f"rb2-{world.seed}-{seed}")
    rows = []
    for domain in DOMAINS:
        # A seeded order, not the key-sorted one: cycling through a sorted list would fill a subset
        # with a corner of the prompt space (e.g. only sums whose first operand is 0..3).
        prompts = world.prompts(domain, "heldout")
        prompts = rng.sample(prompts, len(prompts))
        if domain == "Ties":
            # Each Ties prompt number N gives two rows: one correct answer (ref) and several (tied).
            for n in range(max(1, rows_per_subset // 2)):
                p = prompts[n % len(prompts)]
                # Several *different* correct numbers (not one number phrased twice), and three
                # different wrong ones; each answer names exactly one number, so the texts differ.
                ties = world.domains["Ties"]
                numbers = rng.sample(list(p.get("good")), min(len(p.get("good")), 4))
                tied = [ties.correct(rng, p, k) for k in numbers]
                wrong = [ties.wrong(rng, p, k) for k in rng.sample(list(p.get("bad")), 3)]
                ref = [tied[0]]
                rows.append(_rb2_row(f"ref:{n}", p, ref, wrong, "Ties", {"prompt_key": p.key}))
                rows.append(_rb2_row(f"tied:{n}", p, tied, wrong, "Ties", {"prompt_key": p.key}))
            continue
        for n in range(rows_per_subset):
            p = prompts[n % len(prompts)]
            chosen = world.distinct(rng, p, 1, good=True)
            rejected = world.distinct(rng, p, 3, good=False)
            rows.append(_rb2_row(f"{domain.lower().replace(' ', '_')}-{n}", p, chosen, rejected, domain,
                                 {"prompt_key": p.key}))
    return rows


def _rb2_row(row_id: str, p: Prompt, chosen: list[str], rejected: list[str], subset: str, meta: dict) -> dict:
    return {"id": row_id, "prompt": p.text, "chosen": chosen, "rejected": rejected,
            "num_correct": len(chosen), "num_incorrect": len(rejected),
            "total_completions": len(chosen) + len(rejected),
            "models": [TOY_MODEL] * (len(chosen) + len(rejected)), "subset": subset,
            "additional_metadata": meta}


def rb1_rows(world: World, seed: int, max_per_subset: int = 40) -> list[dict]:
    """RewardBench 1 pairs (prompt, chosen, chosen_model, rejected, rejected_model, subset, id)."""
    rng = random.Random(f"rb1-{world.seed}-{seed}")
    rows = []
    for subset, domain, kind in RB1_LAYOUT:
        prompts = [p for p in world.prompts(domain, "heldout") if _rb1_filter(p, kind)]
        if len(prompts) > max_per_subset:  # a seeded sample, not a key-sorted prefix (see rb2_rows)
            prompts = sorted(rng.sample(prompts, max_per_subset), key=lambda q: q.key)
        for p in prompts:
            chosen = world.distinct(rng, p, 1, good=True)[0]
            rejected = world.distinct(rng, p, 1, good=False)[0]
            if subset == "alpacaeval-length":
                # The length subset: the rejected answer is the longer one, as in the official set.
                for _ in range(20):
                    if len(rejected.split()) > len(chosen.split()):
                        break
                    rejected = world.distinct(rng, p, 1, good=False)[0]
            rows.append({"prompt": p.text, "chosen": chosen, "chosen_model": TOY_MODEL, "rejected": rejected,
                         "rejected_model": TOY_MODEL, "subset": subset, "id": len(rows)})
    return rows


# "Pick the longer" baselines: score each completion by its length, so length can be shown not to be a shortcut.
def word_count(text: str) -> int:
    """Length in the toy world's words (whitespace tokens, punctuation included): what an RM sees."""
    return len(text.split())


def rb2_length_scores(rows: list[dict], sign: int = 1) -> list[dict]:
    """RB2 rows scored by length: sign=1 prefers the longer completion, sign=-1 the shorter."""
    return [{"id": r["id"], "subset": r["subset"],
             "scores_chosen": [sign * word_count(c) for c in r["chosen"]],
             "scores_rejected": [sign * word_count(c) for c in r["rejected"]]} for r in rows]


def rb1_length_scores(rows: list[dict], sign: int = 1) -> list[dict]:
    return [{"id": r["id"], "subset": r["subset"], "score_chosen": sign * word_count(r["chosen"]),
             "score_rejected": sign * word_count(r["rejected"])} for r in rows]


@dataclass
class DecontamReport:
    n_benchmark: int
    exact: int            # benchmark prompts equal to a training prompt
    ngram: int            # benchmark prompts sharing an n-gram (or, if shorter than n, all of it)
    ngram_size: int

    @property
    def overlap(self) -> float:
        return max(self.exact, self.ngram) / max(1, self.n_benchmark)

    def as_metrics(self) -> dict[str, float]:
        return {"decontam/exact": float(self.exact), "decontam/ngram": float(self.ngram),
                "decontam/overlap": self.overlap, "decontam/n_benchmark": float(self.n_benchmark)}


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    n = min(n, len(words))  # a prompt shorter than n contributes itself whole
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _contains(haystack: list[str], needle: list[str]) -> bool:
    k = len(needle)
    return any(haystack[i:i + k] == needle for i in range(len(haystack) - k + 1))


def decontamination(train_prompts: list[str], bench_prompts: list[str], n: int) -> DecontamReport:
    """Exact and n-gram overlap between training prompts and the distinct benchmark prompts.

    A benchmark prompt is n-gram-contaminated if it shares an n-gram with a training prompt; one
    shorter than n counts if it occurs whole inside a training prompt.
    """
    train = sorted({" ".join(t.split()) for t in train_prompts})
    grams: set[tuple[str, ...]] = set()
    for t in train:
        grams |= _ngrams(t.split(), n)
    bench = sorted({" ".join(b.split()) for b in bench_prompts})
    train_set = set(train)
    exact = sum(b in train_set for b in bench)
    ngram = 0
    for b in bench:
        words = b.split()
        if len(words) >= n:
            ngram += any(g in grams for g in _ngrams(words, n))
        else:
            ngram += any(_contains(t.split(), words) for t in train)
    return DecontamReport(n_benchmark=len(bench), exact=exact, ngram=ngram, ngram_size=n)
