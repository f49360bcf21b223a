"""Base-model zoo: tiny Llama- and GPT-2-shaped models pretrained on the toy world, and SFT variants.

A zoo model is built on first use (pretraining on the world's corpus with the family's domain mix, then
optional SFT), saved with `save_pretrained` (safetensors) under a content hash of its config, and from then
on loaded with `from_pretrained` -- the same call that loads a hub model. `model.source=hf` skips building
and loads `model.path` (a hub id or a local directory) instead.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

from rmexp.cache import cached
from rmexp.config import config_hash, load_model_config, numerics
from rmexp.progress import progress_bar
from rmexp.world.core import WORLD_VERSION, World, chat_text
from rmexp.world.domains import DOMAINS
from rmexp.world.tokenizer import build_tokenizer

ZOO_VERSION = 2  # bump when the build recipe or layout changes, so cached models are rebuilt (2: rmexp.cache manifests)
MAX_POSITIONS = 128


class ModelNotFoundError(RuntimeError):
    pass


def _hf_config(cfg: DictConfig, tok) -> LlamaConfig | GPT2Config:
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id)
    if cfg.family == "llama":
        return LlamaConfig(hidden_size=cfg.d_model, intermediate_size=4 * cfg.d_model,
                           num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                           num_key_value_heads=cfg.n_head, max_position_embeddings=MAX_POSITIONS,
                           tie_word_embeddings=True, **ids)
    return GPT2Config(n_embd=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head, n_positions=MAX_POSITIONS,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)


def _lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _pack_blocks(tok, docs: list[str], block: int) -> torch.Tensor:
    """Concatenate tokenized documents and cut fixed-size blocks (static shapes, no padding waste)."""
    ids: list[int] = []
    for doc in docs:
        text = doc if doc.startswith("<bos>") else f"<bos> {doc} <eos>"
        ids.extend(tok(text, add_special_tokens=False)["input_ids"])
    n = len(ids) // block
    return torch.tensor(ids[: n * block]).view(n, block)


def pretrain(model, tok, world: World, cfg: DictConfig, progress: bool) -> list[float]:
    steps, batch, block = cfg.pretrain_steps, cfg.pretrain_batch, cfg.block_size
    # ~12 tokens per document: draw enough documents for every step to see fresh blocks.
    docs = world.pretraining_docs(dict(cfg.corpus_mix), n_docs=steps * batch * block // 12 + 100, seed=cfg.seed)
    blocks = _pack_blocks(tok, docs, block)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(blocks), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    losses = []
    bar = progress_bar(range(steps), f"pretrain {cfg.name}", progress)
    for step in bar:
        idx = order[(step * batch) % len(order):][:batch]
        if len(idx) < batch:
            idx = order[:batch]
        x = blocks[idx]
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, cfg.pretrain_lr, warmup=max(1, steps // 20))
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return losses


def _dialogue_batch(tok, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded dialogues with labels on the response tokens only (the SFT / LM-eval target)."""
    rows, labels = [], []
    for prompt, response in pairs:
        head = tok(chat_text(prompt), add_special_tokens=False)["input_ids"]
        full = tok(chat_text(prompt, response), add_special_tokens=False)["input_ids"]
        rows.append(full)
        labels.append([-100] * len(head) + full[len(head):])
    width = max(map(len, rows))
    pad = tok.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([l + [-100] * (width - len(l)) for l in labels])
    return ids, (ids != pad).long(), lab


