"""Inference: `POST /v1/api/pipelines/infer/{pipeline}-{id}/{pipeline}` (also
`/v1/api/pipelines/infer/{pipeline}-{id}` and edge-style `/infer/{pipeline}`).
Every inference, failed ones included, is written to the log store."""

from __future__ import annotations

import logging
import time

import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from wallaroo_pulumi.runtime.engine import DeploymentState, Live, Step
from wallaroo_pulumi.runtime.errors import APIError, not_found
from wallaroo_pulumi.runtime.formats import (
    ACCEPTED,
    RESPONSE_DROP,
    conform,
    encode_table,
    parse_input,
    response_kind,
    result_table,
)
from wallaroo_pulumi.runtime.sidekick.process import (
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPredictError,
)
from wallaroo_pulumi.runtime.state import Runtime, get_rt

log = logging.getLogger("wallaroo_pulumi.runtime.inference")
router = APIRouter(tags=["inference"])

INFER_DOC = {
    "requestBody": {
        "content": {
            "application/json; format=pandas-records": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/vnd.apache.arrow.file": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    }
}


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise APIError(413, f"request body of {int(length)} bytes exceeds the limit of {limit} bytes (max_request_bytes)", "request")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body exceeds the limit of {limit} bytes (max_request_bytes)", "request")
        chunks.append(chunk)
    return b"".join(chunks)


def _deployment(rt: Runtime, pipeline_name: str, deployment_id: int | None) -> tuple[DeploymentState, Live]:
    state = rt.engine.get(pipeline_name)
    if state is None:
        exists = rt.db.one("SELECT id FROM pipelines WHERE name = ?", (pipeline_name,))
        if exists is None:
            raise not_found(f"no pipeline named {pipeline_name!r}", "inference")
        raise not_found(f"pipeline {pipeline_name!r} is not deployed; deploy it with /v1/api/pipelines/deploy", "inference")
    if deployment_id is not None and deployment_id != state.id:
        raise not_found(
            f"deployment {pipeline_name}-{deployment_id} does not exist; the pipeline's deployment is "
            f"{state.deploy_name} (URL /v1/api/pipelines/infer/{state.deploy_name}/{pipeline_name})",
            "inference",
        )
    live = state.live
    if live is None:
        if state.state == "failed":
            raise APIError(503, f"deployment {state.deploy_name} failed to start: {state.reason}", "engine")
        raise APIError(503, f"deployment {state.deploy_name} is still starting; retry shortly", "engine",
                       headers={"Retry-After": "1"})
    return state, live


def _split(deploy_name: str) -> tuple[str, int | None]:
    base, _, tail = deploy_name.rpartition("-")
    if base and tail.isdigit():
        return base, int(tail)
    return deploy_name, None


def _error_for(step: Step, exc: Exception) -> APIError:
    if isinstance(exc, SidekickCrashedError):
        return APIError(502, f"step '{step.name}' (model {step.model_name}): sidekick process crashed: {exc}; it is being restarted",
                        "sidekick", step=step.name)
    if isinstance(exc, SidekickLoadError):
        return APIError(503, f"step '{step.name}' (model {step.model_name}): sidekick not loaded: {exc}", "sidekick", step=step.name)
    if isinstance(exc, SidekickPredictError) and getattr(exc, "error_type", None) == "InferenceDataValidationError":
        return APIError(400, f"step '{step.name}' (model {step.model_name}) rejected the input: {exc}", "model", step=step.name)
    if isinstance(exc, SidekickPredictError):
        return APIError(500, f"step '{step.name}' (model {step.model_name}): _predict failed: {exc}", "model", step=step.name)
    if isinstance(exc, SidekickError):
        return APIError(502, f"step '{step.name}' (model {step.model_name}): {exc}", "sidekick", step=step.name)
    if isinstance(exc, APIError):
        return exc
    return APIError(500, f"step '{step.name}' (model {step.model_name}): {type(exc).__name__}: {exc}", "engine", step=step.name)


def _kind(exc: Exception) -> str:
    if isinstance(exc, SidekickCrashedError):
        return "crashed"
    if isinstance(exc, SidekickLoadError):
        return "load"
    if isinstance(exc, SidekickPredictError):
        return "predict"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "other"


async def _append_log(rt: Runtime, pipeline: str, table: pa.Table) -> None:
    try:
        rt.logstore.append(pipeline, table, sync=False)
    except Exception:  # noqa: BLE001 - a failed log write must be visible but must not lose the answer
        rt.metrics.log_errors.labels(pipeline).inc()
        log.exception("could not write the inference log of pipeline %s", pipeline)


async def run_inference(request: Request, pipeline_name: str, deployment_id: int | None) -> Response:
    rt = get_rt(request)
    started = time.perf_counter()
    state, live = _deployment(rt, pipeline_name, deployment_id)
    body = await read_body(request, rt.settings.max_request_bytes)
    partition = f"engine-{state.id}"
    first = live.steps[0]
    time_ms = int(time.time() * 1000)
    try:
        inputs, req_kind = parse_input(body, request.headers.get("content-type"), first.input_schema)
    except APIError as exc:
        rt.metrics.inferences.labels(pipeline_name, "bad_input").inc()
        row = result_table(
            None, None, rows=1, time_ms=time_ms, pipeline_version=live.pipeline_version, last_model=first.last_model,
            elapsed=[], partition=partition, step=first.name, error=f"{exc.code}: {exc.error}",
        )
        await _append_log(rt, pipeline_name, row)
        raise
    kind = response_kind(request.headers.get("accept"), req_kind)
    t_parsed = time.perf_counter()
    current = inputs
    elapsed: list[int] = []
    step = first
    for index, step in enumerate(live.steps):
        t0 = time.perf_counter_ns()
        try:
            if index > 0:
                try:
                    current = conform(current, step.input_schema, f"step '{step.name}' input")
                except APIError as exc:
                    previous = live.steps[index - 1].name
                    raise APIError(500, f"step '{step.name}' cannot take the output of step '{previous}': {exc.error}",
                                   "engine", step=step.name) from None
            out = await step.pool.predict(current)
            if out.num_rows != current.num_rows:
                raise APIError(500, f"step '{step.name}' returned {out.num_rows} rows for {current.num_rows} input rows",
                               "model", step=step.name)
            rt.metrics.count_row_errors(pipeline_name, step.name, current, out)
            try:
                out = conform(out, step.output_schema, f"step '{step.name}' output")
            except APIError:
                pass  # keep what the model returned; the declared schema is advisory for outputs
            current = out
        except Exception as exc:  # noqa: BLE001 - every failure is answered and logged
            elapsed.append(time.perf_counter_ns() - t0)
            err = _error_for(step, exc)
            rt.metrics.step_errors.labels(pipeline_name, step.name, _kind(exc)).inc()
            rt.metrics.inferences.labels(pipeline_name, "error").inc()
            rows = result_table(
                inputs, None, rows=inputs.num_rows, time_ms=time_ms, pipeline_version=live.pipeline_version,
                last_model=step.last_model, elapsed=elapsed, partition=partition, step=step.name,
                error=f"{err.code}: {err.error}", output_schema=live.steps[-1].output_schema,
            )
            await _append_log(rt, pipeline_name, rows)
            raise err from None
        took = time.perf_counter_ns() - t0
        elapsed.append(took)
        rt.metrics.step_latency.labels(pipeline_name, step.name).observe(took / 1e9)
    t_steps = time.perf_counter()
    table = result_table(
        inputs, current, rows=inputs.num_rows, time_ms=time_ms, pipeline_version=live.pipeline_version,
        last_model=step.last_model, elapsed=elapsed, partition=partition, step=step.name, error=None,
    )
    await _append_log(rt, pipeline_name, table)
    t_log = time.perf_counter()
    payload, media_type = encode_table(table.drop_columns(list(RESPONSE_DROP)), kind)
    t_end = time.perf_counter()
    rt.metrics.inferences.labels(pipeline_name, "ok").inc()
    rt.metrics.inference_rows.labels(pipeline_name).inc(inputs.num_rows)
    rt.metrics.inference_latency.labels(pipeline_name).observe(time.perf_counter() - started)
    timing = ", ".join(
        [f"parse;dur={(t_parsed - started) * 1e3:.2f}"]
        + [f'step;desc="{s.name}";dur={ns / 1e6:.2f}' for s, ns in zip(live.steps, elapsed, strict=True)]
        + [f"log;dur={(t_log - t_steps) * 1e3:.2f}", f"encode;dur={(t_end - t_log) * 1e3:.2f}",
           f"total;dur={(t_end - started) * 1e3:.2f}"]
    )
    return Response(payload, media_type=media_type, headers={"Server-Timing": timing})


@router.post("/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}", openapi_extra=INFER_DOC,
             summary=f"Run an inference; body and answer are {ACCEPTED}")
async def infer(request: Request, deploy_name: str, pipeline_name: str) -> Response:
    base, dep_id = _split(deploy_name)
    if base != pipeline_name:
        raise not_found(
            f"inference URL mismatch: '{deploy_name}' is not a deployment of pipeline {pipeline_name!r}; "
            f"use /v1/api/pipelines/infer/<pipeline>-<deployment id>/<pipeline>",
            "inference",
        )
    return await run_inference(request, pipeline_name, dep_id)


@router.post("/v1/api/pipelines/infer/{deploy_name}", openapi_extra=INFER_DOC, summary="Inference without the trailing pipeline name")
async def infer_short(request: Request, deploy_name: str) -> Response:
    base, dep_id = _split(deploy_name)
    if dep_id is None or get_rt(request).engine.get(base) is None and get_rt(request).engine.get(deploy_name) is not None:
        return await run_inference(request, deploy_name, None)
    return await run_inference(request, base, dep_id)


@router.post("/infer/{pipeline_name}", openapi_extra=INFER_DOC, summary="Edge-style inference by pipeline name")
async def infer_edge(request: Request, pipeline_name: str) -> Response:
    return await run_inference(request, pipeline_name, None)
