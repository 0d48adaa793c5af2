"""`AccessMiddleware`: before any route runs, every request but `/health` and `/v1/api/config` is
authenticated (401), held to its route's rule and the key's scope (403) and to the key's limits (429). The key is then
the request's `current_key`, which usage metering reads."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from wallaroo_pulumi.runtime.core.auth import ADMIN_TOKEN_FILE
from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.services.access import bodies, deferred, policy, visible
from wallaroo_pulumi.runtime.services.access.errors import Unauthorized
from wallaroo_pulumi.runtime.services.access.keys import ApiKey, KeyStore
from wallaroo_pulumi.runtime.services.access.limits import Limiter
from wallaroo_pulumi.runtime.services.access.policy import Find, Perm
from wallaroo_pulumi.runtime.services.access.targets import Targets
from wallaroo_pulumi.runtime.services.access.usage import current_key
from wallaroo_pulumi.runtime.wire.http_errors import error_response

OPEN_PATHS = frozenset({"/health", "/v1/api/config",  # the SDK reads /v1/api/config without a token
                        # an edge's own calls: its join token, then its edge key (checked by the publish service)
                        "/v1/api/edge/join", "/v1/api/edge/ship_logs"})
HINT_EVERY_S = 60.0
HOW = "send 'Authorization: Bearer <key>' (an admin creates keys: `wallaroo-pulumi keys create`)"
log = logging.getLogger("wallaroo_pulumi.runtime.access")


def bearer(scope: Scope) -> str:
    header = dict(scope["headers"]).get(b"authorization")
    if not header:
        raise Unauthorized(f"missing Authorization header: {HOW}")
    scheme, _, token = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(f"the Authorization header must be 'Bearer <key>': {HOW}")
    return token.strip()


class AccessMiddleware:
    def __init__(self, app: ASGIApp, *, keys: KeyStore, targets: Targets, limiter: Limiter, data_dir: Path) -> None:
        self.app = app
        self.keys = keys
        self.targets = targets
        self.limiter = limiter
        self.data_dir = data_dir
        self._hinted = -HINT_EVERY_S

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route takes one: refused rather than let past unauthenticated
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            key, receive = await self.check(scope, receive)
        except WallarooError as exc:
            await error_response(exc, scope["path"])(scope, receive, send)
            return
        token = current_key.set(key)
        try:
            await self.app(scope, receive, send)
        finally:
            current_key.reset(token)

    async def check(self, scope: Scope, receive: Receive) -> tuple[ApiKey, Receive]:
        """The request's key, and `receive` (replaying the body if the check read it); 401, 403 or 429
        otherwise. The inference front (`routes.inference_front`) calls it too, so both paths check alike."""
        try:
            key = self.keys.authenticate(bearer(scope))
        except Unauthorized as exc:
            self._hint(scope, exc)
            raise
        return key, await self._authorize(key, scope, receive)

    async def _authorize(self, key: ApiKey, scope: Scope, receive: Receive) -> Receive:
        """403 or 429 unless the key may make this request now; the body, if read, is replayed."""
        found = policy.rule_for(scope["method"], scope["path"])
        rule, params = found if found is not None else (None, {})
        policy.permits(key, rule)
        if rule is not None and key.role != "admin" and rule.find is not Find.NOTHING:
            body: dict[str, Any] | None = {}
            if rule.find is Find.UPLOAD:
                body, receive = await bodies.upload_metadata(scope, receive)
            elif rule.find is not Find.INFER:  # inference names its pipeline in the URL
                body, receive = await bodies.json_body(receive)
            if body is None:
                deferred.defer(scope, key, rule)
            else:
                policy.within(key, rule, visible.narrow(scope, key, rule, self.targets.find(rule, params, body)))
        self.limiter.admit(key, infers=rule is not None and rule.perm is Perm.INFER)
        return receive

    def _hint(self, scope: Scope, exc: Unauthorized) -> None:
        """Where the admin token is goes to the server log (never to an unauthenticated caller),
        at most once a minute."""
        now = time.monotonic()
        if now - self._hinted < HINT_EVERY_S:
            return
        self._hinted = now
        log.warning("401 %s %s (%s). The admin token is in %s (or run `wallaroo-pulumi runtime token --data-dir %s`)",
                    scope.get("method"), scope["path"], exc.message.split(":")[0], self.data_dir / ADMIN_TOKEN_FILE,
                    self.data_dir)
