"""Prometheus metrics (own registry per app): HTTP requests and latency, inference latency
per pipeline and step, sidekick / upstream errors, listener runs and the rows they scored."""

from __future__ import annotations

import re
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# How the LLM adapters word a failed row (`wallaroo_pulumi.adapters.http`): "<upstream>: <problem> ...".
_ROW_ERROR = re.compile(
    r"^(?P<upstream>[A-Za-z][\w.-]{0,40}): (?:HTTP (?P<status>\d{3})|(?P<kind>request timed out|connection error"
    r"|malformed response|credentials|input text is null))"
)
_KINDS = {"request timed out": "timeout", "connection error": "connection", "malformed response": "malformed",
          "credentials": "credentials", "input text is null": "bad_input"}

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RUN_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.http_requests = Counter(
            "wallaroo_http_requests_total", "HTTP requests by route and status code",
            ["method", "route", "code"], registry=r,
        )
        self.http_latency = Histogram(
            "wallaroo_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inferences = Counter(
            "wallaroo_inference_requests_total", "Inference requests by pipeline and outcome",
            ["pipeline", "outcome"], registry=r,
        )
        self.inference_rows = Counter("wallaroo_inference_rows_total", "Rows inferred", ["pipeline"], registry=r)
        self.inference_latency = Histogram(
            "wallaroo_inference_duration_seconds", "End-to-end inference latency per pipeline",
            ["pipeline"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.step_latency = Histogram(
            "wallaroo_step_duration_seconds", "Latency of each pipeline step (sidekick round trip)",
            ["pipeline", "step"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.step_errors = Counter(
            "wallaroo_step_errors_total",
            "Step failures: kind=crashed|load|predict (model/upstream error)|timeout|other",
            ["pipeline", "step", "kind"], registry=r,
        )
        self.upstream_errors = Counter(
            "wallaroo_upstream_row_errors_total",
            "Rows a step answered with a non-empty `error` (an LLM upstream's failure), by upstream and kind "
            "(http_<status>, timeout, connection, malformed, credentials, bad_input, other)",
            ["pipeline", "step", "upstream", "kind"], registry=r,
        )
        self.deploys = Counter("wallaroo_deploys_total", "Deploy requests", ["pipeline"], registry=r)
        self.log_errors = Counter("wallaroo_log_write_errors_total", "Failed inference log writes", ["pipeline"], registry=r)
        self.log_rows_pruned = Counter("wallaroo_log_rows_pruned_total", "Logged rows removed by log retention",
                                       ["pipeline"], registry=r)
        self.listener_runs = Counter(
            "wallaroo_listener_runs_total",
            "Finished listener runs by outcome (succeeded, failed, timed_out, killed): alert on failed and timed_out",
            ["monitored_pipeline", "listener", "status"], registry=r,
        )
        self.listener_rows = Counter(
            "wallaroo_listener_rows_scored_total", "Logged inferences scored by listeners",
            ["monitored_pipeline", "listener"], registry=r,
        )
        self.listener_duration = Histogram(
            "wallaroo_listener_run_duration_seconds", "Listener run time, start to finish",
            ["monitored_pipeline", "listener"], buckets=RUN_BUCKETS, registry=r,
        )

    def listener_run(self, monitored: str, listener: str, status: str, rows_scored: int, seconds: float | None) -> None:
        self.listener_runs.labels(monitored, listener, status).inc()
        if rows_scored:
            self.listener_rows.labels(monitored, listener).inc(rows_scored)
        if seconds is not None:
            self.listener_duration.labels(monitored, listener).observe(seconds)

    def count_row_errors(self, pipeline: str, step: str, inputs: pa.Table, out: pa.Table) -> None:
        """Count the per-row upstream failures a step reports in its `error` column.

        Only the step that makes the column counts, not a later one carrying it through (the validator).
        """
        if "error" in inputs.schema.names or "error" not in out.schema.names:
            return
        if not pa.types.is_string(out.schema.field("error").type):
            return
        errors = out.column("error")
        failed = pc.filter(errors, pc.fill_null(pc.not_equal(errors, ""), False))
        for message in failed.to_pylist():
            match = _ROW_ERROR.match(message)
            if match is None:
                upstream, kind = "unknown", "other"
            else:
                upstream = match["upstream"]
                kind = f"http_{match['status']}" if match["status"] else _KINDS[match["kind"]]
            self.upstream_errors.labels(pipeline, step, upstream, kind).inc()

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: prometheus_client's `labels` builds and checks the
        label tuple under a lock on every call (~8 per inference). Children are never removed here."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def http_done(self, scope: Scope, route: str | None, code: int, seconds: float) -> None:
        """Count one HTTP request under its route's template (`route`), or 'unmatched' where no route
        ran (a 401, 404, or a 403/429 refused before routing): never the raw path, whose every
        distinct value would add a series kept for the life of the process."""
        path = route or "unmatched"
        method = scope.get("method", "GET")
        self.child(self.http_requests, method, path, str(code)).inc()
        self.child(self.http_latency, method, path).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                code[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None)
            self.metrics.http_done(scope, route, code[0], time.perf_counter() - start)
