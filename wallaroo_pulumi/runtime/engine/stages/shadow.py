"""A shadow deploy: every row to the champion and to each challenger at once; the champion
answers, each challenger's answer is logged as `out_<model>.<field>` (nulls where it failed:
a challenger's failure never fails the call; it is counted in the step error metric)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from wallaroo_pulumi.runtime.engine.stages.base import ModelCall, StageAnswer

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.engine.step import Step


@dataclass
class ShadowStage:
    steps: list[Step]  # the champion, then the challengers
    route_key: str | None = None

    @property
    def name(self) -> str:
        return f"shadow:{self.steps[0].name}"

    async def run(self, table: pa.Table, _keys: dict[str, list[Any]], call: ModelCall) -> StageAnswer:
        answers = await asyncio.gather(*(call(step, table) for step in self.steps), return_exceptions=True)
        champion = answers[0]
        if isinstance(champion, BaseException):
            raise champion
        return StageAnswer(champion, logged=challenger_columns(self.steps[1:], answers[1:], table.num_rows))


def challenger_columns(steps: list[Step], answers: list[Any], rows: int) -> dict[str, Any]:
    """The challengers' answers as log columns `out_<model>.<field>` (nulls for one that failed)."""
    logged: dict[str, Any] = {}
    for step, answer in zip(steps, answers, strict=True):
        if isinstance(answer, BaseException):
            for f in step.output_schema:
                logged[f"out_{step.name}.{f.name}"] = pa.nulls(rows, f.type)
            continue
        for name in answer.column_names:
            logged[f"out_{step.name}.{name}"] = answer.column(name)
    return logged
