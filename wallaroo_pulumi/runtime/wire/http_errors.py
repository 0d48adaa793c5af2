"""Every runtime error to its HTTP answer, in one place: `install(app)`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wallaroo_pulumi.runtime.core.errors import BadRequest, WallarooError
from wallaroo_pulumi.runtime.wire.openai_shapes import error_object

OPENAI_PATH = "/openai/v1/"

log = logging.getLogger("wallaroo_pulumi.runtime")


def error_body(exc: WallarooError) -> dict[str, Any]:
    """Wallaroo's error body: `msg` and `code` (what the SDK's generated client reads) beside the
    engine's `status`, `error` and `source` (what its high-level client reads), one message (D33)."""
    return {"msg": exc.message, "code": exc.status, "status": "error", "error": exc.message, "source": exc.source,
            **exc.extra}


def error_response(exc: WallarooError, path: str | None = None) -> JSONResponse:
    """The error's answer; on the OpenAI-compatible routes (`path` under `/openai/v1/`), in OpenAI's shape."""
    if path is not None and OPENAI_PATH in path:
        body = error_object(exc.message, exc.status, exc.extra.get("param"), exc.extra.get("error_code"))
        return JSONResponse(body, status_code=exc.status, headers=exc.headers or None)
    return JSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers or None)


def validation_message(exc: RequestValidationError) -> str:
    """`field.path: message; ...` for a request body FastAPI could not parse into its model."""
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


async def _wallaroo_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WallarooError)
    return error_response(exc, request.url.path)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(BadRequest(validation_message(exc)), request.url.path)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if exc.status_code == 404:
        detail = f"no endpoint {request.method} {request.url.path} (see /v1/api/docs)"
    elif exc.status_code == 405:
        detail = f"method {request.method} not allowed on {request.url.path} (the MLOps API uses POST + JSON)"
    return error_response(WallarooError(detail, status=exc.status_code, source="request"), request.url.path)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(WallarooError(f"internal error: {type(exc).__name__}: {exc}"), request.url.path)


def install(app: FastAPI) -> None:
    """Answer every error of `app` with the runtime's error body."""
    app.add_exception_handler(WallarooError, _wallaroo_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
