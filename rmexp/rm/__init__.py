"""Reward models: the `Scorer` contract (`base.py`) and one module per kind, found by `discover`.

`from rmexp.rm import RewardModel, format_dialogue, ...` keeps working: the classifier's helpers, which other
modules (PPO, the benchmarks) use, are re-exported here.
"""
from rmexp.rm.base import (RM_KINDS, RMContext, RMKind, Scorer, ValueInit, base_identity, check_rm_config,
                           discover, register_rm_kind, rm_options, rows_identity)

discover(__name__, __path__)

from rmexp.rm.classifier import (RM_VERSION, PackLayout, RewardModel, bucketed_batches, compile_base, encode,  # noqa: E402
                                 encode_pairs, format_dialogue, last_token_rewards, load_reward_model, lr_factor,
                                 make_optimizer, pad_batch, pair_accuracy, pair_forward, pairwise_loss,
                                 resolve_device, sorted_scores, split_pairs, train_reward_model, train_step)

__all__ = ["RM_KINDS", "RMContext", "RMKind", "Scorer", "ValueInit", "base_identity", "check_rm_config",
           "discover", "register_rm_kind", "rm_options", "rows_identity", "RM_VERSION", "PackLayout", "RewardModel",
           "bucketed_batches", "compile_base", "encode", "encode_pairs", "format_dialogue", "last_token_rewards",
           "load_reward_model", "lr_factor", "make_optimizer", "pad_batch", "pair_accuracy", "pair_forward",
           "pairwise_loss", "resolve_device", "sorted_scores", "split_pairs", "train_reward_model", "train_step"]
