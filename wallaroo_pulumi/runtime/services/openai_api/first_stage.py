"""Which models of the pipeline's first stage a streamed OpenAI call (one row) goes to, by the
same rules the stage routes rows by (D47): a split's pick for this call, a fallback's models in
turn, a shadow's champion streamed with its challengers beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.engine.stages import AnyStage
from wallaroo_pulumi.runtime.engine.stages.base import key_values
from wallaroo_pulumi.runtime.engine.stages.fallback import FallbackStage, failed_rows
from wallaroo_pulumi.runtime.engine.stages.key_split import KeySplitStage
from wallaroo_pulumi.runtime.engine.stages.random_split import RandomSplitStage
from wallaroo_pulumi.runtime.engine.stages.shadow import ShadowStage
from wallaroo_pulumi.runtime.engine.step import Step


@dataclass
class StreamPlan:
    order: list[int]  # the stage's models to stream from, in turn (one, unless a fallback)
    served: bool = False  # the stage names who answered (`out._model_split`)
    challengers: list[Step] = field(default_factory=list)  # a shadow's: called unstreamed, only logged
    on: frozenset[str] = frozenset()  # a fallback's fall-through errors

    def falls_through(self, answer: pa.Table | None, error: WallarooError | None) -> bool:
        """Whether a model's answer (or its failure as a whole) sends the call on to the next model."""
        if error is not None:
            return "step_error" in self.on
        return answer is not None and failed_rows(answer, self.on)[0]


def plan(stage: AnyStage, keys: dict[str, list[Any]]) -> StreamPlan:
    """The stage's models for one streamed call whose routing column values are `keys`."""
    if isinstance(stage, RandomSplitStage | KeySplitStage):
        return StreamPlan(stage.choose(key_values(keys, stage.route_key, 1)), served=True)
    if isinstance(stage, FallbackStage):
        return StreamPlan(list(range(len(stage.steps))), served=True, on=stage.on)
    if isinstance(stage, ShadowStage):
        return StreamPlan([0], challengers=stage.steps[1:])
    return StreamPlan([0])
