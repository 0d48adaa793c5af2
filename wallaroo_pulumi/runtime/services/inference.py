"""An inference through a deployed pipeline: decode, each step in turn, one log entry and
one set of metrics per call, the answer encoded as asked."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import pyarrow as pa

from wallaroo_pulumi.runtime.core.errors import NotFound, Unavailable, WallarooError
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.engine.engine import Engine
from wallaroo_pulumi.runtime.engine.stages import MODEL_SPLIT, AnyStage, ModelCall, model_split_column
from wallaroo_pulumi.runtime.engine.state import DeploymentState, Live
from wallaroo_pulumi.runtime.engine.step import Step
from wallaroo_pulumi.runtime.services.access.usage import Tokens
from wallaroo_pulumi.runtime.services.guardrails.screen import Finding, Refused, annotate
from wallaroo_pulumi.runtime.services.guardrails.service import GuardrailPolicies
from wallaroo_pulumi.runtime.services.pipelines import Pipelines
from wallaroo_pulumi.runtime.sidekick import (
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPredictError,
)
from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.runtime.wire.dataset import Dataset
from wallaroo_pulumi.runtime.wire.formats import RESPONSE_DROP, conform, parse_input, response_kind, result_table
from wallaroo_pulumi.runtime.wire.route_keys import request_keys

log = logging.getLogger("wallaroo_pulumi.runtime.inference")

UsageRecorder = Callable[[str, int, Tokens], None]
"""usage(pipeline, rows, tokens): called once per inference, at its one exit"""


@dataclass
class Answer:
    payload: bytes
    media_type: str
    server_timing: str


class _StageFailed(Exception):
    """A stage's failure, as the caller answers it (`error`) and logs it (under `stage`)."""

    def __init__(self, stage: AnyStage, error: WallarooError) -> None:
        super().__init__(error.message)
        self.stage, self.error = stage, error


