"""Structured config: the schema every composed config is checked against before any work starts.

Hydra merges `conf/` into `Config` (registered in the ConfigStore as `config_schema`), so an unknown key
or a wrong type is refused by OmegaConf; `validate` then checks values (ranges, choices, weights) and
raises one `ConfigError` naming the key, the value and what is allowed.

Longer than the usual module on purpose: the schema and the checks of its values sit together, so a new key
and the rule that guards it are added in one place.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

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
    size: str = "s"                  # xs | s | m | l | xl, for reporting
    init: str = "pretrained"         # pretrained | random (a control: same shape, no pretraining)
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    pretrain_steps: int = 2400       # LM steps on the world's corpus: a 2-layer llama learns the checked verdict by ~2400
    pretrain_lr: float = 3e-3        # tiny models like large rates
    pretrain_batch: int = 16         # blocks of `block_size` tokens per step (16 x 64: ~30 ms a step for s)
    block_size: int = 64             # packed pretraining sequence length
    corpus_mix: Dict[str, float] = field(default_factory=_even_mix)  # domain weights of the corpus
    sft_steps: int = 0               # > 0 makes an SFT ("instruct") variant
    sft_wrong_rate: float = 0.3      # share of SFT answers that are wrong: headroom for BoN and PPO
    rm_lr: float = 5e-4              # the RM's rate on this base (train.lr follows it): 1/6 of pretrain_lr keeps what
    #                                  the base knows (docs/world_calibration.md: 12 bases x 2 seeds); 8 layers need 2e-4
    seed: int = 0                    # pretraining seed (a different seed is a different model)
    path: Optional[str] = None       # hf: hub id or local directory
    trust_remote_code: bool = False  # never on unless a config asks
    dtype: str = "auto"              # auto (float32 on CPU, the checkpoint's dtype on CUDA) | float32 | bfloat16 | float16 (GPU only)
    attn_implementation: Optional[str] = None  # null: transformers' default for the architecture | eager | sdpa | flash_attention_2 | ...


@dataclass
class WorldConfig:
    seed: int = 0                    # fixes the knowledge base and the train/held-out split


@dataclass
class ColumnsConfig:
    """Which column of a preference source holds each field (data.columns.prompt=instruction renames one)."""
    prompt: str = "prompt"           # a string or chat messages; absent: taken from the chosen conversation
    chosen: str = "chosen"
    rejected: str = "rejected"


@dataclass
class DataSourceConfig:
    """One source of a preference mix (data.sources): rows are drawn from it by weight (rmexp.prefdata)."""
    path: Optional[str] = None       # a local jsonl/json/parquet file or a hub dataset id (required)
    split: str = "train"             # hub split name
    subset: Optional[str] = None     # hub config name (load_dataset's `name`); null: the default config
    weight: float = 1.0              # share of data.size, relative to the other sources' weights
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)  # which column holds prompt, chosen, rejected
    margin_column: Optional[str] = None  # a numeric column: per-row margin in the loss


@dataclass
class DataConfig:
    source: str = "toy"              # toy: drawn from the world | files: local jsonl/parquet or a hub id
    path: Optional[str] = None       # files, one source: its first data.size rows (file order); or use data.sources
    split: str = "train"             # hub split name for source=files with a hub id
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)  # data.path only: which column holds prompt, chosen, rejected
    margin_column: Optional[str] = None  # data.path only: numeric column, loss -logsigmoid(r_c - r_r - train.margin - row margin)
    sources: List[DataSourceConfig] = field(default_factory=list)  # files: a mix, data.size rows drawn by weight
    size: int = 8000                 # preference pairs
    domain_weights: Dict[str, float] = field(default_factory=_even_mix)  # the data mix
    label_noise: float = 0.0         # share of pairs with chosen and rejected swapped (1.0 flips all)
    eval_fraction: float = 0.1       # held-out pairs for eval/acc
    on_policy: Optional[str] = None  # zoo model name: candidates sampled from it instead of templates
    seed: int = 0
    max_unk_share: float = 0.05      # more <unk> than 1 token in 20: the base cannot read the data; refused
    max_identical_share: float = 0.02  # pairs encoding chosen == rejected teach nothing; a few duplicates pass


@dataclass
class TrainConfig:
    epochs: int = 2
    lr: float = 5e-4                 # ${model.rm_lr} in conf/train/default.yaml: the base's recipe sets it
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
    packing: bool = False            # fixed token budgets, no padding (rmexp.packing); off: toy data buckets to 0.90 already
    compile: bool = False            # torch.compile the base for packed steps (fixed shapes: one compile, ~20 s on CPU)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, more compute (long sequences)
    lora_r: int = 0                  # 0: full fine-tuning; > 0: LoRA rank (peft), score head trained in full and saved with it
    lora_alpha: float = 16.0         # the LoRA update is scaled by lora_alpha / lora_r
    lora_dropout: float = 0.0        # dropout on the LoRA path (0: none)
    lora_targets: Optional[List[str]] = None  # module names to adapt; null: peft's default for the architecture


def _default_rm() -> Dict[str, Any]:
    return {"kind": "classifier"}


@dataclass
class BenchmarkConfig:
    source: str = "toy"              # toy: built from held-out prompts | files: rb2_path / rb1_path
    rb2_path: Optional[str] = None   # jsonl/parquet in the RewardBench 2 schema, or a hub id
    rb1_path: Optional[str] = None   # jsonl/parquet in the RewardBench 1 schema, or a hub id
    rows_per_subset: int = 150       # toy RB2 rows per non-Ties subset (real RB2: 160-495)
    seed: int = 0
    decontam_ngram: int = 8          # n-gram size of the overlap check
    decontam_max_overlap: float = 0.0  # largest share of benchmark prompts allowed to overlap train
    score_batch_tokens: int = 4096   # token budget of a scoring batch (length-bucketed)


@dataclass
class PolicyConfig:
    model: str = "toy_llama_s_sft"   # a conf/model entry (usually an SFT variant); hf: `path` below
    path: Optional[str] = None       # model=hf only: hub id or local save_pretrained directory
    trust_remote_code: bool = False  # model=hf only; never on unless a config asks
    temperature: float = 1.0
    max_new_tokens: int = 24


@dataclass
class BonConfig:
    enabled: bool = True
    prompts_per_domain: int = 150    # held-out prompts per domain, up to: the toy world's are all used (481)
    n_samples: int = 64              # samples per prompt (N_max); gain_16 averages all 16-subsets of them


@dataclass
class PPOConfig:
    enabled: bool = False
    algorithm: str = "ppo"           # ppo (value model from the RM, GAE) | grpo (group-relative advantages, no value model)
    group_size: int = 4              # grpo only: samples per prompt; rollout_batch / group_size prompts a step (same samples as ppo)
    steps: int = 80                  # PPO iterations (rollout + update); toy default: ~50 s on 2 cores
    rollout_batch: int = 64          # prompts per rollout (64: steadier steps than 32 on the toy world)
    minibatch: int = 16              # must divide rollout_batch
    ppo_epochs: int = 2
    lr: float = 1e-4                 # toy tuning: 5e-4 hacks the RM within 10 steps (KL > 4, gold falls)
    value_lr: float = 5e-4
    kl_coef: float = 1.0             # toy tuning, data seeds 3-8: gold +0.105 at KL 0.4 nats vs +0.070 at 4.0 for 0.2 (docs/world_calibration.md)
    kl_kind: Optional[str] = None    # k1 | k2 | k3 | abs; null: the algorithm's own (ppo: k1 in the reward; grpo: k3 in the loss)
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
    eval_prompts_per_domain: int = 150 # held-out prompts per domain for gold/proxy/KL, as many as BoN
    eval_every: int = 10
    seed: int = 0                    # PPO's own seed (sampling, minibatch order): vary it without retraining the RM


@dataclass
class DPOTrainConfig:
    enabled: bool = False
    beta: float = 0.1                # TRL DPOConfig's default (trl/trainer/dpo_config.py); larger = closer to the SFT policy
    lr: float = 5e-5                 # benchmarks/dpo_lr_probe.py: 1e-5/5e-5/2e-4 -> gold +0.040/+0.035/+0.019, KL 0.15/1.2/7.9 (2e-4 drifts)
    epochs: int = 1                  # one pass over the RM's training pairs (the probe above measured one epoch)
    batch_size: int = 32             # pairs per step, as train.batch_size
    max_pairs: Optional[int] = None  # null: every training pair; a number caps them (cheaper runs)
    seed: int = 0                    # batch order


@dataclass
class RLVRConfig:
    enabled: bool = False
    algorithm: str = "grpo"          # grpo: no value model needed (there is no RM to start one from) | ppo: value head from the SFT policy
    kl_coef: float = 0.2             # gold in [0, 1] is on another scale than an RM score: PPO's 1.0 cut its gain +0.18 -> +0.03
    # Every other RL setting (steps, lr, batch sizes, evaluation) is downstream.ppo's, so rlvr and ppo differ only in
    # the reward and the KL coefficient that suits it.


@dataclass
class DownstreamConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    bon: BonConfig = field(default_factory=BonConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOTrainConfig = field(default_factory=DPOTrainConfig)
    rlvr: RLVRConfig = field(default_factory=RLVRConfig)


@dataclass
class TaskConfig:
    name: str = "toy"                # toy: the world's held-out prompts and verifiers | a task in rmexp/tasks/
    path: Optional[str] = None       # real tasks: hub dataset id or local jsonl/parquet in the task's schema
    subset: Optional[str] = None     # hub dataset config name (openai/gsm8k needs "main"); null: none
    split: str = "test"              # hub split (local files have one)
    size: int = 0                    # items kept, a seeded sample (0: all); methods use their first prompts_per_domain
    seed: int = 0                    # fixed, not ${seed}: the eval items are the instrument, as benchmark.seed
    train_path: Optional[str] = None  # PPO/RLVR train prompts: hub id or file in the same schema; null: eval only
    train_split: str = "train"       # hub split of train_path (its prompts must not be eval prompts: checked)


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
    # rm.kind picks a registered RM kind (rmexp/rm/); the other keys are that kind's options, checked by `validate`
    # against its options dataclass (a Dict here: each kind has its own keys).
    rm: Dict[str, Any] = field(default_factory=_default_rm)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    task: TaskConfig = field(default_factory=TaskConfig)  # the gold signal of the downstream methods
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0                    # the trial's seed: data.seed, train.seed, downstream.ppo.seed follow it
    cache_dir: str = ".rmexp_cache"  # stage outputs and the zoo, keyed by content hash
    device: str = "cpu"              # cpu | cuda | auto
    threads: int = 1                 # torch CPU threads for a single run
    fail_stage: Optional[str] = None # test hook: raise in this stage (rm, bench, or a downstream method's name)
    verbose: bool = False            # print the full traceback of an error (the run's error.txt always has it)


def register() -> None:
    ConfigStore.instance().store(name="config_schema", node=Config)


register()

CHOICES = {
    "model.source": ("toy", "hf"), "model.family": None, "model.init": ("pretrained", "random"),
    "data.source": ("toy", "files"), "train.schedule": ("constant", "linear", "cosine"),
    "train.overlong": ("truncate", "drop"), "benchmark.source": ("toy", "files"),
    "downstream.ppo.kl_kind": (None, "k1", "k2", "k3", "abs"), "downstream.ppo.algorithm": ("ppo", "grpo"),
    "downstream.rlvr.algorithm": ("ppo", "grpo"), "device": ("cpu", "cuda", "auto"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "model.attn_implementation": (None, "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"),
}
POSITIVE = ("model.n_layer", "model.d_model", "model.n_head", "model.pretrain_batch", "model.block_size",
            "model.rm_lr", "data.size", "train.epochs", "train.lr", "train.batch_size", "train.max_length",
            "benchmark.rows_per_subset", "benchmark.decontam_ngram", "benchmark.score_batch_tokens",
            "downstream.policy.max_new_tokens", "downstream.policy.temperature",
            "downstream.bon.prompts_per_domain", "downstream.bon.n_samples",
            "downstream.ppo.steps", "downstream.ppo.rollout_batch", "downstream.ppo.minibatch",
            "downstream.ppo.ppo_epochs", "downstream.ppo.lr", "downstream.ppo.value_lr",
            "downstream.ppo.eval_every", "downstream.ppo.eval_prompts_per_domain", "downstream.ppo.kl_target",
            "downstream.ppo.kl_horizon", "downstream.ppo.group_size",
            "downstream.dpo.beta", "downstream.dpo.lr", "downstream.dpo.epochs", "downstream.dpo.batch_size",
            "ray.cpus_per_trial", "threads")
NON_NEGATIVE = ("model.pretrain_steps", "model.sft_steps", "train.margin", "train.center_coef", "train.lora_r",
                "train.weight_decay", "downstream.ppo.kl_coef", "downstream.rlvr.kl_coef", "downstream.ppo.clip_range",
                "downstream.ppo.clip_range_value", "downstream.ppo.vf_coef", "downstream.ppo.missing_eos_penalty",
                "ray.gpus_per_trial", "ray.max_retries")
FRACTIONS = ("data.label_noise", "data.eval_fraction", "train.warmup_ratio", "model.sft_wrong_rate",
             "benchmark.decontam_max_overlap", "downstream.ppo.gamma", "downstream.ppo.lam",
             "data.max_unk_share", "data.max_identical_share", "train.lora_dropout")
OPEN_FRACTIONS = ("data.eval_fraction",)  # 0 leaves no eval pairs, 1 no training pairs
# Mappings whose keys are data, not schema: checked by their own rules (the rm group by its kind's options dataclass;
# data.sources, a list of structured sources, by its element schema: `data.sources.0.weight=3` is an override).
FREE_MAPPINGS = ("model.corpus_mix", "data.domain_weights", "data.sources", "sweep.axes", "rm")


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


def _check_columns(key: str, columns: DictConfig) -> None:
    for name, column in columns.items():
        if not column:
            _fail(f"{key}.{name}", column, "it must name a column (a non-empty string)")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def _check_files_data(d: DictConfig) -> None:
    """data.path (one source) or data.sources (a mix), their column mappings and weights; toy-only options
    refused for files and files-only options refused for toy (they would be silently ignored)."""
    if d.source != "files":
        for key, empty in (("path", None), ("columns", ColumnsConfig().__dict__), ("margin_column", None),
                           ("sources", [])):
            if _plain(d[key]) != empty:
                _fail(f"data.{key}", _plain(d[key]), "it applies to data.source=files only (data=files)")
        return
    for key, default in (("label_noise", 0.0), ("on_policy", None)):
        if d[key] != default:
            _fail(f"data.{key}", d[key], "it applies to data.source=toy only")
    if not d.path and not d.sources:
        _fail("data.path", None, "data.source=files needs a jsonl/parquet file or a hub dataset id "
                                 "(or a mix in data.sources)")
    if d.path and d.sources:
        _fail("data.path", d.path, "give data.path (one source) or data.sources (a mix), not both")
    for key, empty in (("columns", ColumnsConfig().__dict__), ("margin_column", None)):
        if d.sources and _plain(d[key]) != empty:
            _fail(f"data.{key}", _plain(d[key]), f"with data.sources set it per source (data.sources[i].{key})")
    _check_columns("data.columns", d.columns)
    for i, src in enumerate(d.sources):
        if not src.path:
            _fail(f"data.sources[{i}].path", src.path, "each source needs a jsonl/parquet file or a hub dataset id")
        if not (math.isfinite(src.weight) and src.weight >= 0):
            _fail(f"data.sources[{i}].weight", src.weight, "it must be a finite number >= 0")
        _check_columns(f"data.sources[{i}].columns", src.columns)
    if d.sources and sum(s.weight for s in d.sources) <= 0:
        _fail("data.sources", [s.weight for s in d.sources], "the weights must sum to a positive total")


def _check_registries(cfg: DictConfig) -> None:
    """The RM kind and its options, and the test hook's stage, against what is registered."""
    from rmexp.downstream import DOWNSTREAM
    from rmexp.rm import check_rm_config

    problem = check_rm_config(cfg.rm)
    if problem:
        raise ConfigError(f"config error: {problem}")
    from rmexp.rm import RM_KINDS

    for key in ("train.packing", "train.compile"):  # only kinds that train through train_reward_model read them
        if OmegaConf.select(cfg, key) and not RM_KINDS[cfg.rm.kind].packed_training:
            packed = sorted(name for name, kind in RM_KINDS.items() if kind.packed_training)
            _fail(key, True, f"rm={cfg.rm.kind} does not train packed; kinds that do: {packed}")
    if cfg.train.compile and not cfg.train.packing:
        _fail("train.compile", True, "it needs train.packing=true (fixed token budgets: padded batches change "
              "shape every step and would recompile)")
    if cfg.train.compile and cfg.train.gradient_checkpointing:
        _fail("train.compile", True, "it does not go with train.gradient_checkpointing=true (checkpointed layers "
              "break the compiled graph and run eager); use one or the other")
    stages = [None, "rm", "bench", *DOWNSTREAM]
    if cfg.fail_stage not in stages:
        _fail("fail_stage", cfg.fail_stage, f"choose one of {stages}")


