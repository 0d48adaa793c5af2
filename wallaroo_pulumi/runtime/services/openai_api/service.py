"""`OpenAIEndpoints`: an OpenAI call through a deployed pipeline. The first step (the LLM) gets the
call as `text` + `openai_request`; unstreamed it goes through the merging queue like any inference,
streamed it takes a worker to itself (`SidekickPool.predict_stream`) and every piece goes to the
caller as it comes. The later steps (e.g. the validator) run on the whole answer; the call is one
inference: one log entry, its metrics, its token usage. A streamed call runs to its end even when
the caller leaves, so it is logged whole."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
from prometheus_client import Histogram

from wallaroo_pulumi.adapters.schemas import OPENAI_FIELD
from wallaroo_pulumi.runtime.core.errors import BadRequest, NotFound, WallarooError
from wallaroo_pulumi.runtime.core.metrics import LATENCY_BUCKETS, Metrics
from wallaroo_pulumi.runtime.engine.engine import DeploymentState, Live
from wallaroo_pulumi.runtime.services.access.usage import Tokens
from wallaroo_pulumi.runtime.services.guardrails.screen import Finding, Guard, Refused, annotate
from wallaroo_pulumi.runtime.services.inference import Inference, error_kind, step_error
from wallaroo_pulumi.runtime.services.openai_api import guarded
from wallaroo_pulumi.runtime.services.openai_api.requests import ChatRequest, CompletionRequest, Kind, OpenAIConfig, parse, prompt_of
from wallaroo_pulumi.runtime.services.registry import Registry
from wallaroo_pulumi.runtime.wire.formats import conform, result_table
from wallaroo_pulumi.runtime.wire.openai_shapes import DONE, Answer, error_object, sse, usage

log = logging.getLogger("wallaroo_pulumi.runtime.openai")
ANSWER_COLUMNS = frozenset({"generated_text", "prompt_tokens", "completion_tokens", "error", "finish_reason"})


@dataclass
class Call:
    """One checked OpenAI call on a serving pipeline."""

    kind: Kind
    pipeline: str
    state: DeploymentState
    live: Live
    request: ChatRequest | CompletionRequest
    answer: Answer
    guard: Guard | None = None
    findings: list[Finding] = field(default_factory=list)

    def inputs(self) -> pa.Table:
        return pa.table({"text": pa.array([prompt_of(self.request)], pa.string()),
                         OPENAI_FIELD: pa.array([self.request.call().to_json()], pa.string())})


class UpstreamError(WallarooError):
    """The LLM step answered the row with an error (its upstream failed after its retries)."""

    status = 502
    source = "model"


class OpenAIEndpoints:
    def __init__(self, inference: Inference, registry: Registry, metrics: Metrics) -> None:
        self.inference = inference
        self.registry = registry
        self.metrics = metrics
        self.first_token = Histogram(
            "wallaroo_openai_time_to_first_token_seconds", "Streamed OpenAI calls: from the request to the first token",
            ["pipeline"], buckets=LATENCY_BUCKETS, registry=metrics.registry,
        )
        self._running: set[asyncio.Task[None]] = set()

    def prepare(self, kind: Kind, pipeline_name: str, deployment_id: int | None, raw: bytes) -> Call:
        """The call, checked: the pipeline serves, its first model has `openai_config` enabled, the body is valid."""
        state, live = self.inference.serving(pipeline_name, deployment_id)
        if not live.plain:
            raise BadRequest(f"pipeline {pipeline_name!r} has a split, shadow or fallback step: its OpenAI-compatible "
                             "endpoint serves plain model steps only for now; call its inference URL instead",
                             param="model")
        step = live.steps[0]
        config = self.registry.openai_config(self.registry.version(step.model_version_id))
        if not config or not config.get("enabled"):
            raise NotFound(
                f"pipeline {pipeline_name!r} has no OpenAI endpoint: its first step's model {step.model_name!r} (version "
                f"{step.model_version}) has no openai_config with enabled=true; set it with the model's openai_config "
                "(WallarooModel openai_config, or the SDK's model_version.configure(openai_config=OpenaiConfig(enabled=True)))",
                source="inference", param="model",
            )
        request = parse(kind, raw, OpenAIConfig.model_validate(config))
        guards = self.inference.guardrails
        call = Call(kind, pipeline_name, state, live, request, Answer(kind, request.model or step.model_name),
                    guard=guards.guard(pipeline_name) if guards is not None else None)
        if call.guard is not None:
            original = request.model_copy(deep=True)
            try:
                guarded.screen_request(request, call.guard, call.findings)
            except Refused as exc:
                call.request = original  # logged with every PII find masked, never as sent
                guarded.screen_request(call.request, call.guard, [], log_only=True)
                _Run(self, call).end(None, exc)
                raise
        return call

    # -- unstreamed ----------------------------------------------------------------------
    async def complete(self, call: Call) -> dict[str, Any]:
        with call.live.hold():  # the version this call took serves it to the end, even if replaced meanwhile
            return await self._complete(call)

    async def _complete(self, call: Call) -> dict[str, Any]:
        run = _Run(self, call)
        try:
            t0 = time.perf_counter_ns()
            first = await run.guard(0, call.live.steps[0].pool.predict(run.inputs))
            final = await run.rest(run.first_done(first, t0))
            if call.guard is not None:
                final = call.guard.table("response", final, call.findings)
        except WallarooError as exc:
            run.end(None, exc)
            raise
        run.end(final, None)
        text, finish, error = run.row(first)
        if call.guard is not None and "generated_text" in final.column_names:
            text = final.column("generated_text")[0].as_py() or ""
        if error:
            raise UpstreamError(f"step '{call.live.steps[0].name}': {error}", param=None)
        return call.answer.whole(text, finish or "stop", run.usage(), run.extension(first, final))

    async def _score(self, call: Call, text: str) -> pa.Table | None:
        """The later steps on the answer so far (a streamed call's threshold check)."""
        if len(call.live.steps) < 2:
            return None
        table = guarded.answer_table(call.live.steps[0].output_schema, text)
        for index in range(1, len(call.live.steps)):
            table = await self.inference.step(call.pipeline, call.live, index, table)
        return table

    # -- streamed ------------------------------------------------------------------------
    async def stream(self, call: Call) -> AsyncIterator[bytes]:
        """Server-sent events as the answer comes; the call runs to its end even if the caller leaves."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        held = contextlib.ExitStack()
        held.enter_context(call.live.hold())  # until the call ends, as `complete`
        task = asyncio.create_task(self._produce(call, queue.put_nowait), name=f"openai-stream-{call.pipeline}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(lambda _task: held.close())
        while (item := await queue.get()) is not None:
            yield item

    async def _produce(self, call: Call, put: Callable[[bytes | None], None]) -> None:
        run = _Run(self, call)
        include = call.request.include_usage
        sent, finish = False, None
        guard = call.guard if call.guard is not None and call.guard.checks_response else None
        held: list[str] = []  # pieces not yet checked (guardrails): none reach the caller unchecked
        so_far, stopped, out = "", None, 0

        def send(delta: str) -> None:
            nonlocal sent, out
            if not sent:
                self.first_token.labels(call.pipeline).observe(time.perf_counter() - run.started)
            put(call.answer.delta(delta, first=not sent, include_usage=include))
            sent, out = True, out + 1

        try:
            t0 = time.perf_counter_ns()
            parts = call.live.steps[0].pool.predict_stream(run.inputs)
            first = None
            async with contextlib.aclosing(parts):
                while stopped is None:
                    part = await run.guard(0, anext(parts, None))
                    if part is None:
                        break
                    if part.final:
                        first = part.table
                        continue
                    for delta, reason in zip(part.table.column("delta").to_pylist(),
                                             part.table.column("finish_reason").to_pylist(), strict=True):
                        finish = reason or finish
                        if delta and guard is None:
                            send(delta)
                        elif delta:
                            held.append(delta)
                            so_far += delta
                            if guard.spec.streaming == "check" and len(held) >= guard.spec.check_every:
                                stopped = await guarded.fired(guard, so_far, partial(self._score, call))
                                if stopped is not None:
                                    stopped = guarded.cut(stopped, out)
                                    call.findings.append(stopped)
                                    break
                                for piece in held:
                                    send(piece)
                                held = []
            if stopped is None and first is None:
                raise WallarooError(f"step '{call.live.steps[0].name}' ended its stream without an answer", source="engine")
            final = await run.rest(run.first_done(first, t0)) if stopped is None else None
            if guard is not None and final is not None:
                before = final
                try:
                    final = guard.table("response", final, call.findings)
                except Refused as exc:
                    stopped = exc.finding
                else:
                    changed = _answer_text(final) != _answer_text(before)
                    if changed and sent:  # the earlier pieces are out: what follows cannot be masked into them
                        stopped = next(f for f in reversed(call.findings) if f.action in ("masked", "replaced"))
                    elif changed:
                        held = [_answer_text(final)]
            if stopped is not None:
                run.end(None, Refused(stopped))
                put(call.answer.finish("content_filter", first=not sent, include_usage=include,
                                       extension={"pipeline": call.pipeline, "pipeline_version": call.live.pipeline_version,
                                                  "scores": {}, "guardrail": guarded.event(stopped)}))
                if include:
                    put(call.answer.usage_chunk(run.usage()))
                put(DONE)
                put(None)
                return
            for piece in held:
                send(piece)
        except WallarooError as exc:
            run.end(None, exc)
            put(sse(error_object(exc.message, exc.status, exc.extra.get("param"))))
            put(DONE)
            put(None)
            return
        except BaseException as exc:  # noqa: BLE001 - the caller must hear of it, the log must have it
            err = WallarooError(f"internal error: {type(exc).__name__}: {exc}")
            run.end(None, err)
            put(sse(error_object(err.message, err.status)))
            put(DONE)
            put(None)
            if not isinstance(exc, Exception):
                raise
            log.exception("streamed OpenAI call on %s failed", call.pipeline)
            return
        run.end(final, None)
        _text, reason, error = run.row(first)
        if error:
            put(sse(error_object(f"step '{call.live.steps[0].name}': {error}", UpstreamError.status)))
        else:
            put(call.answer.finish(reason or finish or "stop", first=not sent, include_usage=include,
                                   extension=run.extension(first, final)))
            if include:
                put(call.answer.usage_chunk(run.usage()))
        put(DONE)
        put(None)


class _Run:
    """One call through the pipeline: its steps' timings, tokens, and at its end the one log
    entry, metrics and usage record."""

    def __init__(self, endpoints: OpenAIEndpoints, call: Call) -> None:
        self.e = endpoints
        self.call = call
        self.started = time.perf_counter()
        self.inputs = call.inputs()
        self.elapsed: list[int] = []
        self.tokens = Tokens()
        self.step_index = 0
        self.entry = partial(result_table, time_ms=int(time.time() * 1000), pipeline_version=call.live.pipeline_version,
                             partition=f"engine-{call.state.id}",
                             validations=endpoints.inference.pipelines.validations(call.live.pipeline_version_id,
                                                                                   call.live.pipeline_version))

    async def guard(self, index: int, pending: Any) -> Any:
        """Await a step's answer; a failure becomes the step's error, counted."""
        self.step_index = index
        step = self.call.live.steps[index]
        try:
            return await pending
        except Exception as exc:  # noqa: BLE001 - every failure is answered and logged
            raise self._failed(step, exc) from None

    def _failed(self, step: Any, exc: Exception) -> WallarooError:
        self.e.metrics.step_errors.labels(self.call.pipeline, step.name, error_kind(exc)).inc()
        return step_error(step, exc)

    def first_done(self, out: pa.Table, t0: int) -> pa.Table:
        """The LLM step's whole answer: checked, timed, counted."""
        step = self.call.live.steps[0]
        self.elapsed.append(time.perf_counter_ns() - t0)
        self.e.metrics.step_latency.labels(self.call.pipeline, step.name).observe(self.elapsed[-1] / 1e9)
        if out.num_rows != self.inputs.num_rows:
            raise WallarooError(f"step '{step.name}' returned {out.num_rows} rows for {self.inputs.num_rows} input rows",
                                source="model", step=step.name)
        self.tokens.add_step(self.inputs, out)
        self.e.metrics.count_row_errors(self.call.pipeline, step.name, self.inputs, out)
        return out

    async def rest(self, first: pa.Table) -> pa.Table:
        """The later steps on the LLM step's whole answer."""
        live = self.call.live
        try:
            current = conform(first, live.steps[0].output_schema, f"step '{live.steps[0].name}' output")
        except WallarooError:
            current = first
        for index in range(1, len(live.steps)):
            t0 = time.perf_counter_ns()
            step_input = current
            current = await self.guard(index, self.e.inference.step(self.call.pipeline, live, index, current))
            self.elapsed.append(time.perf_counter_ns() - t0)
            self.e.metrics.step_latency.labels(self.call.pipeline, live.steps[index].name).observe(self.elapsed[-1] / 1e9)
            self.tokens.add_step(step_input, current)
        return current

    def row(self, first: pa.Table) -> tuple[str, str, str]:
        """(text, finish reason, error) of the LLM step's answer."""
        values = first.slice(0, 1).to_pylist()[0]
        return (str(values.get("generated_text") or ""), str(values.get("finish_reason") or ""),
                str(values.get("error") or ""))

    def usage(self) -> dict[str, int]:
        return usage(self.tokens.prompt, self.tokens.completion)

    def extension(self, first: pa.Table, final: pa.Table) -> dict[str, Any]:
        """Our `wallaroo` object: the pipeline and the scores its later steps added to the answer."""
        scores = {}
        if len(self.call.live.steps) > 1:
            row = final.slice(0, 1).to_pylist()[0]
            scores = {k: v for k, v in row.items() if k not in ANSWER_COLUMNS and k not in first.column_names
                      and isinstance(v, int | float) and not isinstance(v, bool)}
        return {"pipeline": self.call.pipeline, "pipeline_version": self.call.live.pipeline_version, "scores": scores}

    def end(self, final: pa.Table | None, error: WallarooError | None) -> None:
        """The call's one log entry, metrics and usage record."""
        call, live = self.call, self.call.live
        step = live.steps[min(self.step_index if error is not None else len(live.steps) - 1, len(live.steps) - 1)]
        rows = self.inputs.num_rows
        if error is None:
            entry = self.entry(self.inputs, final, rows=rows, last_model=step.last_model, elapsed=self.elapsed,
                               step=step.name, error=None)
        else:
            entry = self.entry(self.inputs, None, rows=rows, last_model=step.last_model, elapsed=self.elapsed,
                               step=step.name, error=f"{error.status}: {error.message}", output_schema=live.steps[-1].output_schema)
        if call.guard is not None:
            entry = annotate(entry, call.findings)
            self.e.inference.guardrails.count(call.pipeline, call.findings)  # type: ignore[union-attr]
        self.e.inference.append_log(call.pipeline, entry)
        metrics = self.e.metrics
        outcome = "ok" if error is None else "refused" if isinstance(error, Refused) else "error"
        metrics.inferences.labels(call.pipeline, outcome).inc()
        if error is None:
            metrics.inference_rows.labels(call.pipeline).inc(rows)
            metrics.inference_latency.labels(call.pipeline).observe(time.perf_counter() - self.started)
        if self.e.inference.usage is not None:
            self.e.inference.usage(call.pipeline, rows, self.tokens)


def _answer_text(table: pa.Table) -> str:
    return (table.column("generated_text")[0].as_py() or "") if "generated_text" in table.column_names else ""
