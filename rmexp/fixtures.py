"""Offline fixtures for the real-model path: a tiny real-architecture model and small files in real schemas.

    python -m rmexp.fixtures DIR

writes, all seeded and built here (nothing is downloaded):

* ``DIR/model``: a random-weight Qwen2-shaped causal LM (2 layers, d=64) with a byte-level BPE
  tokenizer trained with `tokenizers` on the toy world's corpus and on the fixture texts, a ChatML
  chat template, and pad == eos (as Qwen2's tokenizer has: the pad-token pitfall is exercised);
  saved with ``save_pretrained`` (safetensors) and loaded with ``from_pretrained`` like a hub model;
* ``DIR/preferences.jsonl`` (prompt, chosen, rejected), ``DIR/rb2.jsonl`` (RewardBench 2 rows),
  ``DIR/rb1.jsonl`` (RewardBench 1 rows), ``DIR/gsm8k.jsonl`` (question, answer ``#### n``),
  ``DIR/gsm8k_train.jsonl`` (other GSM8K-style items: PPO/RLVR train prompts through ``task.train_path``),
  ``DIR/math.jsonl`` (problem, solution with ``\\boxed{}``), ``DIR/ifeval.jsonl`` (prompt,
  instruction_id_list, kwargs), ``DIR/popqa.jsonl`` (question, possible_answers);

and prints the command that runs a real-path trial on them (RM training, RewardBench 2 and 1 scoring, and
best-of-N with the fixture model as the policy on the gsm8k file, gold from the GSM8K checker). The tests use
the same fixtures, so the real loading code is what runs.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from rmexp.world import World, preferences, rb1_rows, rb2_rows
from rmexp.world.domains import DOMAINS

EOS = "<|endoftext|>"
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
GSM8K_ROWS = 24  # the printed command runs best-of-N on all of them
NAMES = ("Tom", "Ana", "Lee", "Sam", "Mia", "Raj", "Eva", "Kim")
THINGS = ("apples", "books", "coins", "shells", "stamps", "cards")


def gsm8k_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"fixture-gsm8k-{seed}")
    rows = []
    for i in range(n):
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
        total = (a + b) * c
        rows.append({"question": f"{name} has {a} {thing} and finds {b} more. Each of them is worth {c} points. "
                                 f"How many points are the {thing} worth in all?",
                     "answer": f"{name} has {a} + {b} = {a + b} {thing}.\nThey are worth {a + b} * {c} = "
                               f"{total} points.\n#### {total:,}"})
    return rows


def gsm8k_train_rows(n: int, seed: int) -> list[dict]:
    """Train items for PPO/RLVR on task=gsm8k (task.train_path): the same generator, no question of the eval file."""
    held_out = {r["question"] for r in gsm8k_rows(GSM8K_ROWS, seed)}
    return [r for r in gsm8k_rows(2 * n, seed + 1) if r["question"] not in held_out][:n]


def math_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"fixture-math-{seed}")
    rows = []
    for i in range(n):
        p, q = rng.randint(1, 9), rng.randint(2, 9)
        rows.append({"problem": f"Simplify $\\frac{{{p * 2}}}{{{q * 2}}}$.",
                     "solution": f"Divide both by 2: $\\frac{{{p * 2}}}{{{q * 2}}} = \\boxed{{\\frac{{{p}}}{{{q}}}}}$.",
                     "unique_id": f"fixture/{i}.json"})
    return rows


IFEVAL_ROWS = [
    {"key": 1, "prompt": "Describe a river in lowercase letters only, without any commas.",
     "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"], "kwargs": [{}, {}]},
    {"key": 2, "prompt": "List two fruits as a markdown bullet list with exactly 2 bullets.",
     "instruction_id_list": ["detectable_format:number_bullet_lists"], "kwargs": [{"num_bullets": 2}]},
    {"key": 3, "prompt": "Say something kind and end your answer with the exact phrase 'Is there anything else?'",
     "instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": "Is there anything else?"}]},
    {"key": 4, "prompt": "Write a title wrapped in double angular brackets, like <<title>>, then one sentence.",
     "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]},
    {"key": 5, "prompt": "Answer in fewer than 12 words: what is a cloud?",
     "instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 12, "relation": "less than"}]},
    {"key": 6, "prompt": "Mention the words 'stone' and 'bridge' in one sentence.",
     "instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": ["stone", "bridge"]}]},
]

POPQA_ROWS = [
    {"id": 1, "question": "What is the capital of France?", "possible_answers": json.dumps(["Paris"])},
    {"id": 2, "question": "Who wrote Hamlet?", "possible_answers": json.dumps(["William Shakespeare", "Shakespeare"])},
    {"id": 3, "question": "What colour is the sky on a clear day?", "possible_answers": json.dumps(["blue"])},
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def build_tokenizer(texts: list[str], vocab_size: int = 1024):
    """A byte-level BPE trained on `texts`, wrapped as a fast HF tokenizer with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS, "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=EOS,
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = CHATML
    tok.padding_side = "right"
    return tok


