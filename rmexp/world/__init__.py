"""The embedded toy world (see DESIGN.md, "Toy world, in outline").

    from rmexp.world import World, rb2_rows
    world = World(seed=0)
    rows = rb2_rows(world, rows_per_subset=60, seed=0)

Command line: ``python -m rmexp.world export|report`` (see ``rmexp/world/__main__.py``).

The tokenizer helpers import transformers, so they are loaded on first use rather than here.
"""
from __future__ import annotations

from rmexp.world.core import World, chat_text
from rmexp.world.data import DecontamReport, decontamination, preferences, rb1_rows, rb2_rows
from rmexp.world.domains import DOMAINS, Prompt, is_refusal, number_text, parse_numbers

_TOKENIZER_NAMES = ("build_tokenizer", "save_tokenizer", "load_tokenizer")

__all__ = ["DOMAINS", "DecontamReport", "Prompt", "World", "chat_text", "decontamination", "is_refusal",
           "number_text", "parse_numbers", "preferences", "rb1_rows", "rb2_rows", *_TOKENIZER_NAMES]


def __getattr__(name: str):
    if name in _TOKENIZER_NAMES:
        from rmexp.world import tokenizer

        return getattr(tokenizer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
