"""`MetaValueSplit`: each row to the model its key column's value routes to, else the control
(the first of `steps`). Values compare as text, as the definition's route keys are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from wallaroo_pulumi.runtime.engine.stages.base import ModelCall, StageAnswer, key_values, run_groups

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.engine.step import Step


def as_key(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class KeySplitStage:
    steps: list[Step]  # the control, then one per route
    routes: list[str]  # the route keys, in the order of steps[1:]
    route_key: str | None = None  # the split_key

    @property
    def name(self) -> str:
        return f"key-split[{self.route_key}]"

    def choose(self, values: list[Any]) -> list[int]:
        index = {key: i + 1 for i, key in enumerate(self.routes)}
        return [index.get(as_key(v), 0) for v in values]  # type: ignore[arg-type]

    async def run(self, table: pa.Table, keys: dict[str, list[Any]], call: ModelCall) -> StageAnswer:
        choice = self.choose(key_values(keys, self.route_key, table.num_rows))
        return StageAnswer(await run_groups(table, choice, self.steps, call), served=choice)
