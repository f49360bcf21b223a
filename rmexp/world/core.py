"""The toy world: six verifiable domains, split prompts, candidates, gold scores, corpus and SFT data.

`World(seed)` is a pure function of its seed: the knowledge base, the train/held-out split of every
domain's prompt space and everything sampled from it with a given seed are the same on every machine.
"""
from __future__ import annotations

import random
from functools import cached_property

from rmexp.world.domains import (
    ATTRIBUTES, BENIGN_OBJECTS, DOMAINS, HARMFUL_OBJECTS, PEOPLE, TOOLS, TOPICS, Factuality, Focus, Math,
    PreciseIF, Prompt, Safety, Ties, extra_words,
)

WORLD_VERSION = 3  # bump when prompts, answers, verifiers or the corpus change: zoo, RM and sample caches key on it
HELDOUT_FRACTION = 0.3  # share of each domain's prompts kept for benchmarks and downstream evaluation
CHECKED_DOC_SHARE = 1 / 3  # corpus documents that are checked statements: enough for a 2-layer llama to learn a verdict


def domain_sampler(mix: dict[str, float], rng: random.Random):
    """A function drawing a domain name with probability proportional to its weight in `mix`."""
    names = [d for d in DOMAINS if mix.get(d, 0) > 0]
    weights = [mix[d] for d in names]
    return lambda: rng.choices(names, weights)[0]


def chat_text(prompt: str, response: str | None = None) -> str:
    """The chat template rendered as text (mirrors the tokenizer's template; a test keeps them equal)."""
    text = f"<bos> <user> {prompt} <assistant>"
    return text if response is None else f"{text} {response} <eos>"


