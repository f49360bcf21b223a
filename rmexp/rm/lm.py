"""Pieces the language-model kinds share: where the response sits in a tokenized dialogue, batching under
a token budget, per-token heads, sequence log-probabilities and the identity of a base model."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rmexp.guards import require_finite
from rmexp.progress import progress_bar
from rmexp.rm.classifier import bucketed_batches, format_dialogue, lr_factor, make_optimizer, pad_batch


@dataclass
class Dialogue:
    """A tokenized (prompt, response): `start` is the index of the first response token; `marks` holds the
    token index where each requested response character offset ends (step ends for a PRM), less any that a
    cut from the left removed."""
    ids: list[int]
    start: int
    marks: list[int] = field(default_factory=list)


def encode_dialogue(tok, prompt: str, response: str, max_length: int, ends: tuple[int, ...] = ()) -> Dialogue:
    """Tokenize the dialogue as the RM reads it and locate the response by character offsets (works for
    word-level and BPE tokenizers alike); cut from the left to max_length, keeping the response end."""
    full = format_dialogue(tok, prompt, response)
    if response:
        r_start = full.rfind(response)
    else:  # the empty response sits right before the end-of-sequence text
        r_start = full.rfind(tok.eos_token) if tok.eos_token and tok.eos_token in full else len(full)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    start = next((i for i, (_, e) in enumerate(offsets) if e > r_start), len(ids) - 1)
    marks = [max(i for i, (s, _) in enumerate(offsets) if s < r_start + end) for end in ends]
    cut = max(0, len(ids) - max_length)
    # A response token needs one token of context before it to have a log-probability; marks that the cut
    # removed are dropped (always the earliest ones).
    return Dialogue(ids[cut:], max(1, start - cut), [m - cut for m in marks if m >= cut])


def budget_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length and cut into batches of at most batch_tokens padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


def attention_mask(lengths: torch.Tensor, width: int, device) -> torch.Tensor:
    return (torch.arange(width)[None, :] < lengths[:, None]).long().to(device)


def sequence_logprobs(model, dialogues: list[Dialogue], pad_id: int) -> torch.Tensor:
    """Sum of log pi(token | earlier tokens) over each dialogue's response tokens (float32, one per row)."""
    device = next(model.parameters()).device
    ids, lengths = pad_batch([d.ids for d in dialogues], pad_id)
    ids = ids.to(device)
    logits = model(input_ids=ids, attention_mask=attention_mask(lengths, ids.shape[1], device), use_cache=False).logits
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    pos = torch.arange(1, ids.shape[1])[None, :]
    starts = torch.tensor([d.start for d in dialogues])[:, None]
    keep = ((pos >= starts) & (pos < lengths[:, None])).to(device)
    return (logp * keep).sum(-1)


def token_logits(model, dialogues: list[Dialogue], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sequence-classification model's score head on every token: (B, T) logits and the lengths."""
    device = next(model.parameters()).device
    ids, lengths = pad_batch([d.ids for d in dialogues], pad_id)
    ids = ids.to(device)
    hidden = model.base_model(input_ids=ids, attention_mask=attention_mask(lengths, ids.shape[1], device),
                              use_cache=False)[0]
    return model.score(hidden).squeeze(-1).float(), lengths


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def mean_tail(history: list[tuple[int, float]], n: int) -> float:
    tail = [v for _, v in history[-max(1, n):]]
    return float(np.mean(tail)) if tail else math.nan


def fit(model, examples: list, lengths: list[int], loss_fn, *, lr: float, epochs: int, batch_size: int, train_cfg,
        progress: bool, name: str) -> dict[str, list[tuple[int, float]]]:
    """The training loop the trained kinds share: length-bucketed batches, AdamW, warmup then
    `train.schedule`, gradient clipping (`train.*`); loss_fn(batch) -> (loss, {metric: float})."""
    opt = make_optimizer(model, lr, train_cfg.weight_decay)
    rng = random.Random(f"batches-{train_cfg.seed}")
    total = math.ceil(len(examples) / batch_size) * epochs
    warmup = max(1, round(train_cfg.warmup_ratio * total))
    history: dict[str, list[tuple[int, float]]] = {}
    model.train()
    bar = progress_bar(None, name, progress, total=total)
    step = 0
    for _epoch in range(epochs):
        for batch in bucketed_batches(lengths, batch_size, rng):
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(step, total, warmup, train_cfg.schedule)
            loss, extras = loss_fn([examples[i] for i in batch])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: loss is {loss.item()} at step {step}; nothing is cached")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train_cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            opt.step()
            for key, value in {"train/loss": loss.item(), **extras}.items():
                history.setdefault(key, []).append((step, float(value)))
            step += 1
            bar.update(1)
    bar.close()
    model.eval()
    return history


def heldout_pair_accuracy(scorer, rows: list[dict]) -> dict[str, float]:
    """Held-out pairs oriented by gold: how often the truly better answer scores higher."""
    if not rows:
        return {"eval/n": 0.0}
    prompts = [r["prompt"] for r in rows]
    chosen = scorer.score(prompts, [r["chosen"] for r in rows])
    rejected = scorer.score(prompts, [r["rejected"] for r in rows])
    require_finite(f"rm={scorer.kind} held-out scores", np.concatenate([chosen, rejected]))
    return {"eval/acc": float((chosen > rejected).mean()), "eval/n": float(len(rows))}
