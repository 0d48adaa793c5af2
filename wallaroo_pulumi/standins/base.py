"""Common machinery for the stand-in cloud servers: the uvicorn server thread, `Faults`, `Stats` and `echo_answer`."""

from __future__ import annotations

import asyncio
import collections
import email.utils
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

CONTROL_PREFIX = "/_standin"


def count_tokens(text: str) -> int:
    """The stand-ins' tokenizer: whitespace-separated words (at least 1 for non-empty text)."""
    n = len(text.split())
    return n if n or not text else 1


def echo_answer(prompt: str, max_tokens: int | None = None) -> tuple[str, int, str]:
    """``(text, completion_tokens, finish_reason)`` for a prompt: ``"echo: <prompt>"``,
    cut to ``max_tokens`` words (finish_reason ``length``) when longer."""
    text = f"echo: {prompt}"
    words = text.split()
    if max_tokens is not None and max_tokens > 0 and len(words) > max_tokens:
        return " ".join(words[:max_tokens]), max_tokens, "length"
    return text, count_tokens(text), "stop"


@dataclass
class Fault:
    kind: str  # "rate_limit" | "server_error" | "malformed" | "hang"
    status: int = 200
    retry_after: float | None = None
    retry_after_format: str = "seconds"  # seconds | http-date | ms | none
    malformed_kind: str = "truncated"  # truncated | not_json | wrong_shape
    seconds: float = 0.0


class Faults:
    """Thread-safe fault plan, consumed one fault per protocol request (FIFO).

    Settable from Python or over HTTP (``POST /_standin/faults``) for out-of-process users.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[Fault] = collections.deque()
        self.latency_s: float = 0.0
        self.token_interval_s: float = 0.0  # pause between the events of a streamed answer

    def set_token_interval(self, seconds: float) -> None:
        """Pace streamed answers: ``seconds`` between one token's event and the next."""
        self.token_interval_s = float(seconds)

    def set_latency(self, seconds: float) -> None:
        self.latency_s = float(seconds)

    def rate_limit_next(self, n: int = 1, retry_after: float | None = 1, retry_after_format: str = "seconds") -> None:
        self._push(n, Fault("rate_limit", 429, retry_after=retry_after, retry_after_format=retry_after_format))

    def server_error_next(self, n: int = 1, status: int = 503, retry_after: float | None = None) -> None:
        self._push(n, Fault("server_error", status, retry_after=retry_after))

    def malformed_next(self, n: int = 1, kind: str = "truncated") -> None:
        if kind not in ("truncated", "not_json", "wrong_shape"):
            raise ValueError(f"malformed kind {kind!r}: expected truncated, not_json or wrong_shape")
        self._push(n, Fault("malformed", 200, malformed_kind=kind))

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """Delay the next n answers by ``seconds`` (beyond a client's timeout), then answer normally."""
        self._push(n, Fault("hang", seconds=seconds))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
        self.latency_s = 0.0
        self.token_interval_s = 0.0

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def take(self) -> Fault | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _push(self, n: int, fault: Fault) -> None:
        with self._lock:
            for _ in range(int(n)):
                self._queue.append(Fault(**fault.__dict__))

    def configure(self, spec: dict[str, Any]) -> None:
        """Apply a JSON fault spec (the control API's body)."""
        if spec.get("clear"):
            self.clear()
        if "latency_s" in spec:
            self.set_latency(float(spec["latency_s"]))
        if "token_interval_s" in spec:
            self.set_token_interval(float(spec["token_interval_s"]))
        if rl := spec.get("rate_limit"):
            self.rate_limit_next(int(rl.get("count", 1)), rl.get("retry_after", 1), rl.get("format", "seconds"))
        if se := spec.get("server_error"):
            self.server_error_next(int(se.get("count", 1)), int(se.get("status", 503)), se.get("retry_after"))
        if mf := spec.get("malformed"):
            self.malformed_next(int(mf.get("count", 1)), mf.get("kind", "truncated"))
        if hg := spec.get("hang"):
            self.hang_next(int(hg.get("count", 1)), float(hg.get("seconds", 5.0)))


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)
    client_port: int | None = None  # the caller's side of the connection: one per keep-alive connection


class Stats:
    """Request counters by route and status, in-flight and max in-flight requests, recent requests.

    Also over HTTP: ``GET /_standin/stats``, ``POST /_standin/reset``.
    """

    def __init__(self, keep: int = 200) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_route: collections.Counter[str] = collections.Counter()
            self.by_status: collections.Counter[int] = collections.Counter()
            self.in_flight = 0
            self.max_in_flight = 0
            self.recent: collections.deque[RecordedRequest] = collections.deque(maxlen=self._keep)

    def enter(self, route: str) -> None:
        with self._lock:
            self.requests += 1
            self.by_route[route] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self, status: int) -> None:
        with self._lock:
            self.in_flight -= 1
            self.by_status[status] += 1

    def record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.recent.append(rec)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_route": dict(self.by_route),
                "by_status": {str(k): v for k, v in self.by_status.items()},
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }


async def paced(events: Iterable[str], interval_s: float) -> AsyncIterator[str]:
    """A streamed answer's events, ``interval_s`` apart after the first (a model generating)."""
    for i, event in enumerate(events):
        if i and interval_s > 0:
            await asyncio.sleep(interval_s)
        yield event


