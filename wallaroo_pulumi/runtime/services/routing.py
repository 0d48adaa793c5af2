"""One call's way through a live pipeline version's stages (splits, shadows, fallbacks, plain
steps), shared by the inference route and the OpenAI-compatible endpoints: each stage's timing
and tokens, the `out._model_split` column of who served each row, the shadows' log columns, and
a failure named after the step that failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.engine.stages import MODEL_SPLIT, AnyStage, ModelCall, StageAnswer, model_split_column
from wallaroo_pulumi.runtime.engine.state import Live
from wallaroo_pulumi.runtime.engine.step import Step
from wallaroo_pulumi.runtime.services.access.usage import Tokens
from wallaroo_pulumi.runtime.sidekick import (
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPredictError,
)

CallFor = Callable[[int], ModelCall]
"""call_for(stage index): how that stage runs one of its models (`Inference.model_call`)"""


class Route:
    """A call through `live`'s stages; `at` is the stage it is in (or failed in)."""

    def __init__(self, pipeline: str, live: Live, call_for: CallFor, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.live = live
        self.call_for = call_for
        self.metrics = metrics
        self.keys: dict[str, list[Any]] = {}  # the request's routing column values (`Inference.route_keys`)
        self.elapsed: list[int] = []  # ns per stage run so far
        self.tokens = Tokens()
        self.at = 0
        self.split: pa.Array | None = None
        self.shadows: dict[str, Any] = {}  # log-only columns (shadow challengers' answers)
        self.served_by: dict[int, list[Step]] = {}  # stage index -> the model that answered each row

    @property
    def stage(self) -> AnyStage:
        return self.live.stages[self.at]

    async def through(self, table: pa.Table, start: int = 0, end: int | None = None) -> pa.Table:
        """Stages `start` to `end` (default: the last) on `table`; the last one's answer (without the
        split column: see `answer`)."""
        for index in range(start, len(self.live.stages) if end is None else end):
            self.at = index
            t0 = time.perf_counter_ns()
            try:
                answer = await self.stage.run(table, self.keys, self.call_for(index))
            except Exception as exc:  # noqa: BLE001 - every failure is answered and logged
                self.elapsed.append(time.perf_counter_ns() - t0)
                raise (exc if isinstance(exc, WallarooError) else step_error(self.stage.steps[0], exc)) from None
            table = self.record(index, table, answer, t0)
        return table

    def record(self, index: int, table: pa.Table, answer: StageAnswer, t0: int) -> pa.Table:
        """Stage `index`'s answer to `table`, begun at `t0` (perf_counter_ns): timed, counted, kept."""
        stage = self.live.stages[index]
        self.tokens.add_step(table, answer.table)
        if answer.served is not None:
            self.split = model_split_column(stage.steps, answer.served)
        served = answer.served if answer.served is not None else [0] * table.num_rows
        self.served_by[index] = [stage.steps[k] for k in served]
        self.shadows.update(answer.logged)
        self.elapsed.append(time.perf_counter_ns() - t0)
        self.metrics.child(self.metrics.step_latency, self.pipeline, stage.name).observe(self.elapsed[-1] / 1e9)
        return answer.table

    def answer(self, table: pa.Table) -> pa.Table:
        """The final answer with `out._model_split` (which model served each row) when a split or fallback ran."""
        return table if self.split is None else table.append_column(MODEL_SPLIT, self.split)

    def logged(self, entry: pa.Table) -> pa.Table:
        """A log entry with the shadows' answers (only ever logged, never answered)."""
        for name, column in self.shadows.items():
            entry = entry.append_column(name, column)
        return entry


def step_error(step: Step, exc: Exception) -> WallarooError:
    """The answer for a step that failed, naming the step and its model."""
    where = f"step '{step.name}' (model {step.model_name})"
    if isinstance(exc, SidekickCrashedError):
        message = f"{where}: sidekick process crashed: {exc}; it is being restarted"
    elif isinstance(exc, SidekickLoadError):
        message = f"{where}: sidekick not loaded: {exc}"
    elif isinstance(exc, SidekickPredictError) and exc.error_type == "InferenceDataValidationError":
        return WallarooError(f"{where} rejected the input: {exc}", status=400, source="model", step=step.name)
    elif isinstance(exc, SidekickPredictError):
        message = f"{where}: _predict failed: {exc}"
    elif isinstance(exc, SidekickError):
        message = f"{where}: {exc}"
    elif isinstance(exc, WallarooError):
        return exc
    else:
        return WallarooError(f"{where}: {type(exc).__name__}: {exc}", source="engine", step=step.name)
    return WallarooError(message, status=exc.status, source=exc.source, step=step.name)


def error_kind(exc: Exception) -> str:
    """The `kind` label of a step error in the step_errors metric."""
    for cls, kind in ((SidekickCrashedError, "crashed"), (SidekickLoadError, "load"), (SidekickPredictError, "predict"),
                      (TimeoutError, "timeout")):
        if isinstance(exc, cls):
            return kind
    return "other"
