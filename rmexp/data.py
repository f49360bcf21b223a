"""Where a trial's preference data and benchmarks come from: the toy world, or files / hub datasets.

Real-world rows use the public schemas: preference rows `prompt, chosen, rejected` (strings, or chat
message lists as in TRL's conversational format), RewardBench 2 rows (`id, prompt, chosen [..],
rejected [..], subset, ...`) and RewardBench 1 rows (`prompt, chosen, rejected, subset, id, ...`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from omegaconf import DictConfig

from rmexp.config import to_plain
from rmexp.world import data as world_data
from rmexp.world.core import WORLD_VERSION, World, domain_sampler


class DataSourceError(RuntimeError):
    pass


def read_rows(path_or_id: str, split: str = "train") -> list[dict]:
    """Rows of a local .jsonl/.json/.parquet file, or of a hub dataset (needs network or the HF cache)."""
    local = Path(path_or_id).expanduser()
    if local.suffix in (".jsonl", ".json", ".parquet"):
        return read_local_rows(local)
    import datasets  # imported here: slow, and only hub ids need it
    try:
        return list(datasets.load_dataset(path_or_id, split=split))
    except Exception as err:  # offline, unknown id, no cache: one clear message
        raise DataSourceError(
            f"could not load dataset {path_or_id!r} (split {split!r}): {type(err).__name__}: {err}. "
            f"Offline machines need a local copy: download it where there is network "
            f"(`huggingface-cli download --repo-type dataset {path_or_id} --local-dir DIR`) and pass the "
            f".jsonl/.parquet file path instead.") from err


def read_local_rows(path: Path) -> list[dict]:
    """Rows of a local .jsonl (one object a line), .json (a list of objects, or JSON lines) or .parquet file.
    Errors name the file and, for JSON, the first bad line; an empty file is an error."""
    if not path.is_file():
        raise DataSourceError(f"data file {str(path)!r} does not exist" if not path.exists()
                              else f"data path {str(path)!r} is not a file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataSourceError(f"cannot read parquet file {str(path)!r}: {type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}") from None
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        rows = None
        if path.suffix == ".json" and text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataSourceError(f"{str(path)!r} line {err.lineno}: not valid JSON ({err.msg})") from None
        if rows is None:
            rows = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataSourceError(f"{str(path)!r} line {lineno}: not valid JSON ({err.msg} at column "
                                          f"{err.colno}); each line must be one JSON object") from None
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataSourceError(f"{str(path)!r} row {i + 1}: expected a JSON object, got {type(row).__name__}")
    if not rows:
        raise DataSourceError(f"data file {str(path)!r} has no rows")
    return rows


def _as_text(value, row_id, field_name: str) -> tuple[str | None, str]:
    """(prompt or None, response) from a string or a chat message list."""
    if isinstance(value, str):
        return None, value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        if value[-1].get("role") != "assistant":
            raise DataSourceError(f"row {row_id}: {field_name} messages must end with an assistant turn")
        prompt = "\n".join(m["content"] for m in value[:-1] if m.get("role") == "user")
        return prompt or None, value[-1]["content"]
    raise DataSourceError(f"row {row_id}: {field_name} must be a string or a list of chat messages")


def normalise_preference_rows(rows: list[dict]) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        row_id = row.get("id", i)
        for key in ("chosen", "rejected"):
            if key not in row:
                raise DataSourceError(f"row {row_id}: missing column {key!r} (need prompt, chosen, rejected)")
        p_c, chosen = _as_text(row["chosen"], row_id, "chosen")
        _, rejected = _as_text(row["rejected"], row_id, "rejected")
        prompt = row.get("prompt")
        if isinstance(prompt, list):
            prompt = "\n".join(m["content"] for m in prompt if m.get("role") == "user")
        prompt = prompt or p_c
        if not prompt:
            raise DataSourceError(f"row {row_id}: no prompt (a prompt column, or chat messages in chosen)")
        out.append({"id": str(row_id), "prompt": prompt, "chosen": chosen, "rejected": rejected,
                    "domain": row.get("subset", "files")})
    return out


def on_policy_preferences(cfg: DictConfig, world: World, n_candidates: int = 4) -> list[dict]:
    """Pairs whose candidates are sampled from a policy (`data.on_policy`, a zoo model name).

    Each train prompt gets `n_candidates` samples; the best and the worst by gold form a pair (prompts
    whose samples all score the same are skipped), then label noise is applied as for template pairs.
    Cached under cache_dir by everything that determines the rows.
    """
    from rmexp import zoo  # imported here: file-only runs never load the zoo
    from rmexp.cache import cached, content_id, write_json
    from rmexp.config import config_hash, torch_threads
    from rmexp.sampling import SAMPLER_VERSION

    d, pol = cfg.data, cfg.downstream.policy
    path, _ = zoo.policy_path(d.on_policy, world, cfg.cache_dir, progress=False)
    # The policy by its content, not its name; the data config without the name for the same reason.
    data = {k: v for k, v in to_plain(d).items() if k != "on_policy"}
    key = config_hash(content_id(path), world.seed, WORLD_VERSION, data, pol.temperature, pol.max_new_tokens,
                      n_candidates, torch_threads(), SAMPLER_VERSION)

    def draw(folder: Path) -> None:
        write_json(folder / "rows.json", _sample_on_policy_pairs(cfg, world, path, n_candidates))

    return cached("on_policy", key, cfg.cache_dir, draw, lambda folder: json.loads((folder / "rows.json").read_text()),
                  label=d.on_policy)


def _sample_on_policy_pairs(cfg: DictConfig, world: World, path: Path, n_candidates: int) -> list[dict]:
    from rmexp import zoo

    d, pol = cfg.data, cfg.downstream.policy
    model, tok = zoo.load_causal_lm(path)
    rng = random.Random(f"onpolicy-{world.seed}-{d.seed}")
    draw_domain = domain_sampler(dict(d.domain_weights), rng)
    rows: list[dict] = []
    for attempt in range(20):  # rounds of sampling until `size` informative pairs exist
        need = d.size - len(rows)
        if need <= 0:
            break
        prompts = [rng.choice(world.prompts(draw_domain(), "train")) for _ in range(2 * need)]
        samples = zoo.sample(model, tok, [p.text for p in prompts], n_candidates, pol.temperature,
                             pol.max_new_tokens, seed=d.seed * 1000 + attempt)
        for p, cands in zip(prompts, samples):
            golds = [world.gold(p, c) for c in cands]
            best, worst = max(range(len(cands)), key=golds.__getitem__), min(range(len(cands)), key=golds.__getitem__)
            if golds[best] == golds[worst] or len(rows) >= d.size:
                continue
            rows.append(world_data.pair_row(world, f"onpolicy-{len(rows)}", p, cands[best], cands[worst],
                                            flipped=rng.random() < d.label_noise))
    if len(rows) < d.size:
        raise DataSourceError(f"data.on_policy={d.on_policy}: only {len(rows)} of data.size={d.size} prompts gave "
                              f"samples of different gold quality; lower data.size or use a more varied policy")
    return rows


def preference_rows(cfg: DictConfig, world: World) -> list[dict]:
    d = cfg.data
    if d.source == "toy" and d.on_policy:
        return on_policy_preferences(cfg, world)
    if d.source == "toy":
        return world_data.preferences(world, d.size, dict(d.domain_weights), d.label_noise, d.seed)
    rows = normalise_preference_rows(read_rows(d.path, d.split))
    return rows[:d.size]


def benchmark_rows(cfg: DictConfig, world: World) -> tuple[list[dict], list[dict]]:
    """(RB2 rows, RB1 rows); either may be empty for file benchmarks."""
    b = cfg.benchmark
    if b.source == "toy":
        return world_data.rb2_rows(world, b.rows_per_subset, b.seed), world_data.rb1_rows(world, b.seed)
    rb2 = read_rows(b.rb2_path, "test") if b.rb2_path else []
    rb1 = read_rows(b.rb1_path, "filtered") if b.rb1_path else []
    for name, rows, completion_type in (("RewardBench 2", rb2, list), ("RewardBench 1", rb1, str)):
        for row in rows:
            for key in ("id", "prompt", "chosen", "rejected", "subset"):
                if key not in row:
                    raise DataSourceError(f"{name} row {row.get('id', '?')}: missing column {key!r}")
            for key in ("chosen", "rejected"):
                value = row[key]
                if not isinstance(value, completion_type) or (completion_type is list and not value):
                    want = "a non-empty list of strings" if completion_type is list else "a string"
                    raise DataSourceError(f"{name} row {row['id']}: {key} must be {want}, "
                                          f"got {type(value).__name__}")
    return rb2, rb1