def _leaves(node: Any, prefix: str = ""):
    """(dotted key, value) of every leaf of a config (dict keys that are data are still walked)."""
    if isinstance(node, DictConfig):
        for k in node.keys():
            yield from _leaves(None if OmegaConf.is_missing(node, k) else node[k], f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def schema_keys() -> list[str]:
    """Every dotted key the schema knows (free mappings as one key)."""
    out = []

    def walk(node: DictConfig, prefix: str) -> None:
        for k in node.keys():
            key = f"{prefix}{k}"
            out.append(key)
            child = node._get_node(k)  # not node[k]: a ??? value would raise
            if key not in FREE_MAPPINGS and isinstance(child, DictConfig):
                walk(child, key + ".")
    walk(OmegaConf.structured(Config), "")
    return out


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys the schema lacks. Struct mode refuses `train.epoch=2`, but Hydra's `+key=value` adds with
    `force_add`, which bypasses struct mode; so the composed config is compared with the schema here."""
    known = set(schema_keys())

    def walk(node: DictConfig, prefix: str) -> None:
        for k in node.keys():
            key = f"{prefix}{k}"
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ConfigError(f"config error: unknown config key {key!r}; {hint}a + override cannot add keys the "
                                  f"schema lacks (only +sweep=<name>); see the keys with `python -m rmexp --cfg job`")
            child = node._get_node(k)  # not node[k]: a ??? value would raise
            if key not in FREE_MAPPINGS and isinstance(child, DictConfig):
                walk(child, key + ".")
    walk(cfg, "")


def validate(cfg: DictConfig) -> None:
    """Check what the type system cannot: unknown keys added with +, finite numbers, ranges, choices, mixes,
    registered RM kinds and options, model names, then (rmexp/preflight.py) paths, files, CUDA and the data's
    tokenizer coverage."""
    check_known_keys(cfg)
    _check_registries(cfg)
    for key, value in _leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            _fail(key, value, "it must be a finite number")
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
    for key in OPEN_FRACTIONS:
        if not 0 < OmegaConf.select(cfg, key) < 1:
            _fail(key, OmegaConf.select(cfg, key), "it must be strictly between 0 and 1")
    if cfg.model.d_model % cfg.model.n_head:
        _fail("model.n_head", cfg.model.n_head, f"it must divide model.d_model={cfg.model.d_model}")
    if cfg.model.source == "hf" and not cfg.model.path:
        _fail("model.path", None, "model.source=hf needs a hub id or a local directory")
    if cfg.model.source == "toy" and cfg.model.family not in ("llama", "gpt2"):
        _fail("model.family", cfg.model.family, "the zoo builds families ['llama', 'gpt2']")
    _check_files_data(cfg.data)
    if cfg.train.lora_r > 0 and cfg.train.lora_alpha <= 0:
        _fail("train.lora_alpha", cfg.train.lora_alpha, "it must be > 0 when train.lora_r > 0")
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
    grpo_used = ppo.algorithm == "grpo" or (cfg.downstream.rlvr.enabled and cfg.downstream.rlvr.algorithm == "grpo")
    if grpo_used and (ppo.group_size < 2 or ppo.rollout_batch % ppo.group_size):
        _fail("downstream.ppo.group_size", ppo.group_size,
              f"grpo needs >= 2 samples per prompt, dividing downstream.ppo.rollout_batch={ppo.rollout_batch} exactly")
    if grpo_used and ppo.kl_kind == "k1":
        _fail("downstream.ppo.kl_kind", ppo.kl_kind, "grpo puts the KL in the loss, where k1 has zero expected "
              "gradient: choose k3 (the GRPO paper's), k2, abs or null")
    if cfg.downstream.dpo.max_pairs is not None and cfg.downstream.dpo.max_pairs <= 0:
        _fail("downstream.dpo.max_pairs", cfg.downstream.dpo.max_pairs, "it must be > 0 or null (every pair)")
    names = [("data.on_policy", cfg.data.on_policy)] if cfg.data.on_policy else []
    from rmexp.downstream import DOWNSTREAM

    if any(cfg.downstream[name].enabled for name in DOWNSTREAM):  # every method starts from the policy
        names.append(("downstream.policy.model", cfg.downstream.policy.model))
    for key, name in names:
        if not (CONF_DIR / "model" / f"{name}.yaml").exists():
            known = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
            _fail(key, name, f"choose a conf/model entry: {known}")
    _check_policy(cfg)
    _check_task(cfg)
    from rmexp.preflight import check_inputs  # imported here: it loads tokenizers and reads files

    check_inputs(cfg)


def _check_policy(cfg: DictConfig) -> None:
    """`downstream.policy.path` goes with an hf policy (model=hf, or a conf/model entry with source hf), and an hf
    policy needs one."""
    pol = cfg.downstream.policy
    if not (CONF_DIR / "model" / f"{pol.model}.yaml").exists():
        return  # refused above when a method uses the policy; unused otherwise
    source = load_model_config(pol.model).source
    if source == "toy" and (pol.path is not None or pol.trust_remote_code):
        key = "downstream.policy.path" if pol.path is not None else "downstream.policy.trust_remote_code"
        _fail(key, OmegaConf.select(cfg, key), f"it applies to hf policies only (downstream.policy.model=hf); "
              f"{pol.model!r} is a zoo model")
    pcfg = policy_model_config(pol)
    if source == "hf" and (OmegaConf.is_missing(pcfg, "path") or not pcfg.path):
        _fail("downstream.policy.path", None, "downstream.policy.model=hf needs a hub id or a local directory")


def _check_task(cfg: DictConfig) -> None:
    """A registered task (the list comes from rmexp/tasks/), its source, and the methods it can feed."""
    from rmexp.downstream import DOWNSTREAM
    from rmexp.tasks import TASKS

    t = cfg.task
    allowed = ["toy", *sorted(TASKS)]
    if t.name not in allowed:
        _fail("task.name", t.name, f"choose one of {allowed} (real tasks are registered in rmexp/tasks/)")
    if t.size < 0:
        _fail("task.size", t.size, "it must be >= 0 (0: every item)")
    if t.name == "toy":
        for key in ("path", "subset"):
            if t[key] is not None:
                _fail(f"task.{key}", t[key], "it applies to real tasks only; task=toy reads the world's prompts")
        return
    if not t.path:
        _fail("task.path", None, f"task={t.name} needs a hub dataset id or a local jsonl/parquet file")
    for name, method in DOWNSTREAM.items():
        if cfg.downstream[name].enabled and method.trains_on_prompts and not t.train_path:
            _fail(f"downstream.{name}.enabled", True,
                  f"{name} trains on the task's prompts and task={t.name} has none: set task.train_path (a hub id "
                  f"with task.train_split, or a file in the {t.name} schema) to items disjoint from the eval items")


def policy_model_config(pol: DictConfig) -> DictConfig:
    """The model config of a downstream policy: its conf/model entry, with `downstream.policy.path` and
    `trust_remote_code` for an hf policy."""
    cfg = load_model_config(pol.model)
    cfg.name = pol.model if cfg.name == "???" else cfg.name
    if cfg.source == "hf":
        if pol.path is not None:
            cfg.path = pol.path
        cfg.trust_remote_code = bool(pol.trust_remote_code or cfg.trust_remote_code)
    return cfg


def to_plain(cfg: DictConfig | dict) -> dict:
    if isinstance(cfg, dict):
        return cfg
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def config_hash(*parts: Any) -> str:
    """Content hash of config parts (sorted-key JSON): the cache key of a stage's output."""
    blob = json.dumps([to_plain(p) if isinstance(p, (DictConfig, dict)) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def torch_threads() -> int:
    """Torch CPU threads of this process: part of the identity of every cached output and of a trial.

    CPU float reductions split work by thread, so the same config and seed trained with 1 and with 2 threads
    differ in the last bits (benchmarks/thread_identity.py, tiny preset, fresh caches, 2026-11-26: zoo weights up
    to 6e-7 apart, 22 of 141 non-timing metrics different, e.g. rb1/overall 0.5462 vs 0.5426). Keying by the
    thread count keeps "same key, same numbers" true."""
    import torch

    return int(torch.get_num_threads())


def numerics() -> dict[str, Any]:
    """What, beside a config and its seeds, decides the last bits of a result, and so is part of the identity of
    every cached output and of a trial: the torch thread count (:func:`torch_threads`), the instruction set ATen's
    CPU kernels dispatch on and MKL's reproducibility mode (pinned at AVX2 by ``rmexp/__init__.py``; unpinned, an
    AVX-512 machine gave other metrics than an AVX2 one: docs/reproducibility.md), and the torch and transformers
    versions (their kernels and model code)."""
    import os

    import torch
    import transformers

    return {"threads": torch_threads(), "cpu": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR", ""), "torch": torch.__version__,
            "transformers": transformers.__version__}


def run_threads(cfg: DictConfig) -> int:
    """The torch threads a trial runs with: ``threads`` for a single run; in a sweep the driver gives each trial
    ``ray.cpus_per_trial`` threads (rounded, at least 1)."""
    if OmegaConf.select(cfg, "sweep.name"):
        return max(1, int(round(float(cfg.ray.cpus_per_trial))))
    return int(cfg.threads)


def load_model_config(name: str) -> DictConfig:
    """A conf/model/<name>.yaml entry merged into the schema (policies name zoo models this way)."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise ConfigError(f"config error: unknown model {name!r}; known models: {known}")
    schema = OmegaConf.structured(ModelConfig)
    return OmegaConf.merge(schema, OmegaConf.load(path))
