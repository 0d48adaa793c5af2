"""`OpenAIEndpoints`: an OpenAI call through a deployed pipeline. The first step (the LLM; or a
split, shadow or fallback of LLMs, routed as the inference route routes it, D47) gets the call as
`text` + `openai_request`; unstreamed it goes through the merging queue like any inference,
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
from functools import partial
from typing import Any

import pyarrow as pa
from prometheus_client import Histogram

from wallaroo_pulumi.runtime.core.errors import NotFound, WallarooError
from wallaroo_pulumi.runtime.core.metrics import LATENCY_BUCKETS, Metrics
from wallaroo_pulumi.runtime.engine.stages import StageAnswer
from wallaroo_pulumi.runtime.engine.stages.shadow import challenger_columns
from wallaroo_pulumi.runtime.engine.step import Step
from wallaroo_pulumi.runtime.services.guardrails.screen import Refused, annotate
from wallaroo_pulumi.runtime.services.inference import Inference
from wallaroo_pulumi.runtime.services.openai_api import first_stage, guarded
from wallaroo_pulumi.runtime.services.openai_api.call import Call
from wallaroo_pulumi.runtime.services.openai_api.pieces import Pieces
from wallaroo_pulumi.runtime.services.openai_api.requests import Kind, OpenAIConfig, parse
from wallaroo_pulumi.runtime.services.registry import Registry
from wallaroo_pulumi.runtime.services.routing import Route, error_kind, step_error
from wallaroo_pulumi.runtime.wire.formats import conform, result_table
from wallaroo_pulumi.runtime.wire.openai_shapes import DONE, Answer, error_object, sse, usage

log = logging.getLogger("wallaroo_pulumi.runtime.openai")
ANSWER_COLUMNS = frozenset({"generated_text", "prompt_tokens", "completion_tokens", "error", "finish_reason"})


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
        """The call, checked: the pipeline serves, each model of its first stage has `openai_config`
        enabled (the first one's defaults apply), the body is valid."""
        state, live = self.inference.serving(pipeline_name, deployment_id)
        models = live.stages[0].steps
        configs = [self.registry.openai_config(self.registry.version(step.model_version_id)) for step in models]
        for step, config in zip(models, configs, strict=True):
            if not config or not config.get("enabled"):
                raise NotFound(
                    f"pipeline {pipeline_name!r} has no OpenAI endpoint: its first step's model {step.model_name!r} "
                    f"(version {step.model_version}) has no openai_config with enabled=true"
                    + (" (every model of a first split, shadow or fallback step needs one)" if len(models) > 1 else "")
                    + "; set it with the model's openai_config (WallarooModel openai_config, or the SDK's "
                    "model_version.configure(openai_config=OpenaiConfig(enabled=True)))",
                    source="inference", param="model",
                )
        request = parse(kind, raw, OpenAIConfig.model_validate(configs[0]))
        guards = self.inference.guardrails
        call = Call(kind, pipeline_name, state, live, request, Answer(kind, request.model or models[0].model_name),
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
            first = await run.route.through(run.inputs, end=1)  # the LLM stage, as the inference route runs it
            run.served = run.route.served_by[0][0]
            final = await run.rest(first)
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
            raise UpstreamError(f"step '{run.served.name}': {error}", param=None)
        return call.answer.whole(text, finish or "stop", run.usage(), run.extension(first, final))

    async def _score(self, call: Call, step: Step, text: str) -> pa.Table | None:
        """The later stages on the answer so far of the streamed `step` (a threshold check)."""
        if len(call.live.stages) < 2:
            return None
        route = Route(call.pipeline, call.live, partial(self.inference.model_call, call.pipeline, call.live), self.metrics)
        return await route.through(guarded.answer_table(step.output_schema, text), start=1)

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
        pieces = Pieces(call, put, lambda: self.first_token.labels(call.pipeline).observe(time.perf_counter() - run.started))
        try:
            first = await self._stream_first(run, pieces)
            final = await self._rest_streamed(run, pieces, first)
            if pieces.stopped is not None:
                run.end(None, Refused(pieces.stopped))
                put(call.answer.finish("content_filter", first=not pieces.sent, include_usage=pieces.include,
                                       extension={"pipeline": call.pipeline, "pipeline_version": call.live.pipeline_version,
                                                  "scores": {}, "guardrail": guarded.event(pieces.stopped)}))
                _close(put, call.answer.usage_chunk(run.usage()) if pieces.include else None)
                return
            pieces.flush()
        except WallarooError as exc:
            run.end(None, exc)
            _close(put, sse(error_object(exc.message, exc.status, exc.extra.get("param"))))
            return
        except BaseException as exc:  # noqa: BLE001 - the caller must hear of it, the log must have it
            err = WallarooError(f"internal error: {type(exc).__name__}: {exc}")
            run.end(None, err)
            _close(put, sse(error_object(err.message, err.status)))
            if not isinstance(exc, Exception):
                raise
            log.exception("streamed OpenAI call on %s failed", call.pipeline)
            return
        run.end(final, None)
        _text, reason, error = run.row(first)
        if error:
            _close(put, sse(error_object(f"step '{run.served.name}': {error}", UpstreamError.status)))
            return
        put(call.answer.finish(reason or pieces.finish or "stop", first=not pieces.sent, include_usage=pieces.include,
                               extension=run.extension(first, final)))
        _close(put, call.answer.usage_chunk(run.usage()) if pieces.include else None)

    async def _stream_first(self, run: _Run, pieces: Pieces) -> pa.Table | None:
        """The first stage streamed (D47): a split's pick; a fallback's models in turn while no piece
        has reached the caller; a shadow's challengers called beside the champion, only logged.
        None when guardrails cut the stream."""
        stage, t0 = run.call.live.stages[0], time.perf_counter_ns()
        plan = first_stage.plan(stage, run.route.keys)
        call = run.route.call_for(0)
        shadows = asyncio.gather(*(call(step, run.inputs) for step in plan.challengers), return_exceptions=True)
        try:
            for n, k in enumerate(plan.order):
                run.served, answer, failure = stage.steps[k], None, None
                try:
                    answer = await self._stream_model(run, pieces, stage.steps[k])
                except WallarooError as exc:
                    failure = exc
                last = n == len(plan.order) - 1
                if last or pieces.sent or pieces.stopped is not None or not plan.falls_through(answer, failure):
                    break
                pieces.restart()
        except BaseException:
            shadows.cancel()
            raise
        logged = challenger_columns(plan.challengers, await shadows, 1)
        if failure is not None:
            raise failure
        if answer is not None:
            run.route.record(0, run.inputs, StageAnswer(answer, served=[k] if plan.served else None, logged=logged), t0)
        return answer

    async def _stream_model(self, run: _Run, pieces: Pieces, step: Step) -> pa.Table | None:
        """One model's stream to the caller (through `pieces`); its whole answer, None when cut."""
        pieces.score = partial(self._score, run.call, step)
        first = None
        async with contextlib.aclosing(step.pool.predict_stream(run.inputs)) as parts:
            while pieces.stopped is None:
                try:
                    part = await anext(parts, None)
                except Exception as exc:  # noqa: BLE001 - every failure is answered and logged
                    raise run.failed(step, exc) from None
                if part is None:
                    break
                if part.final:
                    first = part.table
                else:
                    await pieces.take(part.table)
        if pieces.stopped is not None:
            return None
        if first is None:
            raise WallarooError(f"step '{step.name}' ended its stream without an answer", source="engine")
        return run.checked(step, first)

    async def _rest_streamed(self, run: _Run, pieces: Pieces, first: pa.Table | None) -> pa.Table | None:
        """The later stages on the whole streamed answer, then the response guardrails on it."""
        if first is None:
            return None
        final = await run.rest(first)
        if pieces.guard is None:
            return final
        before = final
        try:
            final = pieces.guard.table("response", final, run.call.findings)
        except Refused as exc:
            pieces.stopped = exc.finding
            return None
        if _answer_text(final) != _answer_text(before):
            if pieces.sent:  # the earlier pieces are out: what follows cannot be masked into them
                pieces.stopped = next(f for f in reversed(run.call.findings) if f.action in ("masked", "replaced"))
            else:
                pieces.held = [_answer_text(final)]
        return final


class _Run:
    """One call through the pipeline (its `Route`: the stages' timings, tokens, who served it) and,
    at its end, the one log entry, metrics and usage record."""

    def __init__(self, endpoints: OpenAIEndpoints, call: Call) -> None:
        self.e = endpoints
        self.call = call
        self.started = time.perf_counter()
        self.inputs = call.inputs()
        self.route = Route(call.pipeline, call.live, call.model_call(endpoints.inference), endpoints.metrics)
        self.route.keys = call.route_keys()
        self.served = call.live.stages[0].steps[0]  # the first stage's model that answers (or is trying to)
        self.entry = partial(result_table, time_ms=int(time.time() * 1000), pipeline_version=call.live.pipeline_version,
                             partition=f"engine-{call.state.id}",
                             validations=endpoints.inference.pipelines.validations(call.live.pipeline_version_id,
                                                                                   call.live.pipeline_version))

    def failed(self, step: Step, exc: Exception) -> WallarooError:
        """A streamed model's failure: counted, named after the step."""
        self.e.metrics.step_errors.labels(self.call.pipeline, step.name, error_kind(exc)).inc()
        return step_error(step, exc)

    def checked(self, step: Step, out: pa.Table) -> pa.Table:
        """A streamed model's whole answer: checked, counted."""
        if out.num_rows != self.inputs.num_rows:
            raise WallarooError(f"step '{step.name}' returned {out.num_rows} rows for {self.inputs.num_rows} input rows",
                                source="model", step=step.name)
        self.e.metrics.count_row_errors(self.call.pipeline, step.name, self.inputs, out)
        return out

    async def rest(self, first: pa.Table) -> pa.Table:
        """The later stages on the LLM's whole answer (conformed to its output schema, as the
        inference route does; kept as returned when that fails), `out._model_split` added."""
        try:
            current = conform(first, self.served.output_schema, f"step '{self.served.name}' output")
        except WallarooError:
            current = first
        return self.route.answer(await self.route.through(current, start=1))

    def row(self, first: pa.Table) -> tuple[str, str, str]:
        """(text, finish reason, error) of the LLM step's answer."""
        values = first.slice(0, 1).to_pylist()[0]
        return (str(values.get("generated_text") or ""), str(values.get("finish_reason") or ""),
                str(values.get("error") or ""))

    def usage(self) -> dict[str, int]:
        return usage(self.route.tokens.prompt, self.route.tokens.completion)

    def extension(self, first: pa.Table, final: pa.Table) -> dict[str, Any]:
        """Our `wallaroo` object: the pipeline and the scores its later steps added to the answer."""
        scores = {}
        if len(self.call.live.stages) > 1:
            row = final.slice(0, 1).to_pylist()[0]
            scores = {k: v for k, v in row.items() if k not in ANSWER_COLUMNS and k not in first.column_names
                      and isinstance(v, int | float) and not isinstance(v, bool)}
        return {"pipeline": self.call.pipeline, "pipeline_version": self.call.live.pipeline_version, "scores": scores}

    def end(self, final: pa.Table | None, error: WallarooError | None) -> None:
        """The call's one log entry (with who served it and the shadows' answers), metrics and usage record."""
        call, live, route = self.call, self.call.live, self.route
        stage = route.stage if error is not None else live.stages[-1]
        rows = self.inputs.num_rows
        if error is None:
            entry = route.logged(self.entry(self.inputs, final, rows=rows, last_model=stage.steps[0].last_model,
                                            elapsed=route.elapsed, step=stage.name, error=None))
        else:
            failed = self.served if route.at == 0 else stage.steps[0]
            entry = self.entry(self.inputs, None, rows=rows, last_model=failed.last_model, elapsed=route.elapsed,
                               step=stage.name, error=f"{error.status}: {error.message}",
                               output_schema=live.stages[-1].steps[0].output_schema)
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
            self.e.inference.usage(call.pipeline, rows, route.tokens)


def _answer_text(table: pa.Table) -> str:
    return (table.column("generated_text")[0].as_py() or "") if "generated_text" in table.column_names else ""


def _close(put: Callable[[bytes | None], None], last: bytes | None) -> None:
    """The stream's last event (if any), [DONE], and its end."""
    if last is not None:
        put(last)
    put(DONE)
    put(None)
