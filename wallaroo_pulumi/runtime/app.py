"""`create_app(settings)`: the runtime's FastAPI (Starlette) application."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wallaroo_pulumi.runtime.auth import AuthMiddleware
from wallaroo_pulumi.runtime.errors import APIError
from wallaroo_pulumi.runtime.metrics import MetricsMiddleware
from wallaroo_pulumi.runtime.settings import RuntimeSettings
from wallaroo_pulumi.runtime.state import Runtime

log = logging.getLogger("wallaroo_pulumi.runtime")
VERSION = "0.1.0"


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "json_invalid":
            msg = f"malformed JSON body ({err.get('ctx', {}).get('error', msg)})"
            loc = []
        elif err.get("type") == "missing" and not loc:
            msg = "a JSON body is required"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def create_app(settings: RuntimeSettings) -> FastAPI:
    rt = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await rt.startup()
        try:
            yield
        finally:
            await rt.shutdown()

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
    app.state.db = rt.db
    app.state.logstore = rt.logstore

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.code, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(APIError(400, _validation_message(exc), "request").body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404:
            detail = f"no endpoint {request.method} {request.url.path} (see /v1/api/docs)"
        elif exc.status_code == 405:
            detail = f"method {request.method} not allowed on {request.url.path} (the MLOps API uses POST + JSON)"
        return JSONResponse(APIError(exc.status_code, str(detail), "request").body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}: {exc}", "runtime").body(), status_code=500)

    @app.get("/health", tags=["ops"], summary="Liveness (no auth)")
    async def health() -> dict:
        states = rt.engine.deployments.values()
        return {
            "status": "ok",
            "version": VERSION,
            "deployments": {s.deploy_name: s.state for s in states},
        }

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    from wallaroo_pulumi.runtime.routes import inference, logs, models, pipelines, workspaces

    app.include_router(workspaces.router)
    app.include_router(models.router)
    app.include_router(pipelines.router)
    app.include_router(inference.router)
    app.include_router(logs.router)
    if settings.listeners:
        try:
            from wallaroo_pulumi.runtime.listeners import ListenerService
        except Exception:  # noqa: BLE001 - the core API must still come up; the error is logged loudly
            log.exception("listener service unavailable: /v1/api/task/* routes are disabled")
        else:
            service = ListenerService(db=rt.db, logstore=rt.logstore, role=settings.role,
                                      lease_seconds=settings.listener_lease_s, metrics=rt.metrics)
            app.state.listeners = service
            app.include_router(service.router)

    app.add_middleware(AuthMiddleware, tokens=rt.tokens)
    app.add_middleware(MetricsMiddleware, metrics=rt.metrics)
    return app
