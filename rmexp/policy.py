"""A downstream policy as the methods use it: its identity, its prompts as token ids, and where its turn ends.

Two kinds, one interface: a zoo policy (`downstream.policy.model=<conf/model entry>`, built on first use) and an
hf policy (`downstream.policy.model=hf downstream.policy.path=<hub id or directory>`). Prompts are formatted by
the tokenizer's chat template (`apply_chat_template(..., add_generation_prompt=True)`) for hf policies, and by
`rmexp.world.core.chat_text` for zoo policies (what they were trained on; the toy template renders the same text,
and keeping the function keeps toy samples bit-identical). Sampling stops at eos and at the template's
end-of-turn token (ChatML's `<|im_end|>`, Llama 3's `<|eot_id|>`, ...), which chat models emit instead of eos.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

TURN_MARK = "RMEXPTURNMARK"  # a word no template contains: what follows it in a rendered reply is the turn's end


def is_zoo(pcfg: DictConfig) -> bool:
    return pcfg.source == "toy"


def policy_identity(path: Path | str) -> str:
    """What the policy's weights are, for cache keys: the content id of a local directory (a zoo entry or a
    save_pretrained folder); for a hub id, the id and the commit of its snapshot in the local HF cache (the id
    alone when not cached). Hub weights are not re-hashed: gigabytes per trial."""
    from rmexp.cache import content_id

    local = Path(str(path)).expanduser()
    if local.is_dir():
        return content_id(local)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(path), "config.json")
    except Exception:  # noqa: BLE001 - not a repo id: the id as given
        found = None
    return f"hub:{path}@{Path(found).parent.name}" if isinstance(found, str) else f"hub:{path}"


def load_policy(path: Path | str, pcfg: DictConfig):
    """(model, tokenizer) of a policy, eval mode; a tokenizer without a pad token pads with eos (batched
    sampling needs one; the pad positions are masked)."""
    from rmexp import zoo

    model, tok = zoo.load_causal_lm(path, trust_remote_code=bool(pcfg.trust_remote_code))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def load_tokenizer(path: Path | str, pcfg: DictConfig):
    """The policy's tokenizer and generation config (None when it has none), without its weights: enough for a
    cache key (queries and stop ids), so cached samples of a large model are read without loading it."""
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=bool(pcfg.trust_remote_code))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    try:
        gen = GenerationConfig.from_pretrained(str(path))
    except (OSError, ValueError):  # no generation_config.json: eos and the template decide
        gen = None
    return tok, gen


def chat_query_text(tok, prompt: str) -> str:
    """The prompt rendered for a chat policy: one user turn and the assistant's header; a tokenizer without a
    template gets the prompt as is (a base model continues it)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
    return prompt


def queries(tok, prompts: list[str], zoo_policy: bool) -> list[list[int]]:
    """Token ids of each prompt as the policy sees it, ending where its response begins."""
    if zoo_policy:
        from rmexp.world.core import chat_text

        return [tok(chat_text(p), add_special_tokens=False)["input_ids"] for p in prompts]
    # The rendered template already holds the special tokens it needs (bos included): add none.
    texts = [chat_query_text(tok, p) for p in prompts]
    special = not getattr(tok, "chat_template", None)
    return [tok(t, add_special_tokens=special)["input_ids"] for t in texts]


def end_of_turn_id(tok) -> int | None:
    """The token the chat template closes an assistant turn with, when it is a special token; None without a
    template or when the template closes turns with plain text."""
    if not getattr(tok, "chat_template", None):
        return None
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": TURN_MARK}],
                                       tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses this conversation: no end-of-turn known
        return None
    if TURN_MARK not in text:
        return None
    after = text.split(TURN_MARK, 1)[1].lstrip()
    ids = tok(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(tok.all_special_ids) | set(getattr(tok, "added_tokens_decoder", {}) or {})
    return ids[0] if ids and ids[0] in special else None


def stop_ids(tok, generation_config=None) -> list[int]:
    """Token ids that end a response: eos, the generation config's eos ids (a list for many chat models), and the
    template's end-of-turn token. Sorted, for cache keys."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen_eos = getattr(generation_config, "eos_token_id", None)
    ids |= set(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos] if gen_eos is not None else [])
    eot = end_of_turn_id(tok)
    if eot is not None:
        ids.add(eot)
    return sorted(int(i) for i in ids)
