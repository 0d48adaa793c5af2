"""Bearer-token auth. Only sha256 hashes of tokens are stored; the admin token
created on first start is written to `<data_dir>/admin.token` (mode 0600).
Tokens are never logged."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from wallaroo_pulumi.runtime.db import Database

ADMIN_TOKEN_FILE = "admin.token"
OPEN_PATHS = frozenset({"/health"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_private(path: Path, text: str) -> None:
    """Atomically write `text` to `path` with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class TokenStore:
    def __init__(self, db: Database, data_dir: Path) -> None:
        self.db = db
        self.data_dir = data_dir
        self._hashes: set[str] = set()
        self.reload()

    def reload(self) -> None:
        self._hashes = {r["sha256"] for r in self.db.all("SELECT sha256 FROM tokens")}

    def ensure_admin(self) -> None:
        """First start: mint the admin token. Later starts: keep it (re-write the file if lost)."""
        path = self.data_dir / ADMIN_TOKEN_FILE
        if self.db.one("SELECT id FROM tokens WHERE name = 'admin'") is not None:
            return
        token = "wlr_" + secrets.token_urlsafe(32)
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO tokens (name, sha256, role, created_at) VALUES ('admin', ?, 'admin', ?)",
                (hash_token(token), time.time()),
            )
        write_private(path, token + "\n")
        self.reload()

    def create(self, name: str) -> str:
        token = "wlr_" + secrets.token_urlsafe(32)
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO tokens (name, sha256, role, created_at) VALUES (?, ?, 'admin', ?)",
                (name, hash_token(token), time.time()),
            )
        self.reload()
        return token

    def valid(self, token: str) -> bool:
        digest = hash_token(token)
        return any(hmac.compare_digest(digest, h) for h in self._hashes)


def _how_to_get(data_dir: Path) -> str:
    return (
        "send 'Authorization: Bearer <token>'; the admin token is in "
        f"{data_dir / ADMIN_TOKEN_FILE} (or run `wallaroo-pulumi runtime token --data-dir {data_dir}`)"
    )


class AuthMiddleware:
    """Pure ASGI middleware: every path except /health needs a valid bearer token."""

    def __init__(self, app: ASGIApp, tokens: TokenStore) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization")
        error = None
        if not header:
            error = "missing Authorization header"
        else:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                error = "Authorization header must be 'Bearer <token>'"
            elif not self.tokens.valid(token.strip()):
                error = "invalid or revoked token"
        if error is not None:
            body = {
                "code": 401,
                "status": "error",
                "error": f"{error}: {_how_to_get(self.tokens.data_dir)}",
                "source": "auth",
            }
            response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
