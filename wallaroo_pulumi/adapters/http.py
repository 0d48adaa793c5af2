"""The HTTP core every LLM adapter shares: one request per row, concurrent up to ``MAX_CONCURRENCY``,
with timeouts and retries (docs/endpoints.md). A row that finally fails gets ``generated_text=""``
and an ``error`` naming the upstream; every message passes through a :class:`Redactor`. A row with
an ``openai_request`` (:mod:`.chat`) goes to the upstream as chat where it speaks chat, and
:meth:`HttpLLMAdapter.predict_stream` streams the answers of upstreams that stream.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from wallaroo_pulumi.adapters.chat import ChatCall, StreamDelta, prompt_text, sse_data
from wallaroo_pulumi.adapters.redact import Redactor
from wallaroo_pulumi.adapters.schemas import INPUT_FIELD, OPENAI_FIELD
from wallaroo_pulumi.adapters.transport import Reply, Transport, TransportError, UpstreamTimeout
from wallaroo_pulumi.adapters.upstream import (  # noqa: F401 - the adapters import these from here
    RETRYABLE_STATUSES,
    USAGE_UNKNOWN,
    Attempt,
    CommonSettings,
    CredentialError,
    InputValidationError,
    MalformedResponse,
    Outcome,
    PreparedRequest,
    Retry,
    RowResult,
    connection_error,
    drain,
    parse_retry_after,
    plural,
    returning,
    short_upstream_message,
    usage_int,
)

logger = logging.getLogger("wallaroo_pulumi.adapters")

class HttpLLMAdapter:
    """Base class: subclasses say how to build one row's request and read its answer."""

    #: Short upstream name used as the prefix of every error message.
    name: str = "llm"

    def __init__(self, settings: CommonSettings, redactor: Redactor | None = None) -> None:
        self.settings = settings
        self.redact = redactor or Redactor()
        self._client = Transport(settings.request_timeout_s, min(10.0, settings.request_timeout_s),
                                 settings.max_concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    # ---- subclass hooks -------------------------------------------------------------
    def build_request(self, text: str) -> PreparedRequest:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse_response(self, text: str, body: Any) -> RowResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_chat_request(self, call: ChatCall, stream: bool) -> PreparedRequest | None:
        """The request for a chat call (streamed when ``stream``), or None when the upstream takes
        only text: then the call's prompt goes through :meth:`build_request`, and is not streamed."""
        return None

    def parse_chat_response(self, call: ChatCall, body: Any) -> RowResult:
        """Read the answer to :meth:`build_chat_request`'s request."""
        return self.parse_response(prompt_text(call.messages), body)

    def parse_stream_event(self, data: str) -> Iterator[StreamDelta]:  # pragma: no cover - streaming upstreams
        """The pieces in one server-sent event's data of a streamed answer."""
        raise NotImplementedError

    def auth_headers(self) -> dict[str, str]:
        """Per-request credentials (may refresh a token); raise CredentialError on failure."""
        return {}

    def on_unauthorized(self) -> bool:
        """Called once on HTTP 401; return True to retry with fresh credentials."""
        return False

    # ---- batch ----------------------------------------------------------------------
    def predict(self, input_data: Mapping[str, Any]) -> dict[str, np.ndarray]:
        texts = self._texts(input_data)
        calls = self._calls(input_data, len(texts))
        return self._columns(self.complete_many(texts, calls), calls)

    def predict_stream(self, input_data: Mapping[str, Any]) -> Generator[dict[str, np.ndarray], None, dict[str, np.ndarray]]:
        """Each row's answer as it streams: yields ``{row, delta, finish_reason}`` chunks (one row
        each, rows one after another), returns the whole answer as :meth:`predict` would."""
        texts = self._texts(input_data)
        calls = self._calls(input_data, len(texts))
        results = []
        for row, (text, call) in enumerate(zip(texts, calls, strict=True)):
            pieces = self.stream(text, call)
            while True:
                try:
                    delta = next(pieces)
                except StopIteration as done:
                    results.append(done.value)
                    break
                if delta.text or delta.finish_reason:
                    yield {"row": np.array([row], dtype=np.int64), "delta": np.array([delta.text], dtype=object),
                           "finish_reason": np.array([delta.finish_reason or ""], dtype=object)}
        return self._columns(results, calls)

    @staticmethod
    def _columns(results: list[RowResult], calls: list[ChatCall | None]) -> dict[str, np.ndarray]:
        out = {
            "generated_text": np.array([r.generated_text for r in results], dtype=str),
            "prompt_tokens": np.array([r.prompt_tokens for r in results], dtype=np.int64),
            "completion_tokens": np.array([r.completion_tokens for r in results], dtype=np.int64),
            "error": np.array([r.error for r in results], dtype=str),
        }
        if any(c is not None for c in calls):  # the /openai/v1 endpoints answer with it
            out["finish_reason"] = np.array([r.finish_reason for r in results], dtype=str)
        return out

    def complete_many(self, texts: list[str | None], calls: list[ChatCall | None] | None = None) -> list[RowResult]:
        calls = calls if calls is not None else [None] * len(texts)
        if len(texts) <= 1:
            return [self._safe_complete(t, c) for t, c in zip(texts, calls, strict=True)]
        return list(self._executor().map(self._safe_complete, texts, calls))

    def _calls(self, input_data: Mapping[str, Any], rows: int) -> list[ChatCall | None]:
        if not isinstance(input_data, Mapping) or OPENAI_FIELD not in input_data:
            return [None] * rows
        out: list[ChatCall | None] = []
        for value in np.asarray(input_data[OPENAI_FIELD], dtype=object).reshape(-1).tolist():
            if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
                out.append(None)
                continue
            try:
                out.append(ChatCall.from_json(value.decode() if isinstance(value, bytes) else str(value)))
            except ValueError as exc:
                raise InputValidationError(f"{self.name}: {OPENAI_FIELD}: {exc}") from None
        return out

    def _texts(self, input_data: Mapping[str, Any]) -> list[str | None]:
        if not isinstance(input_data, Mapping) or INPUT_FIELD not in input_data:
            got = sorted(input_data) if isinstance(input_data, Mapping) else type(input_data).__name__
            raise InputValidationError(
                f"{self.name}: input is missing the {INPUT_FIELD!r} column (a string per row); got {got}"
            )
        column = input_data[INPUT_FIELD]
        values = np.asarray(column, dtype=object).reshape(-1).tolist()
        out: list[str | None] = []
        for v in values:
            if v is None or (isinstance(v, float) and np.isnan(v)):
                out.append(None)
            elif isinstance(v, bytes):
                out.append(v.decode("utf-8", errors="replace"))
            else:
                out.append(str(v))
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.max_concurrency, thread_name_prefix=f"{self.name}-llm"
                )
            return self._pool

    def close(self) -> None:
        self._closed = True
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self._client.close()

    def __enter__(self) -> HttpLLMAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one row --------------------------------------------------------------------
    def _safe_complete(self, text: str | None, call: ChatCall | None = None) -> RowResult:
        if text is None and call is None:
            return RowResult("", error=f"{self.name}: input text is null; expected a string prompt")
        try:
            return self.complete(text if text is not None else prompt_text(call.messages), call)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - one bad row must not fail the batch
            msg = self.redact(f"{self.name}: {type(exc).__name__}: {exc}")
            logger.warning("%s", msg)
            return RowResult("", error=msg)

    def complete(self, text: str, call: ChatCall | None = None) -> RowResult:
        """One row's answer (as chat when ``call`` is given and the upstream speaks chat)."""
        chat = self.build_chat_request(call, stream=False) if call is not None else None
        if call is not None and chat is not None:
            return self._send(lambda: self.build_chat_request(call, stream=False),  # type: ignore[arg-type,return-value]
                              lambda response: self._parse(response, lambda body: self.parse_chat_response(call, body)))
        prompt = prompt_text(call.messages) if call is not None else text
        return self._send(lambda: self.build_request(prompt),
                          lambda response: self._parse(response, lambda body: self.parse_response(prompt, body)))

    def stream(self, text: str | None, call: ChatCall | None) -> Generator[StreamDelta, None, RowResult]:
        """One row's answer as it streams from the upstream; returns the whole row. Retries happen
        only before the answer starts; an upstream that does not stream gives its answer as one piece."""
        request = self.build_chat_request(call, stream=True) if call is not None else None
        if request is None:
            result = self._safe_complete(text, call)
            if result.generated_text or result.finish_reason:
                yield StreamDelta(result.generated_text, result.finish_reason or None)
            return result
        streamed: list[StreamDelta] = []

        def once(auth: dict[str, str], attempt: int, reauthed: bool) -> Generator[StreamDelta, None, Outcome]:
            request = self.build_chat_request(call, stream=True)  # type: ignore[arg-type]
            assert request is not None
            try:
                with self._client.stream(request.url, request.json, {**request.headers, **auth},
                                         request.params) as response:
                    if 200 <= response.status_code < 300:
                        return (yield from self._read_stream(response, streamed))
                    response.read()
                    return self._refused(response, attempt, reauthed)
            except UpstreamTimeout as exc:
                if streamed:
                    return self._partial(streamed, f"stream timed out after {self.settings.request_timeout_s:g}s "
                                                   f"({type(exc).__name__})")
                return self._timed_out(exc)
            except TransportError as exc:
                if streamed:
                    return self._partial(streamed, f"connection error mid-stream ({type(exc).__name__}: {exc})")
                return connection_error(exc)

        return (yield from self._with_retries(once))

    def _read_stream(self, response: Reply, streamed: list[StreamDelta]) -> Generator[StreamDelta, None, RowResult]:
        finish, prompt_tokens, completion_tokens, events = "", USAGE_UNKNOWN, USAGE_UNKNOWN, 0
        for data in sse_data(response.iter_lines()):
            events += 1
            if data.strip() == "[DONE]":
                break
            try:
                deltas = list(self.parse_stream_event(data))
            except (MalformedResponse, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                what = str(exc) if isinstance(exc, MalformedResponse) else f"{type(exc).__name__}: {exc}"
                return self._partial(streamed, f"malformed stream event: {what}")
            for delta in deltas:
                finish = delta.finish_reason or finish
                prompt_tokens = delta.prompt_tokens if delta.prompt_tokens >= 0 else prompt_tokens
                completion_tokens = delta.completion_tokens if delta.completion_tokens >= 0 else completion_tokens
                if delta.text or delta.finish_reason:
                    streamed.append(delta)
                    yield delta
        if not events:
            kind = response.headers.get("content-type", "none")
            return self._partial(streamed, f"malformed stream: no server-sent events in the answer (Content-Type {kind})")
        return RowResult("".join(d.text for d in streamed), prompt_tokens, completion_tokens, "", finish)

    def _partial(self, streamed: list[StreamDelta], problem: str) -> RowResult:
        """A stream that broke after it began: the text so far, and the error."""
        message = self.redact(f"{self.name}: {problem}")
        logger.warning("%s", message)
        return RowResult("".join(d.text for d in streamed), USAGE_UNKNOWN, USAGE_UNKNOWN, message)

    def _refused(self, response: Reply, attempt: int, reauthed: bool) -> Outcome:
        """A non-2xx answer: the row's final failure, a :class:`Retry`, or None to retry at once with
        fresh credentials (a first 401)."""
        status = response.status_code
        detail = short_upstream_message(response)
        reason = response.reason_phrase
        problem = f"HTTP {status} {reason}".rstrip()
        if status == 401 and not reauthed and self.on_unauthorized():
            return None
        if status not in RETRYABLE_STATUSES:
            return self._fail(self._message(problem, attempt, detail))
        return Retry(problem, detail, parse_retry_after(response.headers))

    def _timed_out(self, exc: UpstreamTimeout) -> Retry:
        return Retry(f"request timed out after {self.settings.request_timeout_s:g}s ({type(exc).__name__})")

    def _send(self, build: Callable[[], PreparedRequest], parse: Callable[[Reply], RowResult]) -> RowResult:
        """One plain (not streamed) request, through the same retry loop as :meth:`stream`."""

        def post(auth: dict[str, str], attempt: int, reauthed: bool) -> Outcome:
            req = build()
            try:
                response = self._client.post(req.url, req.json, {**req.headers, **auth}, req.params)
            except UpstreamTimeout as exc:
                return self._timed_out(exc)
            except TransportError as exc:
                return connection_error(exc)
            if 200 <= response.status_code < 300:
                return parse(response)
            return self._refused(response, attempt, reauthed)

        return drain(self._with_retries(lambda auth, attempt, reauthed: returning(post(auth, attempt, reauthed))))

    def _with_retries(self, once: Attempt) -> Generator[StreamDelta, None, RowResult]:
        """The one retry loop of plain and streamed requests: credentials before each attempt, one
        re-authentication on a first 401 (not counted as a retry), backoff with jitter or the upstream's
        Retry-After between attempts, up to ``max_retries`` retries. ``once`` makes one attempt (yielding
        what it streams) and returns the row, a :class:`Retry`, or None for the re-authentication."""
        s = self.settings
        attempts_allowed = s.max_retries + 1
        attempt, reauthed = 0, False
        while True:
            attempt += 1
            try:
                auth = self.auth_headers()
            except CredentialError as exc:
                return self._fail(f"{self.name}: credentials: {exc}")
            outcome = yield from once(auth, attempt, reauthed)
            if isinstance(outcome, RowResult):
                return outcome
            if outcome is None:  # fetching fresh credentials is not a retry
                attempt, reauthed = attempt - 1, True
                continue
            message = self._message(outcome.problem, attempt, outcome.detail)
            retry_after = outcome.retry_after
            if attempt >= attempts_allowed:
                return self._fail(message)
            if retry_after is not None and retry_after > s.retry_after_max_s:
                return self._fail(message + f" (upstream asked to retry after {retry_after:g}s, "
                                            f"more than RETRY_AFTER_MAX_S={s.retry_after_max_s:g})")
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            logger.warning("%s", self.redact(f"{message}; retrying in {delay:.2f}s (attempt {attempt + 1} of {attempts_allowed})"))
            if delay > 0:
                time.sleep(delay)

    def _message(self, problem: str, attempt: int, detail: str) -> str:
        msg = f"{self.name}: {problem} after {plural(attempt)}"
        return f"{msg}: {detail}" if detail else msg

    def _parse(self, response: Reply, parse_body: Callable[[Any], RowResult]) -> RowResult:
        status = response.status_code
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            snippet = " ".join(response.text.split())[:120]
            return self._fail(f"{self.name}: malformed response (HTTP {status}): body is not JSON: {snippet!r}")
        try:
            return parse_body(body)
        except (MalformedResponse, KeyError, IndexError, TypeError, AttributeError) as exc:
            what = str(exc) if isinstance(exc, MalformedResponse) else f"{type(exc).__name__}: {exc}"
            return self._fail(f"{self.name}: malformed response (HTTP {status}): {what}")

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        ceiling = min(s.retry_max_backoff_s, s.retry_backoff_s * (2 ** (attempt - 1)))
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)  # exponential, "equal jitter"

    def _fail(self, message: str) -> RowResult:
        message = self.redact(message)
        logger.warning("%s", message)
        return RowResult("", USAGE_UNKNOWN, USAGE_UNKNOWN, message)