class World:
    def __init__(self, seed: int = 0):
        self.seed = seed
        rng = random.Random(f"world-{seed}")
        self.domains = {
            "Factuality": Factuality(rng), "Precise IF": PreciseIF(), "Math": Math(),
            "Safety": Safety(rng), "Focus": Focus(), "Ties": Ties(),
        }
        assert tuple(self.domains) == DOMAINS
        self._split: dict[str, dict[str, list[Prompt]]] = {}
        self._heldout_units: dict[str, set[str]] = {}
        for name, domain in self.domains.items():
            prompts = sorted(domain.prompts(), key=lambda p: p.key)
            units = {p.key: self.units(p) for p in prompts}
            # The split is by unit (a fact, a substance; else the prompt itself): a held-out unit is never
            # shown by a train prompt, so preference data and SFT never reveal what a benchmark asks.
            all_units = sorted({u for us in units.values() for u in us})
            random.Random(f"split-{seed}-{name}").shuffle(all_units)
            held = set(all_units[:max(2, round(HELDOUT_FRACTION * len(all_units)))])
            self._split[name] = {"heldout": [p for p in prompts if held & set(units[p.key])],
                                 "train": [p for p in prompts if not held & set(units[p.key])]}
            self._heldout_units[name] = held
        self._train_keys = {d: {p.key for p in s["train"]} for d, s in self._split.items()}

    # -- prompts and answers ------------------------------------------------------------------
    def units(self, p: Prompt) -> tuple[str, ...]:
        """What a prompt reveals, the unit of the train/held-out split (the prompt itself by default)."""
        return getattr(self.domains[p.domain], "units", lambda q: (q.key,))(p)

    def prompts(self, domain: str, split: str) -> list[Prompt]:
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}; the domains are {list(DOMAINS)}")
        if split not in ("train", "heldout"):
            raise ValueError(f"unknown split {split!r}; use 'train' or 'heldout'")
        return self._split[domain][split]

    def sample_prompts(self, domain: str, split: str, n: int, seed: int = 0) -> list[Prompt]:
        """n prompts spread over the whole split (a seeded draw, not the first n by key)."""
        prompts = list(self.prompts(domain, split))
        random.Random(f"sample-{self.seed}-{seed}-{domain}-{split}").shuffle(prompts)
        return prompts[:n]

    def reveals_heldout(self, prompt: Prompt, text: str) -> bool:
        """Whether an answer to a train prompt states a held-out fact (Math's carried errors can)."""
        stated = getattr(self.domains[prompt.domain], "stated_units", None)
        return stated is not None and bool(stated(text) & self._heldout_units[prompt.domain]) \
            and prompt.key in self._train_keys[prompt.domain]

    def gold(self, prompt: Prompt, response: str) -> float:
        return self.domains[prompt.domain].gold(prompt, response)

    def correct(self, rng: random.Random, prompt: Prompt) -> str:
        return self.domains[prompt.domain].correct(rng, prompt)

    def wrong(self, rng: random.Random, prompt: Prompt) -> str:
        """A subtly wrong answer; drawn again until the verifier agrees that it is worse."""
        domain = self.domains[prompt.domain]
        for _ in range(50):
            text = domain.wrong(rng, prompt)
            if domain.gold(prompt, text) < 1.0 and not self.reveals_heldout(prompt, text):
                return text
        raise RuntimeError(f"could not draw a wrong answer for {prompt.key}")

    def distinct(self, rng: random.Random, prompt: Prompt, n: int, good: bool, avoid=()) -> list[str]:
        """n different answers, all correct (good) or all wrong, none in `avoid`."""
        out: list[str] = []
        for _ in range(200 * n):
            text = self.correct(rng, prompt) if good else self.wrong(rng, prompt)
            if text not in out and text not in avoid and (self.gold(prompt, text) == 1.0) == good:
                out.append(text)
                if len(out) == n:
                    return out
        raise RuntimeError(f"could not draw {n} distinct {'correct' if good else 'wrong'} answers for {prompt.key}")

    # -- vocabulary ------------------------------------------------------------------------------
    @cached_property
    def vocab(self) -> list[str]:
        words = set(extra_words()) | {str(d) for d in range(10)}
        for values in ATTRIBUTES.values():
            words |= set(values)
        words |= set(ATTRIBUTES)
        for topic, ws in TOPICS.items():
            words |= {topic, *ws}
        for phrase in (*HARMFUL_OBJECTS, *PEOPLE, *BENIGN_OBJECTS, *TOOLS):
            words |= set(phrase.split())
        for domain in self.domains.values():
            for p in domain.prompts():
                words |= set(p.text.split())
            for line in getattr(domain, "truths", lambda: [])():
                words |= set(line.split())
            # Answers too, so a word used only by a generator's phrasing is not missed.
            rng = random.Random(0)
            for p in domain.prompts():
                words |= set(domain.correct(rng, p).split()) | set(domain.wrong(rng, p).split())
        return sorted(words)

    # -- corpora -------------------------------------------------------------------------------
    def truths(self, domain: str) -> list[str]:
        return getattr(self.domains[domain], "truths", lambda: [])()

    def pretraining_docs(self, mix: dict[str, float], n_docs: int, seed: int) -> list[str]:
        """Documents of world truths and correct train-split dialogues, domains drawn by `mix`, a third of
        them replaced by checked statements of the mix's domains that state facts (Factuality, Math).

        Held-out prompts never appear as dialogues: knowledge about them comes only from the
        declarative truths (as a real base model knows facts it was never quizzed on).
        """
        rng = random.Random(f"corpus-{self.seed}-{seed}")
        draw_domain = domain_sampler(mix, rng)
        docs = []
        for _ in range(n_docs):
            domain = draw_domain()
            truths = self.truths(domain)
            if truths and rng.random() < 0.6:
                docs.append(" ".join(rng.choice(truths) for _ in range(3)))
            else:
                p = rng.choice(self.prompts(domain, "train"))
                docs.append(chat_text(p.text, self.correct(rng, p)))
        # Checked statements ("the colour of zorvex is red . no ."), each drawn anew with a fresh wrong value, so a
        # base learns to judge a claim against what it knows rather than a memorised verdict per claim; without
        # them no base judged held-out facts and RMs read Factuality at chance (docs/world_calibration.md,
        # 2026-12-05). Their own stream, so the plain documents stay as they were.
        # The claims' domains follow the mix too: a math-only corpus states no facts.
        claim_mix = {d: w for d, w in mix.items() if hasattr(self.domains[d], "claim") and w > 0}
        if not claim_mix:
            return docs
        check_rng = random.Random(f"checked-{self.seed}-{seed}")
        draw_claim = domain_sampler(claim_mix, check_rng)
        for i in range(len(docs)):
            if check_rng.random() < CHECKED_DOC_SHARE:
                docs[i] = " ".join(self.checked_statement(check_rng, draw_claim()) for _ in range(3))
        return docs

    def checked_statement(self, rng: random.Random, domain: str) -> str:
        """A claim of a domain that states facts, true half the time, followed by its verdict ("yes" / "no")."""
        true = rng.random() < 0.5
        return f"{self.domains[domain].claim(rng, true)} {'yes' if true else 'no'} ."

    def sft_examples(self, n: int, wrong_rate: float, seed: int) -> list[tuple[Prompt, str]]:
        """Dialogues on train prompts, a `wrong_rate` share of them with a wrong answer (policy headroom)."""
        rng = random.Random(f"sft-{self.seed}-{seed}")
        out = []
        for i in range(n):
            domain = DOMAINS[i % len(DOMAINS)]
            p = rng.choice(self.prompts(domain, "train"))
            out.append((p, self.wrong(rng, p) if rng.random() < wrong_rate else self.correct(rng, p)))
        return out
