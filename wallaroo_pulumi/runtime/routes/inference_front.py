"""The inference routes served straight from ASGI (D46): a POST to one of them is checked by the
same access rules and counted in the same metrics as every request, then answered here, without
FastAPI's and Starlette's middleware chain, router scan and Response objects (a third of the
runtime's Python per echo request). Every other request, and anything not exactly an inference
URL, goes on to the app."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.routes.inference import read_body
from wallaroo_pulumi.runtime.services.access.keys import ApiKey
from wallaroo_pulumi.runtime.services.access.middleware import AccessMiddleware
from wallaroo_pulumi.runtime.services.access.usage import current_key
from wallaroo_pulumi.runtime.services.runtime import Runtime
from wallaroo_pulumi.runtime.wire.dataset import Dataset
from wallaroo_pulumi.runtime.wire.http_errors import error_response

log = logging.getLogger("wallaroo_pulumi.runtime")

Target = Callable[[Runtime, dict[str, str]], tuple[str, int | None]]
"""(pipeline, deployment id) from the URL's parameters"""

ROUTES: tuple[tuple[str, Target], ...] = (  # the templates of routes/inference.py, its metrics labels
    ("/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}",
     lambda rt, p: rt.inference.resolve(p["deploy_name"], p["pipeline_name"])),
    ("/v1/api/pipelines/infer/{deploy_name}", lambda rt, p: rt.inference.resolve(p["deploy_name"])),
    ("/infer/{pipeline_name}", lambda rt, p: (p["pipeline_name"], None)),
)


class InferenceFront:
    """ASGI app wrapping the FastAPI app: inference POSTs answered here, the rest (lifespan too) passed on."""

    def __init__(self, app: ASGIApp, *, rt: Runtime, access: AccessMiddleware, metrics: Metrics) -> None:
        self.app = app
        self.rt = rt
        self.access = access
        self.metrics = metrics
        self.routes = [(compile_path(template)[0], template, target) for template, target in ROUTES]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        template, target, params = found
        start = time.perf_counter()
        route: str | None = None
        code = 500
        try:
            try:
                key, receive = await self.access.check(scope, receive)
                route = template
                code = await self._infer(scope, receive, send, key, target, params)
            except WallarooError as exc:
                code = exc.status
                await error_response(exc, scope["path"])(scope, receive, send)
            except Exception as exc:  # noqa: BLE001 - answered as the app's handler answers it
                log.exception("unhandled error")
                await error_response(WallarooError(f"internal error: {type(exc).__name__}: {exc}"))(scope, receive, send)
        finally:
            self.metrics.http_done(scope, route, code, time.perf_counter() - start)

    def _match(self, scope: Scope) -> tuple[str, Target, dict[str, str]] | None:
        if scope.get("root_path"):
            return None  # mounted under a prefix: the router resolves it
        path = scope["path"]
        for regex, template, target in self.routes:
            match = regex.match(path)
            if match is not None:
                return template, target, match.groupdict()
        return None

    async def _infer(self, scope: Scope, receive: Receive, send: Send, key: ApiKey, target: Target,
                     params: dict[str, str]) -> int:
        """What routes/inference.py answers, sent as two ASGI messages; the status sent."""
        token = current_key.set(key)
        try:
            request = Request(scope, receive)
            rt = self.rt
            pipeline, deployment = target(rt, params)
            query = {k: request.query_params.getlist(k) for k in request.query_params} if scope["query_string"] else {}
            headers = request.headers
            answer = await rt.inference.run(
                pipeline, deployment, _body(request, rt.settings.max_request_bytes), headers.get("content-type"),
                headers.get("accept"), Dataset.from_query(query),
            )
        finally:
            current_key.reset(token)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(answer.payload)).encode()),
            (b"content-type", answer.media_type.encode("latin-1")),
            (b"server-timing", answer.server_timing.encode("latin-1")),
        ]})
        await send({"type": "http.response.body", "body": answer.payload})
        return 200


def _body(request: Request, limit: int) -> Callable[[], Awaitable[bytes]]:
    return lambda: read_body(request, limit)
