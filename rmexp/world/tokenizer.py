"""Word-level tokenizer of the toy world, built with `tokenizers` and loaded like any hub tokenizer.

Built once, saved with `save_pretrained`, and from then on loaded with `AutoTokenizer.from_pretrained`,
the same call that loads a hub tokenizer; the chat template is part of what is saved.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>"}
ROLE_TOKENS = ("<user>", "<assistant>")
# Mirrors rmexp.world.core.chat_text; a test keeps the two equal.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %} <user> {{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %} <assistant> {{ message['content'] }} {{ eos_token }}"
    "{% else %}{{ raise_exception('the toy chat template knows only user and assistant roles') }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} <assistant>{% endif %}"
)


def build_tokenizer(vocab: list[str]) -> PreTrainedTokenizerFast:
    specials = [*SPECIAL_TOKENS.values(), *ROLE_TOKENS]
    ids = {tok: i for i, tok in enumerate(specials + [w for w in vocab if w not in specials])}
    core = Tokenizer(models.WordLevel(ids, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS,
                                  additional_special_tokens=list(ROLE_TOKENS))
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def save_tokenizer(tok: PreTrainedTokenizerFast, path: Path) -> None:
    tok.save_pretrained(str(path))


def load_tokenizer(path: Path | str):
    return AutoTokenizer.from_pretrained(str(path))