def retry_after_headers(seconds: float | None, fmt: str) -> dict[str, str]:
    if seconds is None or fmt == "none":
        return {}
    if fmt == "ms":
        return {"retry-after-ms": str(int(seconds * 1000))}
    if fmt == "http-date":
        return {"Retry-After": email.utils.formatdate(time.time() + seconds, usegmt=True)}
    return {"Retry-After": str(int(seconds)) if float(seconds).is_integer() else str(seconds)}


class StandinServer:
    """Base class: subclasses add their routes in :meth:`_routes` and their error shape in
    :meth:`error_body`. Use as a context manager or call :meth:`start`/:meth:`stop`."""

    #: Paths that faults and latency never apply to (e.g. an OAuth token endpoint).
    fault_exempt_paths: tuple[str, ...] = ()

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.faults = Faults()
        self.stats = Stats()
        #: Override the deterministic answer: ``responder(prompt) -> text``.
        self.responder: Callable[[str], str] | None = None
        self.app = FastAPI(title=type(self).__name__, docs_url=None, redoc_url=None, openapi_url=None)
        self._install_middleware()
        self._install_control_routes()
        self._routes(self.app)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # ---- subclass API ----------------------------------------------------------------
    def _routes(self, app: FastAPI) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        return {"error": {"code": status, "message": message}}

    def malformed_body(self, kind: str) -> Response:
        if kind == "not_json":
            return Response("<html><body>502 upstream proxy hiccup</body></html>", 200, media_type="text/html")
        if kind == "wrong_shape":
            return JSONResponse({"unexpected": "shape", "data": None})
        return Response('{"choices": [{"index": 0, "message": {"role": "assist', 200, media_type="application/json")

    def answer(self, prompt: str, max_tokens: int | None) -> tuple[str, int, str]:
        if self.responder is not None:
            text = self.responder(prompt)
            return text, count_tokens(text), "stop"
        return echo_answer(prompt, max_tokens)

    # ---- lifecycle --------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> StandinServer:
        if self._server is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"{type(self).__name__}:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self._sock = sock  # uvicorn serves on this very socket; closed in stop()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        self.faults.clear()
        self.stats.reset()

    # ---- helpers for routes --------------------------------------------------------------
    def record(self, request: Request, body: Any) -> None:
        self.stats.record(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                headers=dict(request.headers),
                body=body,
                client_port=request.client.port if request.client else None,
            )
        )

    async def read_json(self, request: Request) -> tuple[Any, Response | None]:
        raw = await request.body()
        try:
            import json

            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            self.record(request, raw.decode("utf-8", "replace"))
            return None, JSONResponse(self.error_body(400, "We could not parse the JSON body of your request.", "invalid_json"), 400)
        self.record(request, body)
        return body, None

    # ---- plumbing ------------------------------------------------------------------------
    def _install_middleware(self) -> None:
        @self.app.middleware("http")
        async def _faults_and_stats(request: Request, call_next):  # type: ignore[no-untyped-def]
            path = request.url.path
            if path.startswith(CONTROL_PREFIX):
                return await call_next(request)
            route = f"{request.method} {path}"
            self.stats.enter(route)
            status = 500
            try:
                if path not in self.fault_exempt_paths:
                    if self.faults.latency_s > 0:
                        await asyncio.sleep(self.faults.latency_s)
                    fault = self.faults.take()
                    if fault is not None:
                        response = await self._fault_response(fault)
                        if response is not None:
                            status = response.status_code
                            return response
                response = await call_next(request)
                status = response.status_code
                return response
            finally:
                self.stats.leave(status)

    async def _fault_response(self, fault: Fault) -> Response | None:
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "rate_limit":
            return JSONResponse(
                self.error_body(429, self.rate_limit_message(fault.retry_after), "rate_limit_exceeded"),
                429,
                headers=retry_after_headers(fault.retry_after, fault.retry_after_format),
            )
        if fault.kind == "server_error":
            return JSONResponse(
                self.error_body(fault.status, self.server_error_message(fault.status), "server_error"),
                fault.status,
                headers=retry_after_headers(fault.retry_after, "seconds"),
            )
        if fault.kind == "malformed":
            return self.malformed_body(fault.malformed_kind)
        return None

    def rate_limit_message(self, retry_after: float | None) -> str:
        return "Too many requests. Please retry later."

    def server_error_message(self, status: int) -> str:
        return "The server had an error while processing your request."

    def _install_control_routes(self) -> None:
        app = self.app

        @app.get(f"{CONTROL_PREFIX}/stats")
        async def _stats() -> dict[str, Any]:
            snap = self.stats.snapshot()
            snap["pending_faults"] = self.faults.pending()
            snap["latency_s"] = self.faults.latency_s
            snap.update(self.extra_stats())
            return snap

        @app.post(f"{CONTROL_PREFIX}/faults")
        async def _faults(request: Request) -> dict[str, Any]:
            spec = await request.json()
            self.faults.configure(spec or {})
            return {"pending_faults": self.faults.pending(), "latency_s": self.faults.latency_s}

        @app.post(f"{CONTROL_PREFIX}/reset")
        async def _reset() -> dict[str, str]:
            self.reset()
            return {"status": "ok"}

    def extra_stats(self) -> dict[str, Any]:
        return {}
