"""Bearer-token auth: token hashes in the database, the admin token in `<data_dir>/admin.token`.

Where the admin token comes from: docs/runtime-api.md ("Auth").
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import string
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from wallaroo_pulumi.runtime.db import Database

ADMIN_TOKEN_FILE = "admin.token"
OPEN_PATHS = frozenset({"/health"})
MIN_ADMIN_TOKEN_CHARS = 16
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation)
log = logging.getLogger("wallaroo_pulumi.runtime")


def check_admin_token(token: str) -> str:
    """A token given from outside (WALLAROO_ADMIN_TOKEN): printable ASCII, no spaces, >= 16 chars.

    The message never quotes the token."""
    token = token.strip()
    if not token:
        raise ValueError("WALLAROO_ADMIN_TOKEN: is set but empty; unset it to mint a token, or set a secret token")
    if any(ch not in _TOKEN_CHARS for ch in token):
        raise ValueError(
            "WALLAROO_ADMIN_TOKEN: expected printable ASCII without spaces (it travels in an "
            "'Authorization: Bearer <token>' header)"
        )
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise ValueError(
            f"WALLAROO_ADMIN_TOKEN: expected at least {MIN_ADMIN_TOKEN_CHARS} characters, got {len(token)} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_private(path: Path, text: str) -> None:
    """Atomically write `text` to `path` with mode 0600."""
    # pid + random: replicas on a shared volume may all be pid 1 in their containers
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
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

    def ensure_admin(self, token: str | None = None) -> None:
        """Without `token`: first start mints the admin token, later starts keep it.

        With `token` (WALLAROO_ADMIN_TOKEN): that token is the admin token; only its hash is
        stored (replacing a different admin hash), and `admin.token` holds that same token."""
        path = self.data_dir / ADMIN_TOKEN_FILE
        row = self.db.one("SELECT id, sha256 FROM tokens WHERE name = 'admin'")
        if token is None:
            if row is not None:
                return
            token = "wlr_" + secrets.token_urlsafe(32)
            with self.db.tx() as c:
                c.execute(
                    "INSERT INTO tokens (name, sha256, role, created_at) VALUES ('admin', ?, 'admin', ?)",
                    (hash_token(token), time.time()),
                )
            write_private(path, token + "\n")
            self.reload()
            return
        token = check_admin_token(token)
        digest = hash_token(token)
        if row is None or row["sha256"] != digest:
            with self.db.tx() as c:
                # re-read inside the write transaction: replicas starting together insert once
                c.execute("DELETE FROM tokens WHERE sha256 = ? AND name != 'admin'", (digest,))
                cur = c.execute("SELECT id FROM tokens WHERE name = 'admin'").fetchone()
                if cur is None:
                    c.execute(
                        "INSERT INTO tokens (name, sha256, role, created_at) VALUES ('admin', ?, 'admin', ?)",
                        (digest, time.time()),
                    )
                else:
                    c.execute("UPDATE tokens SET sha256 = ? WHERE name = 'admin'", (digest,))
            if row is not None:
                log.info("admin token replaced by the one in WALLAROO_ADMIN_TOKEN; the previous one no longer works")
        try:
            current = path.read_text().strip()
        except FileNotFoundError:
            current = None
        if current is None or not hmac.compare_digest(current.encode(), token.encode()):
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