def build_model(tok, seed: int):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         bos_token_id=None)
    return AutoModelForCausalLM.from_config(config)


def write_fixtures(out: Path, seed: int = 0) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    world = World(seed)
    prefs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
             for r in preferences(world, 300, {d: 1.0 for d in DOMAINS}, 0.0, seed)]
    files = {
        "preferences": _write_jsonl(out / "preferences.jsonl", prefs),
        "rb2": _write_jsonl(out / "rb2.jsonl", rb2_rows(world, 8, seed)),
        "rb1": _write_jsonl(out / "rb1.jsonl", rb1_rows(world, seed, max_per_subset=4)),
        "gsm8k": _write_jsonl(out / "gsm8k.jsonl", gsm8k_rows(GSM8K_ROWS, seed)),
        "gsm8k_train": _write_jsonl(out / "gsm8k_train.jsonl", gsm8k_train_rows(48, seed)),
        "math": _write_jsonl(out / "math.jsonl", math_rows(12, seed)),
        "ifeval": _write_jsonl(out / "ifeval.jsonl", IFEVAL_ROWS),
        "popqa": _write_jsonl(out / "popqa.jsonl", POPQA_ROWS),
    }
    texts = world.pretraining_docs({d: 1.0 for d in DOMAINS}, 2000, seed)
    for name in ("gsm8k", "math", "ifeval", "popqa"):
        texts += [json.dumps(json.loads(line)) for line in files[name].read_text().splitlines()]
    tok = build_tokenizer(texts)
    model = build_model(tok, seed)
    model.save_pretrained(str(out / "model"), safe_serialization=True)
    tok.save_pretrained(str(out / "model"))
    files["model"] = out / "model"
    return files


def trial_command(files: dict[str, Path]) -> str:
    """The command that runs a whole real-path trial on the fixtures: a Qwen2-shaped RM trained on the preference
    file, RewardBench 2 and 1 scored from the files, best-of-N with the fixture model as the policy (its chat
    template, stopping at <|im_end|>) on the gsm8k file, gold from the GSM8K checker."""
    return (f"python -m rmexp preset=tiny model=hf model.path={files['model']} data=files "
            f"data.path={files['preferences']} benchmark=rewardbench2 benchmark.rb2_path={files['rb2']} "
            f"benchmark.rb1_path={files['rb1']} task=gsm8k task.path={files['gsm8k']} "
            f"downstream.policy.model=hf downstream.policy.path={files['model']} "
            f"downstream.bon.prompts_per_domain={GSM8K_ROWS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmexp.fixtures", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    files = write_fixtures(args.dir.expanduser().resolve(), args.seed)
    for name, path in files.items():
        print(f"{name:12s} {path}")
    print("\nrun a real-path trial on them (RM training, RewardBench 2/1, best-of-N on gsm8k):\n\n    "
          + trial_command(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
