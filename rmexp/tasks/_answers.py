"""Number extraction shared by the numeric-answer checkers."""
from __future__ import annotations

import re
from fractions import Fraction

# A number as people write it: sign, thousands separators, decimals, an optional trailing % or unit.
_NUMBER = re.compile(r"-?\$?\s?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\$?\s?\d+(?:\.\d+)?|-?\$?\s?\.\d+")


def parse_number(text: str) -> Fraction | None:
    """'1,234' -> 1234, '$5.50' -> 11/2, '-3' -> -3; None when text is no number."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def first_number(text: str) -> Fraction | None:
    found = _NUMBER.findall(text)
    return parse_number(found[0]) if found else None


def last_number(text: str) -> Fraction | None:
    """The last number in a free-text answer (units, currency and commas allowed around it)."""
    found = _NUMBER.findall(text)
    return parse_number(found[-1]) if found else None