def sft(model, tok, world: World, cfg: DictConfig, progress: bool) -> list[float]:
    batch = 32
    examples = world.sft_examples(cfg.sft_steps * batch, cfg.sft_wrong_rate, seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr / 3, weight_decay=0.0)
    model.train()
    losses = []
    for step in progress_bar(range(cfg.sft_steps), f"sft {cfg.name}", progress):
        chunk = examples[step * batch:(step + 1) * batch]
        ids, mask, lab = _dialogue_batch(tok, [(p.text, r) for p, r in chunk])
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.sft_steps, cfg.pretrain_lr / 3, warmup=max(1, cfg.sft_steps // 20))
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def heldout_lm_loss(model, tok, world: World, per_domain: int = 20, seed: int = 0) -> float:
    """Mean response-token LM loss on correct answers to held-out prompts (never seen as dialogues)."""
    import random
    rng = random.Random(seed)
    pairs = [(p.text, world.correct(rng, p)) for d in DOMAINS for p in world.sample_prompts(d, "heldout", per_domain, seed)]
    model.eval()
    ids, mask, lab = _dialogue_batch(tok, pairs)
    return model(input_ids=ids, attention_mask=mask, labels=lab).loss.item()


def zoo_key(cfg: DictConfig, world_seed: int) -> str:
    """Hash of what determines the weights: the same recipe under another name or size label is the same
    model, a random-init model ignores the pretraining recipe, and a base ignores the SFT settings."""
    recipe = OmegaConf.to_container(cfg, resolve=True)
    for label in ("name", "size", "source", "path", "trust_remote_code", "rm_lr"):  # rm_lr: the RM's, not the base's
        recipe.pop(label)
    if recipe["init"] == "random":
        for key in ("pretrain_steps", "pretrain_lr", "pretrain_batch", "block_size", "corpus_mix"):
            recipe.pop(key)
    if not recipe["sft_steps"]:
        recipe.pop("sft_wrong_rate")
    return config_hash(recipe, world_seed, WORLD_VERSION, ZOO_VERSION, numerics())  # config.numerics


def model_path(cfg: DictConfig, world: World, cache_dir: str | Path, progress: bool = True) -> Path:
    """The directory to `from_pretrained` for this model config, building it first if needed."""
    if cfg.source == "hf":
        local = Path(cfg.path).expanduser()
        if local.exists():
            return local
        return Path(cfg.path)  # a hub id: from_pretrained resolves it (offline: see load errors)
    # Named by recipe, not by config name: an SFT variant finds its base under the base's directory. Built
    # once under a lock (two trials that need the same base wait for one build) and published atomically.
    label = f"{cfg.family}_{cfg.size}" + ("_random" if cfg.init == "random" else "") + ("_sft" if cfg.sft_steps else "")
    return cached("zoo", zoo_key(cfg, world.seed), cache_dir,
                  lambda folder: build(cfg, world, folder, progress, cache_dir), lambda folder: folder, label=label)


def build(cfg: DictConfig, world: World, folder: Path, progress: bool = True, cache_dir: str | Path = "") -> dict:
    """Pretrain (and SFT) the model of `cfg` and save it into `folder`; an SFT variant loads its base from
    `cache_dir` (building it first if needed)."""
    start = time.time()
    torch.manual_seed(cfg.seed)
    pre_losses: list[float] = []
    if cfg.sft_steps:
        # An SFT variant starts from the cached base of the same recipe (built first if needed).
        base_cfg = cfg.copy()
        base_cfg.sft_steps = 0
        model, tok = load_causal_lm(model_path(base_cfg, world, cache_dir, progress))
    else:
        tok = build_tokenizer(world.vocab)
        model = AutoModelForCausalLM.from_config(_hf_config(cfg, tok))
        if cfg.init == "pretrained" and cfg.pretrain_steps:
            pre_losses = pretrain(model, tok, world, cfg, progress)
    sft_losses = sft(model, tok, world, cfg, progress) if cfg.sft_steps else []
    info = {
        "config": OmegaConf.to_container(cfg, resolve=True), "world_seed": world.seed, "zoo_version": ZOO_VERSION,
        "pretrain_final_loss": sum(pre_losses[-20:]) / max(1, len(pre_losses[-20:])) if pre_losses else None,
        "sft_final_loss": sum(sft_losses[-20:]) / max(1, len(sft_losses[-20:])) if sft_losses else None,
        "heldout_lm_loss": heldout_lm_loss(model, tok, world),
        "n_params": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(time.time() - start, 2),
    }
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    (folder / "rmexp_zoo.json").write_text(json.dumps(info, indent=2))
    return info


def load_causal_lm(path: Path | str, trust_remote_code: bool = False):
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ModelNotFoundError(
            f"could not load model {str(path)!r}: not a local directory and not in the Hugging Face cache "
            f"(this machine may be offline). Download it where there is network with "
            f"`huggingface-cli download {path} --local-dir DIR` and set model.path=DIR.") from err
    return model, tok


def policy_path(policy: str | DictConfig, world: World, cache_dir: str | Path, progress: bool = True
                ) -> tuple[Path, DictConfig]:
    """A downstream policy's directory (or hub id) and model config: `policy` is a conf/model entry's name (a zoo
    model, built on first use) or the `downstream.policy` node (which also gives an hf policy its path)."""
    from rmexp.config import policy_model_config

    if isinstance(policy, str):
        cfg = load_model_config(policy)
        cfg.name = policy if cfg.name == "???" else cfg.name
    else:
        cfg = policy_model_config(policy)
    return model_path(cfg, world, cache_dir, progress), cfg


def sample(model, tok, prompts: list[str], n: int, temperature: float, max_new_tokens: int,
           seed: int) -> list[list[str]]:
    """n sampled responses per prompt: one left-padded batch with a KV cache (rmexp.sampling), drawn from a
    generator seeded with `seed` (same seed, same samples)."""
    from rmexp.sampling import sample_texts

    queries = [tok(chat_text(p), add_special_tokens=False)["input_ids"] for p in prompts]
    return sample_texts(model, tok, queries, n, temperature, max_new_tokens, seed)


def main(argv: list[str] | None = None) -> int:
    """`python -m rmexp.zoo [NAME ...] [--cache-dir DIR]`: build zoo models ahead and print a table."""
    import argparse

    from rmexp.config import CONF_DIR

    parser = argparse.ArgumentParser(prog="python -m rmexp.zoo", description=main.__doc__)
    parser.add_argument("names", nargs="*", help="conf/model entries (default: every toy model)")
    parser.add_argument("--cache-dir", default=".rmexp_cache")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.names or sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "hf")
    try:
        configs = [load_model_config(n) for n in names]
    except ValueError as err:
        print(f"error: {err}", flush=True)
        return 2
    world = World(args.world_seed)
    print(f"{'model':<18} {'params':>8} {'build s':>8} {'held-out LM loss':>17}  path")
    for name, cfg in zip(names, configs):
        cfg.name = name
        path = model_path(cfg, world, args.cache_dir, progress=True)
        info = json.loads((path / "rmexp_zoo.json").read_text())
        print(f"{name:<18} {info['n_params']:>8} {info['build_seconds']:>8.1f} {info['heldout_lm_loss']:>17.3f}  {path}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
