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
from wallaroo_pulumi.runtime.engine.stages import ModelCall
from wallaroo_pulumi.runtime.engine.state import DeploymentState, Live
from wallaroo_pulumi.runtime.engine.step import Step
from wallaroo_pulumi.runtime.services.access.usage import Tokens
from wallaroo_pulumi.runtime.services.guardrails.screen import Finding, Refused, annotate
from wallaroo_pulumi.runtime.services.guardrails.service import GuardrailPolicies
from wallaroo_pulumi.runtime.services.pipelines import Pipelines
from wallaroo_pulumi.runtime.services.routing import Route, error_kind, step_error
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
        outcome, logged, rows = "error", None, 0
        route = Route(pipeline_name, live, partial(self.model_call, pipeline_name, live), self.metrics)
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
            route.keys = self.route_keys(live, body, req_kind, inputs)
            try:
                current = route.answer(await route.through(inputs))
            except WallarooError as err:
                stage = route.stage
                logged = entry(inputs, None, rows=inputs.num_rows, last_model=stage.steps[0].last_model,
                               elapsed=route.elapsed, step=stage.name, error=f"{err.status}: {err.message}",
                               output_schema=live.stages[-1].steps[0].output_schema)
                raise
            step = live.stages[-1].steps[0]
            t_steps = time.perf_counter()
            if guard is not None:
                try:
                    current = guard.table("response", current, findings)
                except Refused as exc:
                    outcome = "refused"
                    logged = entry(inputs, guard.table("response", current, [], log_only=True), rows=rows,
                                   last_model=step.last_model, elapsed=route.elapsed, step=live.stages[-1].name,
                                   error=f"{exc.status}: {exc.message}")
                    raise
            logged = route.logged(entry(inputs, current, rows=inputs.num_rows, last_model=step.last_model,
                                        elapsed=route.elapsed, step=live.stages[-1].name, error=None))
            outcome = "ok"
        finally:
            if guard is not None and logged is not None:
                logged = annotate(logged, findings)
                self.guardrails.count(pipeline_name, findings)  # type: ignore[union-attr]
            if logged is not None:
                self.append_log(pipeline_name, logged)
            self.metrics.child(self.metrics.inferences, pipeline_name, outcome).inc()
            if self.usage is not None:
                self.usage(pipeline_name, rows, route.tokens)
        t_log = time.perf_counter()
        response = logged.drop_columns([*RESPONSE_DROP, *route.shadows])  # challengers' answers are only logged
        payload, media_type = (dataset or Dataset()).encode(response, response_kind(accept, req_kind))
        t_end = time.perf_counter()
        self.metrics.child(self.metrics.inference_rows, pipeline_name).inc(inputs.num_rows)
        self.metrics.child(self.metrics.inference_latency, pipeline_name).observe(t_end - started)
        timing = ", ".join(
            [f"parse;dur={(t_parsed - started) * 1e3:.2f}"]
            + [f'step;desc="{s.name}";dur={ns / 1e6:.2f}' for s, ns in zip(live.stages, route.elapsed, strict=True)]
            + [f"log;dur={(t_log - t_steps) * 1e3:.2f}", f"encode;dur={(t_end - t_log) * 1e3:.2f}",
               f"total;dur={(t_end - started) * 1e3:.2f}"]
        )
        return Answer(payload, media_type, timing)

    def model_call(self, pipeline_name: str, live: Live, index: int, as_is: bool = False) -> ModelCall:
        """How stage `index` of `live` runs one of its models: errors counted and named after the model
        (`as_is`: the rows go and come back unconformed, as an OpenAI call's `openai_request` beside
        `text`, and the answer's `finish_reason`)."""
        after = live.stages[index - 1].name if index > 0 else None

        async def call(step: Step, table: pa.Table) -> pa.Table:
            try:
                return await self.run_model(pipeline_name, step, table, after, as_is)
            except Exception as exc:  # noqa: BLE001 - named after the step that failed
                self.metrics.step_errors.labels(pipeline_name, step.name, error_kind(exc)).inc()
                raise step_error(step, exc) from None

        return call

    async def run_model(self, pipeline_name: str, step: Step, table: pa.Table, after: str | None,
                        as_is: bool = False) -> pa.Table:
        """One model on `table` (conformed to its input schema when it follows a step, or differs),
        its answer conformed to its output schema (kept as returned when that fails); `as_is`: neither."""
        if not as_is and (after is not None or not table.schema.equals(step.input_schema)):
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
        if as_is:
            return out
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

