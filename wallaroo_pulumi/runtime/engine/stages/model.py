"""A plain model step: every row to its one model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from wallaroo_pulumi.runtime.engine.stages.base import ModelCall, StageAnswer

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.engine.step import Step


@dataclass
class ModelStage:
    steps: list[Step]
    route_key: str | None = None

    @property
    def name(self) -> str:
        return self.steps[0].name

    async def run(self, table: pa.Table, _keys: dict[str, list[Any]], call: ModelCall) -> StageAnswer:
        return StageAnswer(await call(self.steps[0], table))