class Inference:
    def __init__(self, engine: Engine, pipelines: Pipelines, logstore: LogStore, metrics: Metrics,
                 usage: UsageRecorder | None = None, guardrails: GuardrailPolicies | None = None) -> None:
        self.engine = engine
        self.pipelines = pipelines
        self.logstore = logstore
        self.metrics = metrics
        self.usage = usage
        self.guardrails = guardrails

    def resolve(self, deploy_name: str, pipeline_name: str | None = None) -> tuple[str, int | None]:
        """(pipeline, deployment id) named by an inference URL: '<pipeline>-<id>' or a bare pipeline name."""
        base, _, tail = deploy_name.rpartition("-")
        dep_id = int(tail) if base and tail.isdigit() else None
        if pipeline_name is not None:
            if (base if dep_id is not None else deploy_name) != pipeline_name:
                raise NotFound(
                    f"inference URL mismatch: '{deploy_name}' is not a deployment of pipeline {pipeline_name!r}; "
                    f"use /v1/api/pipelines/infer/<pipeline>-<deployment id>/<pipeline>", source="inference",
                )
            return pipeline_name, dep_id
        if dep_id is None or (self.engine.get(base) is None and self.engine.get(deploy_name) is not None):
            return deploy_name, None  # a pipeline whose own name ends in -<digits>
        return base, dep_id

    def serving(self, pipeline_name: str, deployment_id: int | None) -> tuple[DeploymentState, Live]:
        state = self.engine.get(pipeline_name)
        if state is None:
            if self.pipelines.by_name(pipeline_name) is None:
                raise NotFound(f"no pipeline named {pipeline_name!r}", source="inference")
            raise NotFound(f"pipeline {pipeline_name!r} is not deployed; deploy it with /v1/api/pipelines/deploy", source="inference")
        if deployment_id is not None and deployment_id != state.id:
            raise NotFound(
                f"deployment {pipeline_name}-{deployment_id} does not exist; the pipeline's deployment is "
                f"{state.deploy_name} (URL /v1/api/pipelines/infer/{state.deploy_name}/{pipeline_name})",
                source="inference",
            )
        if state.live is None:
            if state.state == "failed":
                raise Unavailable(f"deployment {state.deploy_name} failed to start: {state.reason}")
            raise Unavailable(f"deployment {state.deploy_name} is still starting; retry shortly", headers={"Retry-After": "1"})
        return state, state.live

    async def run(
        self, pipeline_name: str, deployment_id: int | None, read_body: Callable[[], Awaitable[bytes]],
        content_type: str | None, accept: str | None, dataset: Dataset | None = None,
    ) -> Answer:
        started = time.perf_counter()
        state, live = self.serving(pipeline_name, deployment_id)
        with live.hold():  # the version this call took serves it to the end, even if replaced meanwhile
            return await self._run(pipeline_name, state, live, started, read_body, content_type, accept, dataset)

    async def _run(
        self, pipeline_name: str, state: DeploymentState, live: Live, started: float,
        read_body: Callable[[], Awaitable[bytes]], content_type: str | None, accept: str | None, dataset: Dataset | None,
    ) -> Answer:
        body = await read_body()
        first = live.steps[0]
        entry = partial(result_table, time_ms=int(time.time() * 1000), pipeline_version=live.pipeline_version,
                        partition=f"engine-{state.id}",
                        validations=self.pipelines.validations(live.pipeline_version_id, live.pipeline_version))
        outcome, logged, rows, tokens = "error", None, 0, Tokens()
        guard = self.guardrails.guard(pipeline_name) if self.guardrails is not None else None
        findings: list[Finding] = []
        try:
            try:
                inputs, req_kind = parse_input(body, content_type, first.input_schema)
            except WallarooError as exc:
                outcome = "bad_input"
                logged = entry(None, None, rows=1, last_model=first.last_model, elapsed=[], step=first.name,
                               error=f"{exc.status}: {exc.message}")
                raise
            t_parsed = time.perf_counter()
            rows = inputs.num_rows
            if guard is not None:
                try:
                    inputs = guard.table("request", inputs, findings)
                except Refused as exc:
                    outcome = "refused"
                    logged = entry(guard.table("request", inputs, [], log_only=True), None, rows=rows,
                                   last_model=first.last_model, elapsed=[], step=first.name,
                                   error=f"{exc.status}: {exc.message}", output_schema=live.stages[-1].steps[0].output_schema)
                    raise
            keys = self.route_keys(live, body, req_kind, inputs)
            elapsed: list[int] = []
            try:
                current, step, shadows = await self._stages(pipeline_name, live, inputs, keys, tokens, elapsed)
            except _StageFailed as failed:
                err = failed.error
                logged = entry(inputs, None, rows=inputs.num_rows, last_model=failed.stage.steps[0].last_model,
                               elapsed=elapsed, step=failed.stage.name, error=f"{err.status}: {err.message}",
                               output_schema=live.stages[-1].steps[0].output_schema)
                raise err from None
            t_steps = time.perf_counter()
            if guard is not None:
                try:
                    current = guard.table("response", current, findings)
                except Refused as exc:
                    outcome = "refused"
                    logged = entry(inputs, guard.table("response", current, [], log_only=True), rows=rows,
                                   last_model=step.last_model, elapsed=elapsed, step=live.stages[-1].name,
                                   error=f"{exc.status}: {exc.message}")
                    raise
            logged = entry(inputs, current, rows=inputs.num_rows, last_model=step.last_model, elapsed=elapsed,
                           step=live.stages[-1].name, error=None)
            for name, column in shadows.items():
                logged = logged.append_column(name, column)
            outcome = "ok"
        finally:
            if guard is not None and logged is not None:
                logged = annotate(logged, findings)
                self.guardrails.count(pipeline_name, findings)  # type: ignore[union-attr]
            if logged is not None:
                self.append_log(pipeline_name, logged)
            self.metrics.inferences.labels(pipeline_name, outcome).inc()
            if self.usage is not None:
                self.usage(pipeline_name, rows, tokens)
        t_log = time.perf_counter()
        response = logged.drop_columns([*RESPONSE_DROP, *shadows])  # challengers' answers are only logged
        payload, media_type = (dataset or Dataset()).encode(response, response_kind(accept, req_kind))
        t_end = time.perf_counter()
        self.metrics.inference_rows.labels(pipeline_name).inc(inputs.num_rows)
        self.metrics.inference_latency.labels(pipeline_name).observe(t_end - started)
        timing = ", ".join(
            [f"parse;dur={(t_parsed - started) * 1e3:.2f}"]
            + [f'step;desc="{s.name}";dur={ns / 1e6:.2f}' for s, ns in zip(live.stages, elapsed, strict=True)]
            + [f"log;dur={(t_log - t_steps) * 1e3:.2f}", f"encode;dur={(t_end - t_log) * 1e3:.2f}",
               f"total;dur={(t_end - started) * 1e3:.2f}"]
        )
        return Answer(payload, media_type, timing)

    async def _stages(self, pipeline_name: str, live: Live, inputs: pa.Table, keys: dict[str, list], tokens: Tokens,
                      elapsed: list[int]) -> tuple[pa.Table, Step, dict[str, pa.ChunkedArray | pa.Array]]:
        """`inputs` through every stage of `live`: the answer, its last step, the shadows' columns to log.
        Each stage's time is appended to `elapsed` (the failed one's too: _StageFailed)."""
        current, step, split, shadows = inputs, live.steps[0], None, {}
        for index, stage in enumerate(live.stages):
            t0 = time.perf_counter_ns()
            step = stage.steps[0]
            try:
                answer = await stage.run(current, keys, self.model_call(pipeline_name, live, index))
                tokens.add_step(current, answer.table)
            except Exception as exc:  # noqa: BLE001 - every failure is answered and logged
                elapsed.append(time.perf_counter_ns() - t0)
                raise _StageFailed(stage, exc if isinstance(exc, WallarooError) else step_error(step, exc)) from None
            current = answer.table
            if answer.served is not None:
                split = model_split_column(stage.steps, answer.served)
            shadows.update(answer.logged)
            elapsed.append(time.perf_counter_ns() - t0)
            self.metrics.step_latency.labels(pipeline_name, stage.name).observe(elapsed[-1] / 1e9)
        if split is not None:
            current = current.append_column(MODEL_SPLIT, split)
        return current, step, shadows

    async def step(self, pipeline_name: str, live: Live, index: int, table: pa.Table) -> pa.Table:
        """Step `index` of `live`'s models on `table` (conformed to its input schema after the first)."""
        return await self.run_model(pipeline_name, live.steps[index], table,
                                    live.steps[index - 1].name if index > 0 else None)

    def model_call(self, pipeline_name: str, live: Live, index: int) -> ModelCall:
        """How stage `index` of `live` runs one of its models: errors counted and named after the model."""
        after = live.stages[index - 1].name if index > 0 else None

        async def call(step: Step, table: pa.Table) -> pa.Table:
            try:
                return await self.run_model(pipeline_name, step, table, after)
            except Exception as exc:  # noqa: BLE001 - named after the step that failed
                self.metrics.step_errors.labels(pipeline_name, step.name, error_kind(exc)).inc()
                raise step_error(step, exc) from None

        return call

    async def run_model(self, pipeline_name: str, step: Step, table: pa.Table, after: str | None) -> pa.Table:
        """One model on `table` (conformed to its input schema when it follows a step, or differs),
        its answer conformed to its output schema (kept as returned when that fails)."""
        if after is not None or not table.schema.equals(step.input_schema):
            try:
                table = conform(table, step.input_schema, f"step '{step.name}' input")
            except WallarooError as exc:
                if after is None:
                    raise
                raise WallarooError(f"step '{step.name}' cannot take the output of step '{after}': {exc.message}",
                                    source="engine", step=step.name) from None
        out = await step.pool.predict(table)
        if out.num_rows != table.num_rows:
            raise WallarooError(f"step '{step.name}' returned {out.num_rows} rows for {table.num_rows} input rows",
                                source="model", step=step.name)
        self.metrics.count_row_errors(pipeline_name, step.name, table, out)
        try:
            return conform(out, step.output_schema, f"step '{step.name}' output")
        except WallarooError:
            return out  # the declared output schema is advisory: keep what the model returned

    @staticmethod
    def route_keys(live: Live, body: bytes, kind: str, inputs: pa.Table) -> dict[str, list]:
        """The request's values of the columns its splits route by (none for plain pipelines)."""
        columns = {stage.route_key for stage in live.stages if stage.route_key}
        return request_keys(body, kind, inputs, columns) if columns else {}

    def append_log(self, pipeline: str, table: pa.Table) -> None:
        try:
            self.logstore.append(pipeline, table, sync=False)
        except Exception:  # noqa: BLE001 - a failed log write must be visible but must not lose the answer
            self.metrics.log_errors.labels(pipeline).inc()
            log.exception("could not write the inference log of pipeline %s", pipeline)


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
