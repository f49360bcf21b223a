"""Until the contract's classifier kind lands (rmexp/rm/classifier.py registering "classifier"), the
ensemble's members are built from today's `train_reward_model`, cached the same way. Delete this file once
`RM_KINDS["classifier"]` exists: `register_classifier_if_missing` then does nothing."""
from __future__ import annotations

from rmexp.cache import cached
from rmexp.rm.base import RM_KINDS


def register_classifier_if_missing() -> None:
    """The classifier kind comes with the contract's classifier module; before that lands, the ensemble's
    members are built here from today's `train_reward_model`, cached the same way."""
    if "classifier" in RM_KINDS:
        return
    from rmexp.config import config_hash
    from rmexp.rm.base import RMKind, register_rm_kind
    from rmexp.rm.classifier import RewardModel, load_reward_model, train_reward_model
    from rmexp.rm.lm import base_identity, rows_identity

    class Classifier(RewardModel):
        kind = "classifier"

        def describe(self):
            return {"kind": "classifier", "params": sum(p.numel() for p in self.model.parameters()),
                    "metrics": self.info["metrics"], "history": {}}

        def value_init(self):
            return None

    def build(ctx):
        key = config_hash(base_identity(ctx.base), rows_identity(ctx.prefs), ctx.cfg.train, ctx.cfg.data.eval_fraction)
        rm = cached("rm", key, ctx.cache, lambda out: train_reward_model(ctx.base, ctx.prefs, ctx.cfg, out, progress=False),
                    load_reward_model, label="classifier")
        return Classifier(rm.model, rm.tok, rm.offset, rm.max_length, rm.path, rm.info)

    register_rm_kind(RMKind("classifier", object, build))
