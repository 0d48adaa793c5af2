"""The stages of a deployed pipeline version, one module per kind: each takes the rows, runs
them on its models (each its own sidekick pool) and answers; `build` makes them from the
definition's parsed stages and the models' steps, in the same order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wallaroo_pulumi.runtime.engine.stages.base import MODEL_SPLIT, ModelCall, StageAnswer, model_split_column
from wallaroo_pulumi.runtime.engine.stages.fallback import FallbackStage
from wallaroo_pulumi.runtime.engine.stages.key_split import KeySplitStage
from wallaroo_pulumi.runtime.engine.stages.model import ModelStage
from wallaroo_pulumi.runtime.engine.stages.random_split import RandomSplitStage
from wallaroo_pulumi.runtime.engine.stages.shadow import ShadowStage
from wallaroo_pulumi.runtime.wire.steps import Fallback, MetaValueSplit, RandomSplit, Stage

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.engine.step import Step

AnyStage = ModelStage | RandomSplitStage | KeySplitStage | ShadowStage | FallbackStage

__all__ = ["MODEL_SPLIT", "AnyStage", "ModelCall", "ModelStage", "StageAnswer", "build", "model_split_column"]


def build(plan: list[Stage], steps: list[Step]) -> list[AnyStage]:
    """Runtime stages for `plan`, taking `steps` (one per model the plan names) in order."""
    out: list[AnyStage] = []
    at = 0
    for stage in plan:
        mine, at = steps[at:at + len(stage.refs)], at + len(stage.refs)
        spec = stage.step
        if isinstance(spec, RandomSplit):
            out.append(RandomSplitStage(mine, [w.weight for w in spec.weights], spec.hash_key))
        elif isinstance(spec, MetaValueSplit):
            out.append(KeySplitStage(mine, list(spec.routes), spec.split_key))
        elif isinstance(spec, Fallback):
            out.append(FallbackStage(mine, frozenset(spec.on)))
        elif stage.kind == "shadow":
            out.append(ShadowStage(mine))
        else:
            out.append(ModelStage(mine))
    if at != len(steps):
        raise ValueError(f"the definition names {at} models, the deployment has {len(steps)} steps")
    return out
