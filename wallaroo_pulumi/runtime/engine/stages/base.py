"""What every stage shares: the model call it is given, its answer, the `_model_split` column,
and running groups of rows on different models at once, answers back in row order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.engine.step import Step

ModelCall = Callable[["Step", pa.Table], Awaitable[pa.Table]]
"""call(step, rows): one model on these rows, its answer conformed; raises a WallarooError naming the step"""

MODEL_SPLIT = "_model_split"


@dataclass
class StageAnswer:
    table: pa.Table
    served: list[int] | None = None  # per row: the index (in the stage's steps) of the model that answered
    logged: dict[str, pa.ChunkedArray | pa.Array] = field(default_factory=dict)  # log-only columns (shadow challengers)


def served_label(step: Step) -> str:
    """A model as Wallaroo's `out._model_split` names it: JSON {name, version, sha}."""
    return json.dumps({"name": step.model_name, "version": step.model_version, "sha": step.sha}, separators=(",", ":"))


def model_split_column(steps: Sequence[Step], served: list[int]) -> pa.Array:
    labels = [served_label(s) for s in steps]
    return pa.array([[labels[k]] for k in served], pa.list_(pa.string()))


def concat_rows(parts: list[pa.Table]) -> pa.Table:
    """Answers of different models as one table (columns one model lacks are null)."""
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts, promote_options="permissive")


async def run_groups(table: pa.Table, choice: list[int], steps: Sequence[Step], call: ModelCall) -> pa.Table:
    """Each row on the model `choice[row]` names, the models at once; answers in row order."""
    groups: dict[int, list[int]] = {}
    for row, k in enumerate(choice):
        groups.setdefault(k, []).append(row)
    if len(groups) == 1:
        [k] = groups
        return await call(steps[k], table)
    answers = await asyncio.gather(*(call(steps[k], table.take(rows)) for k, rows in groups.items()))
    order = [row for rows in groups.values() for row in rows]
    inverse = [0] * len(order)
    for position, row in enumerate(order):
        inverse[row] = position
    return concat_rows(list(answers)).take(inverse)


def key_values(keys: dict[str, list[Any]], column: str | None, rows: int) -> list[Any]:
    """The request's values of a routing column (None for a row without one)."""
    return keys.get(column, [None] * rows) if column else [None] * rows
