"""Structured config: the schema every composed config is checked against before any work starts.

Hydra merges `conf/` into `Config` (registered in the ConfigStore as `config_schema`), so an unknown key
or a wrong type is refused by OmegaConf; `validate` then checks values (ranges, choices, weights) and
raises one `ConfigError` naming the key, the value and what is allowed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rmexp.world.domains import DOMAINS

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """A config value that is out of range or not one of the allowed choices."""


def _even_mix() -> Dict[str, float]:
    return {d: 1.0 for d in DOMAINS}


@dataclass
class ModelConfig:
    name: str = "???"
    source: str = "toy"              # toy: built by the zoo; hf: `path` is a hub id or a local directory
    family: str = "llama"            # llama | gpt2 for the zoo; any label for hf (recorded for lineage)
    size: str = "s"                  # xs | s | m | l, for reporting
    init: str = "pretrained"         # pretrained | random (a control: same shape, no pretraining)
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    pretrain_steps: int = 600        # LM steps on the world's corpus
    pretrain_lr: float = 3e-3        # tiny models like large rates
    pretrain_batch: int = 16         # blocks of `block_size` tokens per step (16 x 64: ~30 ms a step for s)
    block_size: int = 64             # packed pretraining sequence length
    corpus_mix: Dict[str, float] = field(default_factory=_even_mix)  # domain weights of the corpus
    sft_steps: int = 0               # > 0 makes an SFT ("instruct") variant
    sft_wrong_rate: float = 0.3      # share of SFT answers that are wrong: headroom for BoN and PPO
    seed: int = 0                    # pretraining seed (a different seed is a different model)
    path: Optional[str] = None       # hf: hub id or local directory
    trust_remote_code: bool = False  # never on unless a config asks


@dataclass
class WorldConfig:
    seed: int = 0                    # fixes the knowledge base and the train/held-out split


@dataclass
class DataConfig:
    source: str = "toy"              # toy: drawn from the world | files: local jsonl/parquet or a hub id
    path: Optional[str] = None       # files: preference file (prompt, chosen, rejected) or hub dataset id
    split: str = "train"             # hub split name for source=files with a hub id
    size: int = 8000                 # preference pairs
    domain_weights: Dict[str, float] = field(default_factory=_even_mix)  # the data mix
    label_noise: float = 0.0         # share of pairs with chosen and rejected swapped (1.0 flips all)
    eval_fraction: float = 0.1       # held-out pairs for eval/acc
    on_policy: Optional[str] = None  # zoo model name: candidates sampled from it instead of templates
    seed: int = 0


@dataclass
class TrainConfig:
    epochs: int = 2
    lr: float = 2e-3
    schedule: str = "cosine"         # constant | linear | cosine, after warmup
    warmup_ratio: float = 0.05
    batch_size: int = 32             # pairs per step
    max_length: int = 64             # tokens per sequence
    overlong: str = "truncate"       # truncate | drop, for pairs longer than max_length (counted)
    margin: float = 0.0              # loss -logsigmoid(r_c - r_r - margin)
    center_coef: float = 0.0         # + center_coef * mean((r_c + r_r)^2), keeps rewards near 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0


@dataclass
class BenchmarkConfig:
    source: str = "toy"              # toy: built from held-out prompts | files: rb2_path / rb1_path
    rb2_path: Optional[str] = None   # jsonl/parquet in the RewardBench 2 schema, or a hub id
    rb1_path: Optional[str] = None   # jsonl/parquet in the RewardBench 1 schema, or a hub id
    rows_per_subset: int = 60        # toy RB2 rows per subset
    seed: int = 0
    decontam_ngram: int = 8          # n-gram size of the overlap check
    decontam_max_overlap: float = 0.0  # largest share of benchmark prompts allowed to overlap train
    score_batch_tokens: int = 4096   # token budget of a scoring batch (length-bucketed)


@dataclass
class PolicyConfig:
    model: str = "toy_llama_s_sft"   # a conf/model entry (usually an SFT variant)
    temperature: float = 1.0
    max_new_tokens: int = 24


@dataclass
class BonConfig:
    enabled: bool = True
    prompts_per_domain: int = 12     # held-out prompts per domain
    n_samples: int = 16              # samples per prompt (N_max)


@dataclass
class PPOConfig:
    enabled: bool = False
    steps: int = 80                  # PPO iterations (rollout + update); toy default: ~50 s on 2 cores
    rollout_batch: int = 64          # prompts per rollout (64: steadier steps than 32 on the toy world)
    minibatch: int = 16              # must divide rollout_batch
    ppo_epochs: int = 2
    lr: float = 1e-4                 # toy tuning: 5e-4 hacks the RM within 10 steps (KL > 4, gold falls)
    value_lr: float = 5e-4
    kl_coef: float = 0.2             # toy tuning: KL levels off near 3-4 nats by step 80 while gold still rises
    kl_kind: str = "k1"              # k1 | k2 | k3 | abs
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 1000
    whiten_rewards: bool = False
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.5
    gamma: float = 1.0
    lam: float = 0.95
    missing_eos_penalty: float = 1.0 # subtracted from the score of completions that never end
    eval_prompts_per_domain: int = 24 # held-out prompts per domain for gold/proxy/KL (144: SE of gold ~0.04)
    eval_every: int = 10
    seed: int = 0                    # PPO's own seed (sampling, minibatch order): vary it without retraining the RM


@dataclass
class DownstreamConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    bon: BonConfig = field(default_factory=BonConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)


@dataclass
class TrackingConfig:
    uri: Optional[str] = None        # default: sqlite:///<cwd>/mlflow.db (MLflow 3 refuses the file store)
    experiment: str = "rmexp"        # a sweep uses its name instead


@dataclass
class RayConfig:
    address: Optional[str] = None    # null: local Ray; "auto" or RAY_ADDRESS: join a cluster
    num_cpus: Optional[int] = None   # local Ray only; null: all cores
    cpus_per_trial: int = 1          # torch threads per trial = CPUs it holds
    gpus_per_trial: float = 0.0      # fractions allowed
    max_retries: int = 2             # for system failures (worker died); exceptions are not retried
    max_parallel: Optional[int] = None


@dataclass
class SweepConfig:
    name: Optional[str] = None       # set by conf/sweep/<name>.yaml
    axes: Dict[str, List[Any]] = field(default_factory=dict)  # override key -> values (cartesian)
    replicates: int = 1              # runs of every grid point, seeds seed, seed+1, ... (1: no seed axis)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cache_dir: str = ".rmexp_cache"  # stage outputs and the zoo, keyed by content hash
    device: str = "cpu"              # cpu | cuda | auto
    threads: int = 1                 # torch CPU threads for a single run
    fail_stage: Optional[str] = None # test hook: raise in this stage (rm, bench, bon, ppo)


def register() -> None:
    ConfigStore.instance().store(name="config_schema", node=Config)


register()

CHOICES = {
    "model.source": ("toy", "hf"), "model.family": None, "model.init": ("pretrained", "random"),
    "data.source": ("toy", "files"), "train.schedule": ("constant", "linear", "cosine"),
    "train.overlong": ("truncate", "drop"), "benchmark.source": ("toy", "files"),
    "downstream.ppo.kl_kind": ("k1", "k2", "k3", "abs"), "device": ("cpu", "cuda", "auto"),
    "fail_stage": (None, "rm", "bench", "bon", "ppo"),
}
POSITIVE = ("model.n_layer", "model.d_model", "model.n_head", "model.pretrain_batch", "model.block_size",
            "data.size", "train.epochs", "train.lr", "train.batch_size", "train.max_length",
            "benchmark.rows_per_subset", "benchmark.decontam_ngram", "benchmark.score_batch_tokens",
            "downstream.policy.max_new_tokens", "downstream.policy.temperature",
            "downstream.bon.prompts_per_domain", "downstream.bon.n_samples",
            "downstream.ppo.steps", "downstream.ppo.rollout_batch", "downstream.ppo.minibatch",
            "downstream.ppo.ppo_epochs", "downstream.ppo.lr", "downstream.ppo.value_lr",
            "downstream.ppo.eval_every", "downstream.ppo.eval_prompts_per_domain", "downstream.ppo.kl_target",
            "downstream.ppo.kl_horizon",
            "ray.cpus_per_trial", "threads")
NON_NEGATIVE = ("model.pretrain_steps", "model.sft_steps", "train.margin", "train.center_coef",
                "train.weight_decay", "downstream.ppo.kl_coef", "downstream.ppo.clip_range",
                "downstream.ppo.clip_range_value", "downstream.ppo.vf_coef", "downstream.ppo.missing_eos_penalty",
                "ray.gpus_per_trial", "ray.max_retries")
FRACTIONS = ("data.label_noise", "data.eval_fraction", "train.warmup_ratio", "model.sft_wrong_rate",
             "benchmark.decontam_max_overlap", "downstream.ppo.gamma", "downstream.ppo.lam")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"config error: {key}={value!r} is not allowed; {allowed}")


def _check_mix(key: str, weights: Dict[str, float]) -> None:
    for name, w in weights.items():
        if name not in DOMAINS:
            _fail(f"{key}.{name}", w, f"domains are {list(DOMAINS)}")
        if w < 0:
            _fail(f"{key}.{name}", w, "weights must be >= 0")
    if sum(weights.values()) <= 0:
        _fail(key, dict(weights), "the weights must sum to a positive total")


def validate(cfg: DictConfig) -> None:
    """Check values the type system cannot: ranges, choices, mixes, paths that must be given."""
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if allowed is not None and value not in allowed:
            _fail(key, value, f"choose one of {list(allowed)}")
    for key in POSITIVE:
        if not OmegaConf.select(cfg, key) > 0:
            _fail(key, OmegaConf.select(cfg, key), "it must be > 0")
    for key in NON_NEGATIVE:
        if OmegaConf.select(cfg, key) < 0:
            _fail(key, OmegaConf.select(cfg, key), "it must be >= 0")
    for key in FRACTIONS:
        if not 0 <= OmegaConf.select(cfg, key) <= 1:
            _fail(key, OmegaConf.select(cfg, key), "it must be between 0 and 1")
    if cfg.model.d_model % cfg.model.n_head:
        _fail("model.n_head", cfg.model.n_head, f"it must divide model.d_model={cfg.model.d_model}")
    if cfg.model.source == "hf" and not cfg.model.path:
        _fail("model.path", None, "model.source=hf needs a hub id or a local directory")
    if cfg.model.source == "toy" and cfg.model.family not in ("llama", "gpt2"):
        _fail("model.family", cfg.model.family, "the zoo builds families ['llama', 'gpt2']")
    if cfg.data.source == "files" and not cfg.data.path:
        _fail("data.path", None, "data.source=files needs a jsonl/parquet file or a hub dataset id")
    if cfg.data.source == "files":
        # Options that only shape toy data would be silently ignored: refuse them instead.
        for key, default in (("data.label_noise", 0.0), ("data.on_policy", None)):
            if OmegaConf.select(cfg, key) != default:
                _fail(key, OmegaConf.select(cfg, key), "it applies to data.source=toy only")
    if cfg.benchmark.source == "files" and not (cfg.benchmark.rb2_path or cfg.benchmark.rb1_path):
        _fail("benchmark.rb2_path", None, "benchmark.source=files needs rb2_path and/or rb1_path")
    _check_mix("model.corpus_mix", cfg.model.corpus_mix)
    _check_mix("data.domain_weights", cfg.data.domain_weights)
    if cfg.downstream.bon.n_samples > 256:
        _fail("downstream.bon.n_samples", cfg.downstream.bon.n_samples, "at most 256")
    ppo = cfg.downstream.ppo
    if ppo.rollout_batch % ppo.minibatch:
        _fail("downstream.ppo.minibatch", ppo.minibatch,
              f"it must divide downstream.ppo.rollout_batch={ppo.rollout_batch} exactly")


def to_plain(cfg: DictConfig | dict) -> dict:
    if isinstance(cfg, dict):
        return cfg
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def config_hash(*parts: Any) -> str:
    """Content hash of config parts (sorted-key JSON): the cache key of a stage's output."""
    blob = json.dumps([to_plain(p) if isinstance(p, (DictConfig, dict)) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_model_config(name: str) -> DictConfig:
    """A conf/model/<name>.yaml entry merged into the schema (policies name zoo models this way)."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise ConfigError(f"config error: unknown model {name!r}; known models: {known}")
    schema = OmegaConf.structured(ModelConfig)
    return OmegaConf.merge(schema, OmegaConf.load(path))
