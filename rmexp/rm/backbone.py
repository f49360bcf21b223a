"""The classifier RM's backbone on real models: dtype, attention implementation, gradient checkpointing and LoRA
(peft); saving and loading a trained RM (safetensors only).

LoRA (`train.lora_r > 0`) adapts `train.lora_targets` (peft's per-architecture default when null) and trains
the score head in full (peft's `modules_to_save`), so the head is written into the adapter file beside the
LoRA weights. Other trainers have lost the head this way (dropped on save or on merge, leaving a random one);
here `load_backbone` rebuilds base + adapter + head and merges them, and tests/test_rm_real.py checks that
scores after save and load equal the scores before saving.

peft injects the LoRA layers into the model it is given, in place: the trainer keeps calling that model, so
`model.base_model` and `model.score` (what `last_token_rewards` and the packed path use) stay the transformer
and the head. The PeftModel wrapper is used only to save the adapter.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

HALF_DTYPES = ("bfloat16", "float16")
HEAD = "score"  # the head of every *ForSequenceClassification the classifier RM reads (Llama, Qwen2, GPT-2, ...)


def torch_dtype(name: str, device: torch.device):
    """`auto`: float32 on CPU (half-precision training there is slow and loses the small updates), the checkpoint's
    own dtype on CUDA; otherwise the named dtype."""
    if name == "auto":
        return "auto" if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def load_classifier(base: Path | str, device: torch.device, dtype: str = "auto",
                    attn_implementation: str | None = None, trust_remote_code: bool = False):
    """`AutoModelForSequenceClassification(num_labels=1)` on a base, in `dtype`, with the attention kernel asked
    for (null: transformers' default for the architecture); remote code only when the config sets it."""
    kwargs = {"num_labels": 1, "trust_remote_code": trust_remote_code, "dtype": torch_dtype(dtype, device)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return AutoModelForSequenceClassification.from_pretrained(str(base), **kwargs)


def add_lora(model, train_cfg):
    """Inject LoRA layers into `model` in place and return the PeftModel that saves them (None when lora_r is 0).
    The head is trained in full and saved with the adapter (modules_to_save)."""
    if not train_cfg.lora_r:
        return None
    from peft import LoraConfig, get_peft_model

    targets = list(train_cfg.lora_targets) if train_cfg.lora_targets else None
    config = LoraConfig(task_type="SEQ_CLS", r=int(train_cfg.lora_r), lora_alpha=float(train_cfg.lora_alpha),
                        lora_dropout=float(train_cfg.lora_dropout), target_modules=targets, modules_to_save=[HEAD])
    try:
        with _quiet_peft():
            peft_model = get_peft_model(model, config)
    except ValueError as err:  # no default targets for this architecture, or a name that matches nothing
        raise ValueError(f"train.lora_targets={targets}: {str(err).splitlines()[0]}; name the modules to adapt, e.g. "
                         f"train.lora_targets=[q_proj,k_proj,v_proj,o_proj]") from None
    if not any(p.requires_grad for n, p in model.named_parameters() if f"{HEAD}." in n):
        raise RuntimeError(f"LoRA left the {HEAD!r} head frozen; it must be trained in full")
    return peft_model


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in backward (non-reentrant: works with frozen LoRA bases)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_info(train_cfg, model_cfg, base_path: Path | str) -> dict:
    """What `load_backbone` needs to rebuild the model, stored in rmexp_rm.json."""
    return {"base_path": str(base_path), "lora": bool(train_cfg.lora_r), "dtype": model_cfg.dtype,
            "attn_implementation": model_cfg.attn_implementation}


def save_backbone(model, adapter, out_dir: Path) -> None:
    """Full fine-tuning: the whole classifier; LoRA: the adapter and the head (adapter_model.safetensors)."""
    (adapter if adapter is not None else model).save_pretrained(str(out_dir), safe_serialization=True)


def load_backbone(path: Path, info: dict, device: torch.device, trust_remote_code: bool = False):
    """The trained classifier of an RM directory; a LoRA RM is its base + adapter + head, merged."""
    dtype, attn = info.get("dtype", "auto"), info.get("attn_implementation")
    if not info.get("lora"):
        return load_classifier(path, device, dtype, attn, trust_remote_code)
    from peft import PeftModel

    saved = json.loads((path / "adapter_config.json").read_text())
    if HEAD not in (saved.get("modules_to_save") or []):
        raise RuntimeError(f"{path}: the adapter was saved without the {HEAD!r} head (modules_to_save)")
    base = load_classifier(info["base_path"], device, dtype, attn, trust_remote_code)
    with _quiet_peft():
        return merge(PeftModel.from_pretrained(base, str(path)))


@contextlib.contextmanager
def _quiet_peft():
    """peft 0.21 asks transformers 5 a deprecated question (is_gradient_checkpointing); not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def merge(adapter):
    """LoRA folded into the weights and the trained head in place of the wrapper: a plain classifier whose every
    parameter is trainable again (PPO's value model starts from it)."""
    model = adapter.merge_and_unload()
    model.requires_grad_(True)
    return model
