"""Real preference data: the common published layouts read into `{prompt, chosen, rejected[, margin]}` rows,
and a mix of several sources drawn by weight.

Layouts accepted per row (after an optional column mapping, e.g. `{"prompt": "instruction"}`):

* strings: `prompt`, `chosen`, `rejected`;
* Anthropic HH strings: no prompt column, `chosen` and `rejected` are whole transcripts
  (`\n\nHuman: ... \n\nAssistant: ...`); the response is the text after the last `Assistant:` turn
  and the prompt is the transcript before it, which must be the same in both;
* implicit-prompt chat lists: `chosen` and `rejected` are whole conversations ending in an assistant
  turn (Skywork Reward Preference, UltraFeedback binarized, Tulu 3 preference mixture); the prompt is
  the conversation before the last turn and must be the same in both;
* explicit-prompt chat lists: `prompt` is a message list (or a string) and `chosen` / `rejected` hold
  only the assistant turn(s).

A multi-turn context is flattened to its user turns joined by newlines, the way the toy chat template
shows a single user turn; the response is the last assistant turn.
"""
from __future__ import annotations

import math
import random
from typing import Any, Mapping, Sequence


class PreferenceDataError(ValueError):
    """Names the source and the row."""


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) and "content" in m for m in value)


def _context(messages: list[Mapping]) -> str:
    return "\n".join(str(m["content"]) for m in messages if m.get("role") == "user")


HH_ASSISTANT = "\n\nAssistant:"


def _split_conversation(value: Any, where: str, column: str) -> tuple[str | None, str]:
    """(prompt or None, response) of a string or a message list ending in an assistant turn."""
    if isinstance(value, str):
        if HH_ASSISTANT in value:  # an Anthropic HH transcript
            head, _, tail = value.rpartition(HH_ASSISTANT)
            return head.strip(), tail.strip()
        return None, value
    if _is_messages(value):
        if value[-1].get("role") != "assistant":
            raise PreferenceDataError(f"{where}: {column} messages must end with an assistant turn")
        return (_context(value[:-1]) or None), str(value[-1]["content"])
    raise PreferenceDataError(f"{where}: {column} must be a string or a list of chat messages, "
                              f"got {type(value).__name__}")


def normalise_rows(rows: Sequence[Mapping[str, Any]], source: str, columns: Mapping[str, str] | None = None,
                   margin_column: str | None = None) -> list[dict]:
    """Rows of one source -> `{id, prompt, chosen, rejected, domain[, margin]}`; errors name source and row."""
    columns = dict(columns or {})
    names = {k: columns.get(k, k) for k in ("prompt", "chosen", "rejected")}
    out = []
    for i, row in enumerate(rows):
        where = f"{source} row {row.get('id', i)}"
        for key in ("chosen", "rejected"):
            if names[key] not in row:
                raise PreferenceDataError(f"{where}: missing column {names[key]!r} (for {key}); columns present: "
                                          f"{sorted(row)}; map others with data.columns")
        p_chosen, chosen = _split_conversation(row[names["chosen"]], where, names["chosen"])
        p_rejected, rejected = _split_conversation(row[names["rejected"]], where, names["rejected"])
        prompt = row.get(names["prompt"])
        if _is_messages(prompt):
            prompt = _context(prompt)
        if prompt is None or prompt == "":
            if p_chosen is not None and p_rejected is not None and p_chosen != p_rejected:
                raise PreferenceDataError(f"{where}: chosen and rejected conversations have different prompts")
            prompt = p_chosen
        if not prompt:
            raise PreferenceDataError(f"{where}: no prompt (a {names['prompt']!r} column, or chat messages in "
                                      f"{names['chosen']!r})")
        item = {"id": f"{source}:{row.get('id', i)}", "prompt": str(prompt), "chosen": chosen,
                "rejected": rejected, "domain": str(row.get("subset", source))}
        if margin_column is not None:
            margin = row.get(margin_column)
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
                raise PreferenceDataError(f"{where}: margin column {margin_column!r} must be a finite number, "
                                          f"got {margin!r}")
            item["margin"] = float(margin)
        out.append(item)
    return out


def mix_counts(weights: Sequence[float], size: int) -> list[int]:
    """Rows per source for a mix of `size` rows: shares by weight, rounded by largest remainder (sums to size)."""
    if not weights or any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise PreferenceDataError(f"mix weights must be finite, >= 0 and not all 0; got {list(weights)}")
    exact = [size * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[:size - sum(counts)]:
        counts[i] += 1
    return counts


def mix_sources(sources: Sequence[tuple[str, list[dict], float]], size: int, seed: int) -> list[dict]:
    """Draw `size` rows from (name, rows, weight) sources, each without replacement, in a seeded order."""
    counts = mix_counts([w for _, _, w in sources], size)
    rng = random.Random(f"mix-{seed}")
    out: list[dict] = []
    for (name, rows, _), n in zip(sources, counts):
        if n > len(rows):
            raise PreferenceDataError(f"data source {name!r} has {len(rows)} rows but the mix asks for {n}; "
                                      f"lower data.size or this source's weight")
        out += rng.sample(rows, n)
    rng.shuffle(out)
    return out
