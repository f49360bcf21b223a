"""Where a trial's preference data and benchmarks come from: the toy world, or files / hub datasets.

Real-world rows use the public schemas: preference rows in the layouts rmexp.prefdata reads (strings,
Anthropic HH transcripts, chat message lists with or without a prompt column; a column mapping; an optional
margin column), from one file or hub dataset or a weighted mix of several (`data.sources`); RewardBench 2
rows (`id, prompt, chosen [..], rejected [..], subset, ...`) and RewardBench 1 rows (`prompt, chosen,
rejected, subset, id, ...`).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

from omegaconf import DictConfig

from rmexp.config import to_plain
from rmexp.prefdata import PreferenceDataError, mix_sources, normalise_rows
from rmexp.world import data as world_data
from rmexp.world.core import WORLD_VERSION, World, domain_sampler


class DataSourceError(RuntimeError):
    pass


HUB_TIMEOUT_S = 5.0  # one metadata request; an unreachable hub otherwise costs ~25 s of `datasets` retries


def read_rows(path_or_id: str, split: str = "train", subset: str | None = None) -> list[dict]:
    """Rows of a local .jsonl/.json/.parquet file, or of a hub dataset (needs network or the HF cache)."""
    local = Path(path_or_id).expanduser()
    if local.suffix in (".jsonl", ".json", ".parquet"):
        return read_local_rows(local)
    return read_hub_rows(path_or_id, split, subset)


def read_hub_rows(dataset_id: str, split: str, subset: str | None = None) -> list[dict]:
    """A hub dataset's split as rows. Fails in seconds with one line naming the dataset and how to provide it as
    a file when the hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and it is not cached, or unreachable."""
    from huggingface_hub import constants

    where = f"dataset {dataset_id!r} (split {split!r}{f', subset {subset!r}' if subset else ''})"
    name = f", {subset!r}" if subset else ""
    fix = (f"Offline machines need a local copy: where there is network run `python -c \"import datasets; "
           f"datasets.load_dataset({dataset_id!r}{name}, split={split!r}).to_parquet('FILE.parquet')\"` and give "
           f"FILE.parquet as the path (a copy already in the Hugging Face cache loads with HF_DATASETS_OFFLINE=1)")
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "TRUE")
    if offline:  # `datasets` reads offline copies from the hub cache: without one it can only fail
        cached = (Path(constants.HF_HUB_CACHE) / f"datasets--{dataset_id.replace('/', '--')}").is_dir()
        problem = None if cached else ("the hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the dataset is "
                                       "not in the Hugging Face cache")
    else:
        problem = _hub_problem(dataset_id)
    if problem:
        raise DataSourceError(f"could not load {where}: {problem}. {fix}")
    import datasets  # imported here: slow, and only hub ids need it

    try:
        return list(datasets.load_dataset(dataset_id, subset, split=split))
    except Exception as err:  # offline, unknown id, no cache: one clear line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataSourceError(f"could not load {where}: {type(err).__name__}: {first}. {fix}") from err


def _hub_problem(dataset_id: str) -> str | None:
    """Why the hub cannot serve this dataset now (unreachable, unknown, gated), or None."""
    import requests
    from huggingface_hub import constants

    token = getattr(constants, "HF_TOKEN", None)
    try:
        resp = requests.get(f"{constants.ENDPOINT}/api/datasets/{dataset_id}", timeout=HUB_TIMEOUT_S,
                            headers={"authorization": f"Bearer {token}"} if token else {})
    except requests.RequestException as err:
        return f"the hub is not reachable from here ({type(err).__name__} on {constants.ENDPOINT})"
    if resp.status_code in (401, 403, 404):
        return f"the hub has no such dataset, or it is gated or private (HTTP {resp.status_code}; set HF_TOKEN)"
    return None


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


def file_sources(d: DictConfig) -> list[dict]:
    """The sources of data=files: `data.sources`, or `data.path` (+ `columns`, `margin_column`) as one source."""
    if d.sources:
        return [to_plain(src) for src in d.sources]
    return [{"path": str(d.path), "split": d.split, "subset": None, "weight": 1.0, "columns": to_plain(d.columns),
             "margin_column": d.margin_column}]


def source_rows(src: dict, label: str) -> list[dict]:
    """Normalised rows of one source (rmexp.prefdata); errors start with `label` (the config key)."""
    try:
        return normalise_rows(read_rows(src["path"], src["split"], src["subset"]), src["path"], src["columns"],
                              src["margin_column"])
    except (DataSourceError, PreferenceDataError) as err:
        msg = str(err)
        raise DataSourceError(f"{label}: {msg}" if src["path"] in msg else f"{label}={src['path']!r}: {msg}") from None


_drawn: dict[str, list[dict]] = {}  # per process: preflight and the trial draw the same rows once


def file_preference_rows(d: DictConfig) -> list[dict]:
    """data=files rows: with `data.path`, its first `data.size` rows in file order; with `data.sources`,
    `data.size` rows drawn by weight (rmexp.prefdata.mix_sources, seeded by `data.seed`)."""
    sources = file_sources(d)
    key = json.dumps([sources, d.size, d.seed, [file_mtime(s["path"]) for s in sources]], sort_keys=True)
    if key not in _drawn:
        if not d.sources:
            _drawn[key] = source_rows(sources[0], "data.path")[:d.size]
        else:
            loaded = [(s["path"], source_rows(s, f"data.sources[{i}].path"), s["weight"])
                      for i, s in enumerate(sources)]
            try:
                _drawn[key] = mix_sources(loaded, d.size, d.seed)
            except PreferenceDataError as err:
                raise DataSourceError(f"data.sources: {err}") from None
    return _drawn[key]


def file_mtime(path) -> int | None:
    """A local file's modification time (ns), for memo keys that must notice an edited file; None for a hub id."""
    local = Path(str(path)).expanduser() if path else None
    return local.stat().st_mtime_ns if local is not None and local.is_file() else None


def on_policy_preferences(cfg: DictConfig, world: World, n_candidates: int = 4) -> list[dict]:
    """Pairs whose candidates are sampled from a policy (`data.on_policy`, a zoo model name).

    Each train prompt gets `n_candidates` samples; the best and the worst by gold form a pair (prompts
    whose samples all score the same are skipped), then label noise is applied as for template pairs.
    Cached under cache_dir by everything that determines the rows.
    """
    from rmexp import zoo  # imported here: file-only runs never load the zoo
    from rmexp.cache import cached, content_id, write_json
    from rmexp.config import config_hash, numerics
    from rmexp.sampling import SAMPLER_VERSION

    d, pol = cfg.data, cfg.downstream.policy
    path, _ = zoo.policy_path(d.on_policy, world, cfg.cache_dir, progress=False)
    # The policy by its content, not its name; the data config without the name for the same reason.
    data = {k: v for k, v in to_plain(d).items() if k != "on_policy"}
    key = config_hash(content_id(path), world.seed, WORLD_VERSION, data, pol.temperature, pol.max_new_tokens,
                      n_candidates, numerics(), SAMPLER_VERSION)

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
    return file_preference_rows(d)


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
