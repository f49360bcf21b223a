"""PPO (`downstream.ppo`): RL of the SFT policy against the RM; the algorithm itself is `rmexp.ppo`.

The value model starts from the scorer's `value_init()`; a scorer that offers none is refused before training.
"""
from __future__ import annotations

from rmexp.downstream.base import DownstreamContext, DownstreamMethod, StageOutput, register_downstream


def run(ctx: DownstreamContext) -> StageOutput:
    from rmexp.ppo import ppo_stage  # imported here: most trials do not run PPO

    metrics, history, artifacts = ppo_stage(ctx.cfg, ctx.world, ctx.rm, ctx.cache, ctx.out_dir, ctx.progress)
    return StageOutput(metrics=metrics, history=history, artifacts=artifacts)


# Outcomes: the policy's gold, proxy, KL and eos rate after training (and the changes from the SFT start),
# overall and per domain. Seconds, the SFT policy's own scores and the training curves' diagnostics
# (kl_coef, value_loss, clipfrac, ...) do not measure the RM.
PPO = register_downstream(DownstreamMethod(
    name="ppo", uses_rm=True,
    outcomes=("gold", "gold_delta", "proxy", "proxy_delta", "kl", "missing_eos", "train_reward",
              r"[^/]+/gold", r"[^/]+/gold_delta"),
    run=run, headline=("gold", "gold_delta"), trains_on_prompts=True))
