"""`create_app(settings)`: the runtime's FastAPI (Starlette) application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pyarrow as pa
from fastapi import FastAPI
from fastapi.responses import Response

from wallaroo_pulumi.runtime.core.metrics import MetricsMiddleware
from wallaroo_pulumi.runtime.routes import (
    graph,
    guardrails,
    inference,
    keys,
    listener_runs,
    logs,
    models,
    openai,
    orchestrations,
    pipelines,
    platform,
    publish,
    usage,
    workspaces,
)
from wallaroo_pulumi.runtime.routes import listeners as listener_routes
from wallaroo_pulumi.runtime.routes.inference_front import InferenceFront
from wallaroo_pulumi.runtime.services.access.middleware import AccessMiddleware
from wallaroo_pulumi.runtime.services.runtime import Runtime
from wallaroo_pulumi.runtime.settings import RuntimeSettings
from wallaroo_pulumi.runtime.wire import http_errors

VERSION = "0.1.0"


def create_app(settings: RuntimeSettings) -> FastAPI:
    rt = Runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        try:
            yield
        finally:
            await rt.stop()

    app = FastAPI(
        title="wallaroo-pulumi runtime",
        version=VERSION,
        description="Wallaroo-compatible MLOps API (models, pipelines, deployments, inference, logs). "
        "Every endpoint except /health needs `Authorization: Bearer <token>`.",
        docs_url="/v1/api/docs",
        redoc_url=None,
        openapi_url="/v1/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.rt = rt
    app.state.listeners = rt.listeners
    http_errors.install(app)

    @app.get("/health", tags=["ops"], summary="Liveness (no auth)")
    async def health() -> dict:
        states = rt.engine.deployments.values()
        out = {"status": "ok", "version": VERSION, "deployments": {s.deploy_name: s.state for s in states},
               "sidekick_sandbox": rt.sandbox.report(), "arrow_memory_pool": pa.default_memory_pool().backend_name}
        if rt.edge is not None:
            out["edge"] = rt.edge.report()
        return out

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    for module in (workspaces, models, pipelines, guardrails, publish, inference, openai, logs, keys, usage, graph,
                   platform, orchestrations):
        app.include_router(module.router)
    if rt.listeners is not None:
        app.include_router(listener_routes.router)
        app.include_router(listener_runs.router)
    app.add_middleware(AccessMiddleware, **_access(rt, settings))
    app.add_middleware(MetricsMiddleware, metrics=rt.metrics)
    return app


def create_served_app(settings: RuntimeSettings) -> InferenceFront:
    """The app as the server runs it: inference POSTs answered by the front, ahead of FastAPI and
    every middleware of its own and ours, checked and counted alike (D46); the rest by `create_app`'s."""
    app = create_app(settings)
    rt: Runtime = app.state.rt
    return InferenceFront(app, rt=rt, access=AccessMiddleware(app, **_access(rt, settings)), metrics=rt.metrics)


def _access(rt: Runtime, settings: RuntimeSettings) -> dict:
    return {"keys": rt.key_store, "targets": rt.targets, "limiter": rt.limiter, "data_dir": settings.data_dir}
