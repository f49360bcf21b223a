"""IFEval (`prompt`, `instruction_id_list`, `kwargs`): the share of a prompt's instructions followed.

The checks follow the published IFEval reference implementation's semantics (strict mode), written
here because depending on lm-eval would pull in a whole evaluation framework. Instructions whose
reference check needs a language detector or a sentence splitter (`language:response_language`,
`length_constraints:number_sentences`) are refused by name when a row uses them, not guessed.
Words are counted as runs of `\\w` characters, as the reference's `RegexpTokenizer(r"\\w+")` does.
Two simplifications: the case checks skip the reference's English-language detection (so they are
looser on non-English text), and capital words are counted over `\\w+` runs rather than nltk tokens.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from rmexp.tasks import GoldTask, TaskError, TaskItem, register_task

_RELATIONS = {"less than": lambda n, k: n < k, "at least": lambda n, k: n >= k}


def _relation(kw: dict[str, Any], count: int, key: str) -> bool:
    rel = kw.get("relation", "at least")
    if rel not in _RELATIONS:
        raise TaskError(f"relation must be one of {list(_RELATIONS)}, got {rel!r}")
    return _RELATIONS[rel](count, int(kw[key]))


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _paragraph_count(parts: list[str]) -> int | None:
    """Non-empty parts; None when an empty part sits between two others (the reference fails those)."""
    n = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                n -= 1
            else:
                return None
    return n


def _bullets(r: str, kw) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    return len(stars) + len(dashes) == int(kw["num_bullets"])


def _highlights(r: str, kw) -> bool:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", r) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", r) if h.removeprefix("**").removesuffix("**").strip()]
    return len(single) + len(double) >= int(kw["num_highlights"])


def _sections(r: str, kw) -> bool:
    splitter = kw["section_spliter"].strip() + r"\s?\d+\s?"
    return len(re.split(r"\s?" + splitter, r)) - 1 >= int(kw["num_sections"])


def _json(r: str, _kw) -> bool:
    text = r.strip().removeprefix("```json").removeprefix("```Json").removeprefix("```JSON")
    text = text.removeprefix("```").removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _paragraphs(r: str, kw) -> bool:
    return _paragraph_count(re.split(r"\s?\*\*\*\s?", r)) == int(kw["num_paragraphs"])


def _nth_paragraph_first_word(r: str, kw) -> bool:
    parts = re.split(r"\n\n", r)
    count = sum(1 for p in parts if p.strip())
    nth = int(kw["nth_paragraph"])
    if nth > count or nth > len(parts) or not parts[nth - 1].strip():
        return False
    word = parts[nth - 1].strip().split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for ch in word:
        if ch in ".,?!'\"":
            break
        first += ch.lower()
    return count == int(kw["num_paragraphs"]) and first == kw["first_word"].lower()


def _postscript(r: str, kw) -> bool:
    marker = kw["postscript_marker"].strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, r.lower(), flags=re.MULTILINE))


def _two_responses(r: str, _kw) -> bool:
    parts = r.split("******")
    valid = []
    for i, part in enumerate(parts):
        if not part.strip():
            if i not in (0, len(parts) - 1):
                return False
        else:
            valid.append(part)
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def _title(r: str, _kw) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r))


def _quotation(r: str, _kw) -> bool:
    r = r.strip()
    return len(r) > 1 and r[0] == '"' and r[-1] == '"'


CHECKS: dict[str, Callable[[str, dict[str, Any]], bool]] = {
    "punctuation:no_comma": lambda r, kw: "," not in r,
    "change_case:english_lowercase": lambda r, kw: r.islower(),
    "change_case:english_capital": lambda r, kw: r.isupper(),
    "change_case:capital_word_frequency": lambda r, kw: _relation(
        kw | {"relation": kw.get("capital_relation", "at least")},
        sum(w.isupper() for w in _words(r)), "capital_frequency"),
    "keywords:existence": lambda r, kw: all(re.search(k, r, flags=re.IGNORECASE) for k in kw["keywords"]),
    "keywords:forbidden_words": lambda r, kw: not any(
        re.search(r"\b" + w + r"\b", r, flags=re.IGNORECASE) for w in kw["forbidden_words"]),
    "keywords:frequency": lambda r, kw: _relation(
        kw, len(re.findall(kw["keyword"], r, flags=re.IGNORECASE)), "frequency"),
    "keywords:letter_frequency": lambda r, kw: _relation(
        kw | {"relation": kw.get("let_relation", "at least")}, r.lower().count(kw["letter"].lower()),
        "let_frequency"),
    "length_constraints:number_words": lambda r, kw: _relation(kw, len(_words(r)), "num_words"),
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:json_format": _json,
    "detectable_format:title": _title,
    "detectable_format:constrained_response": lambda r, kw: any(
        o in r.strip() for o in ("My answer is yes.", "My answer is no.", "My answer is maybe.")),
    "detectable_content:number_placeholders": lambda r, kw: len(re.findall(r"\[.*?\]", r)) >= int(
        kw["num_placeholders"]),
    "detectable_content:postscript": _postscript,
    "startend:end_checker": lambda r, kw: r.strip().lower().endswith(kw["end_phrase"].strip().lower()),
    "startend:quotation": _quotation,
    "combination:repeat_prompt": lambda r, kw: r.strip().lower().startswith(kw["prompt_to_repeat"].strip().lower()),
    "combination:two_responses": _two_responses,
}


def _item(i: int, row: dict) -> TaskItem:
    ids, kwargs = list(row["instruction_id_list"]), list(row["kwargs"])
    if len(ids) != len(kwargs):
        raise TaskError(f"{len(ids)} instruction ids but {len(kwargs)} kwargs")
    unknown = [x for x in ids if x not in CHECKS]
    if unknown:
        raise TaskError(f"instruction(s) {unknown} have no check here; supported: {sorted(CHECKS)}")
    # Parquet/JSON readers fill absent kwargs with None: keep only what the row sets.
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    return TaskItem(key=str(row.get("key", i)), prompt=row["prompt"],
                    reference={"instruction_id_list": ids, "kwargs": kwargs})


def followed(item: TaskItem, response: str) -> list[bool]:
    """One flag per instruction of the item (strict: the response as written)."""
    ref = item.reference
    return [bool(response.strip()) and CHECKS[i](response, kw) for i, kw in zip(ref["instruction_id_list"], ref["kwargs"])]


def gold(item: TaskItem, response: str) -> float:
    flags = followed(item, response)
    return sum(flags) / len(flags)


register_task(GoldTask("ifeval", ("prompt", "instruction_id_list", "kwargs"), _item, gold))
