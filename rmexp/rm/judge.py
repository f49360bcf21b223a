"""`rm=judge`: a generative model prompted for a rating (LLM-as-a-judge).

The judge reads `rm.template` (with {prompt} and {response}) as a user turn of its chat template, then
`rm.answer_prefix`. Two ways to read the rating:
  * `mode=scored` (robust, the default): the expected rating under the judge's next-token distribution
    restricted to the rating tokens ("1" .. "9"), so every output is a rating and nothing fails to parse;
  * `mode=generate`: greedy generation, parsed by `parse_rating`; unparseable outputs are scored as
    `rm.fallback` and counted in describe()["metrics"]["judge/parse_failures"].
The judge does not train; `rm.model=null` judges with the trial's base model, or name a conf/model entry
(e.g. an SFT policy). With model=hf any chat model works.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rmexp.rm.base import RMContext, RMKind, register_rm_kind
from rmexp.rm.classifier import pad_batch, resolve_device
from rmexp.rm.lm import attention_mask, budget_batches, n_params
from rmexp.rm.options import fail, parse_options

NUMBER = re.compile(r"\d+(?:\.\d+)?(?:\s*/\s*\d+)?")


@dataclass
class JudgeOptions:
    template: str
    answer_prefix: str
    mode: str
    min_rating: int
    max_rating: int
    fallback: float
    max_new_tokens: int
    max_length: int
    model: Optional[str]

    def check(self) -> None:
        for slot in ("{prompt}", "{response}"):
            if slot not in self.template:
                fail("template", self.template, f"it must contain {slot}")
        if self.mode not in ("scored", "generate"):
            fail("mode", self.mode, "choose one of ['scored', 'generate']")
        if not 0 <= self.min_rating < self.max_rating <= 9:
            fail("max_rating", self.max_rating, "ratings are single digits: 0 <= min_rating < max_rating <= 9")
        for key in ("max_new_tokens", "max_length"):
            if not getattr(self, key) > 0:
                fail(key, getattr(self, key), "it must be > 0")


def parse_rating(text: str, low: int, high: int) -> float | None:
    """The rating in a judge's output, or None when there is no single clear one in [low, high].

    Markdown emphasis is ignored; after a "rating"/"score" keyword the first number counts, elsewhere the text
    must hold exactly one number; "x/y" is x on a scale of y (rescaled to `high`); a number followed by another
    bare number ("3 4", a digit-by-digit number or two ratings) is ambiguous."""
    text = re.sub(r"[*_`#]", "", text.lower())
    keyword = max(text.rfind("rating"), text.rfind("score"))
    tail = text[keyword:] if keyword >= 0 else text
    numbers = list(NUMBER.finditer(tail))
    if not numbers or (keyword < 0 and len(numbers) > 1):
        return None
    first = numbers[0]
    if len(numbers) > 1 and tail[first.end():numbers[1].start()].strip() == "":
        return None
    value, _, scale = first.group().partition("/")
    rating = float(value) * high / float(scale) if scale.strip() else float(value)
    return rating if low <= rating <= high else None


@dataclass
class JudgeScorer:
    model: torch.nn.Module
    tok: object
    opts: JudgeOptions
    rating_ids: list[int]
    counts: dict = field(default_factory=lambda: {"judged": 0, "parse_failures": 0, "digit_mass": 0.0})
    kind: str = "judge"

    def judge_text(self, prompt: str, response: str) -> str:
        body = self.opts.template.replace("{prompt}", prompt).replace("{response}", response)
        if getattr(self.tok, "chat_template", None):
            head = self.tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                                add_generation_prompt=True)
        else:
            head = body + "\n"
        return head + self.opts.answer_prefix

    def _encode(self, prompts, responses) -> list[list[int]]:
        texts = [self.judge_text(p, r) for p, r in zip(prompts, responses)]
        # Cut from the left: the rating request at the end must survive.
        return [x[-self.opts.max_length:] for x in self.tok(texts, add_special_tokens=False)["input_ids"]]

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> np.ndarray:
        self.model.eval()
        ids = self._encode(prompts, responses)
        if self.opts.mode == "scored":
            return self._expected_ratings(ids, batch_tokens)
        return self._generated_ratings(ids)

    def _expected_ratings(self, ids: list[list[int]], batch_tokens: int) -> np.ndarray:
        device = next(self.model.parameters()).device
        ratings = torch.arange(self.opts.min_rating, self.opts.max_rating + 1, dtype=torch.float64)
        out = np.empty(len(ids), dtype=np.float64)
        for idx in budget_batches([len(x) for x in ids], batch_tokens):
            x, lengths = pad_batch([ids[i] for i in idx], self.tok.pad_token_id)
            logits = self.model(input_ids=x.to(device), attention_mask=attention_mask(lengths, x.shape[1], device),
                                use_cache=False).logits
            last = logits[torch.arange(len(idx), device=device), (lengths - 1).to(device)].double().cpu()
            probs = torch.softmax(last, -1)[:, self.rating_ids]
            self.counts["digit_mass"] += probs.sum(-1).sum().item()
            out[idx] = ((probs / probs.sum(-1, keepdim=True)) * ratings).sum(-1).numpy()
        self.counts["judged"] += len(ids)
        return out

    def _generated_ratings(self, ids: list[list[int]]) -> np.ndarray:
        device = next(self.model.parameters()).device
        out = np.empty(len(ids), dtype=np.float64)
        by_len: dict[int, list[int]] = {}
        for i, x in enumerate(ids):
            by_len.setdefault(len(x), []).append(i)
        for length, idx in sorted(by_len.items()):  # equal lengths: no padding needed for generation
            x = torch.tensor([ids[i] for i in idx], device=device)
            gen = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                      max_new_tokens=self.opts.max_new_tokens, pad_token_id=self.tok.pad_token_id,
                                      eos_token_id=self.tok.eos_token_id)
            for i, text in zip(idx, self.tok.batch_decode(gen[:, length:], skip_special_tokens=True)):
                rating = parse_rating(text, self.opts.min_rating, self.opts.max_rating)
                if rating is None:
                    self.counts["parse_failures"] += 1
                out[i] = self.opts.fallback if rating is None else rating
        self.counts["judged"] += len(ids)
        return out

    def describe(self) -> dict:
        """Counts so far: read it after scoring to see how many outputs failed to parse."""
        judged = max(1, self.counts["judged"])
        metrics = {"judge/parse_failures": float(self.counts["parse_failures"]),
                   "judge/parse_failure_rate": self.counts["parse_failures"] / judged,
                   "judge/n_judged": float(self.counts["judged"])}
        if self.opts.mode == "scored":  # how much of the judge's next-token mass is on a rating at all
            metrics["judge/rating_mass"] = self.counts["digit_mass"] / judged
        return {"kind": self.kind, "params": n_params(self.model), "metrics": metrics, "history": {}}

    def value_init(self):
        return None


def rating_token_ids(tok, low: int, high: int) -> list[int]:
    ids = []
    for rating in range(low, high + 1):
        pieces = tok(str(rating), add_special_tokens=False)["input_ids"]
        if len(pieces) != 1 or pieces[0] == tok.unk_token_id:
            raise ValueError(f"error: rm=judge: the judge's tokenizer has no single token for rating {rating!r} "
                             f"(got {pieces}); rm.mode=scored needs one token per rating")
        ids.append(pieces[0])
    return ids


def build(ctx: RMContext) -> JudgeScorer:
    opts = parse_options(JudgeOptions, ctx.cfg.rm, "judge")
    path = ctx.base
    if opts.model is not None:
        from rmexp import zoo  # the judge may be another zoo model (built on first use)

        path, _ = zoo.policy_path(opts.model, ctx.world, ctx.cache, ctx.progress)
    trust = ctx.cfg.model.trust_remote_code
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust)
    model.to(resolve_device(ctx.cfg.device)).eval()
    rating_ids = rating_token_ids(tok, opts.min_rating, opts.max_rating) if opts.mode == "scored" else []
    return JudgeScorer(model, tok, opts, rating_ids)


JUDGE = register_rm_kind(RMKind("judge", JudgeOptions, build))
