"""`RandomSplit`: each row to one model, chosen by weight. A row with a `hash_key` value is
sticky: a float in [0, 1] is used as the draw itself (Wallaroo's documented use), any other
value is hashed (SHA-256) to one, so the same value picks the same model while weights stay."""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from wallaroo_pulumi.runtime.engine.stages.base import ModelCall, StageAnswer, key_values, run_groups

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.engine.step import Step


def draw(value: Any) -> float:
    """A number in [0, 1) for a row: its own (a float in [0, 1]), the hash of its key, or random."""
    if value is None:
        return random.random()
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return min(value, 0.9999999999)
    digest = hashlib.sha256(str(value).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class RandomSplitStage:
    steps: list[Step]
    weights: list[float]
    route_key: str | None = None  # the hash_key

    @property
    def name(self) -> str:
        return "split:" + "|".join(s.name for s in self.steps)

    def choose(self, values: list[Any]) -> list[int]:
        edges = list(accumulate(self.weights))
        total = edges[-1]
        last = max(i for i, w in enumerate(self.weights) if w > 0)
        return [min(bisect.bisect_right(edges, draw(v) * total), last) for v in values]

    async def run(self, table: pa.Table, keys: dict[str, list[Any]], call: ModelCall) -> StageAnswer:
        choice = self.choose(key_values(keys, self.route_key, table.num_rows))
        return StageAnswer(await run_groups(table, choice, self.steps, call), served=choice)
