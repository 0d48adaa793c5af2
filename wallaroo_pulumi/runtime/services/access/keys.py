"""API keys in the `tokens` table: only each secret's sha256, beside its role, scope, limits,
expiry, revocation and last use. Lookups hit an in-memory copy that a change made here replaces
at once and a background refresh re-reads every few seconds, off the request path, so a key
revoked through another replica stops working here too (D46)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PositiveInt

from wallaroo_pulumi.runtime.core.auth import ADMIN_TOKEN_FILE, check_admin_token, hash_token, new_token, write_private
from wallaroo_pulumi.runtime.services.access.errors import Unauthorized
from wallaroo_pulumi.runtime.store.db import Database, OperationalError

Role = Literal["admin", "deployer", "inference"]
ROLES: tuple[Role, ...] = ("admin", "deployer", "inference")
ADMIN_NAME = "admin"  # the runtime's own admin token (admin.token / WALLAROO_ADMIN_TOKEN)
REFRESH_S = 2.0  # how stale the in-memory copy may be (a revocation elsewhere takes this long here)
STALE_S = 3 * REFRESH_S  # past this, a request re-reads the table itself (the background refresh is not running)
MISS_REFRESH_S = 0.5  # an unknown token re-reads the table at most this often (a key created elsewhere)
_COLUMNS = {  # added to the original (id, name, sha256, role, created_at) table
    "workspace_id": "INTEGER",
    "pipelines": "TEXT",
    "read_logs": "INTEGER NOT NULL DEFAULT 0",
    "limits": "TEXT",
    "expires_at": "REAL",
    "revoked_at": "REAL",
    "last_used_at": "REAL",
}
log = logging.getLogger("wallaroo_pulumi.runtime.access")


class KeyLimits(BaseModel):
    """Per-key limits; None is unlimited. Tokens are the LLM's prompt + completion tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    tokens_per_day: PositiveInt | None = None


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    role: Role
    workspace_id: int | None = None
    pipelines: tuple[str, ...] | None = None  # None: every pipeline of the workspace
    read_logs: bool = False
    limits: KeyLimits = field(default_factory=KeyLimits)
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    @property
    def label(self) -> str:
        return f"key {self.id} ({self.name!r}, role {self.role})"

    @property
    def is_runtime_admin(self) -> bool:
        return self.role == "admin" and self.name == ADMIN_NAME

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def scope_text(self) -> str:
        """What the key may reach, in words (for 403 messages and listings)."""
        if self.role == "admin":
            return "everything"
        if self.pipelines is not None:
            return f"pipelines {', '.join(self.pipelines)} of workspace {self.workspace_id}"
        return f"workspace {self.workspace_id}"


def _key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"], name=row["name"], role=row["role"], workspace_id=row["workspace_id"],
        pipelines=tuple(json.loads(row["pipelines"])) if row["pipelines"] is not None else None,
        read_logs=bool(row["read_logs"]), limits=KeyLimits.model_validate_json(row["limits"] or "{}"),
        created_at=row["created_at"], expires_at=row["expires_at"], revoked_at=row["revoked_at"],
    )


class KeyStore:
    def __init__(self, db: Database, data_dir: Path) -> None:
        self.db = db
        self.data_dir = data_dir
        self._migrate()
        self._by_hash: dict[str, ApiKey] = {}
        self._loaded_at = 0.0
        self._reload_lock = threading.Lock()
        self._used: dict[int, float] = {}  # last uses not yet written
        self.reload()

    def _migrate(self) -> None:
        self.db.add_columns("tokens", _COLUMNS)  # in one write transaction: replicas starting together alter once

    async def refresh_forever(self) -> None:
        """Re-read the table every REFRESH_S in a worker thread, so requests never wait on it."""
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await asyncio.to_thread(self.reload)
            except Exception as exc:  # noqa: BLE001 - busy or unreachable: requests re-read it past STALE_S
                log.warning("could not re-read the API keys now (%s); retrying", exc)

    def reload(self) -> None:
        with self._reload_lock:
            rows = self.db.all("SELECT * FROM tokens")
            self._by_hash = {r["sha256"]: _key(r) for r in rows}
            self._loaded_at = time.monotonic()

    # -- the runtime's admin token -------------------------------------------------
    def ensure_admin(self, token: str | None = None) -> None:
        """Without `token`: first start mints the admin token, later starts keep it.

        With `token` (WALLAROO_ADMIN_TOKEN): that token is the admin token; only its hash is
        stored (replacing a different admin hash), and `admin.token` holds that same token."""
        path = self.data_dir / ADMIN_TOKEN_FILE
        row = self.db.one("SELECT id, sha256 FROM tokens WHERE name = ? AND role = 'admin'", (ADMIN_NAME,))
        if token is None:
            if row is not None:
                return
            token = new_token()
            with self.db.tx() as c:
                c.execute("INSERT INTO tokens (name, sha256, role, created_at) VALUES (?, ?, 'admin', ?)",
                          (ADMIN_NAME, hash_token(token), time.time()))
            write_private(path, token + "\n")
            self.reload()
            return
        token = check_admin_token(token)
        digest = hash_token(token)
        if row is None or row["sha256"] != digest:
            with self.db.tx() as c:
                # re-read inside the write transaction: replicas starting together insert once
                c.execute("DELETE FROM tokens WHERE sha256 = ? AND name != ?", (digest, ADMIN_NAME))
                cur = c.execute("SELECT id FROM tokens WHERE name = ? AND role = 'admin'", (ADMIN_NAME,)).fetchone()
                if cur is None:
                    c.execute("INSERT INTO tokens (name, sha256, role, created_at) VALUES (?, ?, 'admin', ?)",
                              (ADMIN_NAME, digest, time.time()))
                else:
                    c.execute("UPDATE tokens SET sha256 = ? WHERE id = ?", (digest, cur["id"]))
            if row is not None:
                log.info("admin token replaced by the one in WALLAROO_ADMIN_TOKEN; the previous one no longer works")
        try:
            current = path.read_text().strip()
        except FileNotFoundError:
            current = None
        if current is None or not hmac.compare_digest(current.encode(), token.encode()):
            write_private(path, token + "\n")
        self.reload()

    # -- keys ----------------------------------------------------------------------
    def insert(self, *, name: str, role: Role, workspace_id: int | None, pipelines: list[str] | None,
               read_logs: bool, limits: KeyLimits, expires_at: float | None) -> tuple[ApiKey, str]:
        """A new key and its secret (the only time the secret exists outside the caller)."""
        secret = new_token()
        with self.db.tx() as c:
            key_id = c.execute(
                "INSERT INTO tokens (name, sha256, role, created_at, workspace_id, pipelines, read_logs, limits, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, hash_token(secret), role, time.time(), workspace_id,
                 json.dumps(pipelines) if pipelines is not None else None, int(read_logs),
                 limits.model_dump_json(exclude_none=True), expires_at),
            ).lastrowid
        self.reload()
        key = self.get(int(key_id or 0))
        assert key is not None
        return key, secret

    def mint(self, name: str, workspace_id: int, expires_at: float) -> tuple[int, str]:
        """A task run's key: deployer in `workspace_id` alone, expiring at `expires_at`; (id, secret)."""
        key, secret = self.insert(name=name, role="deployer", workspace_id=workspace_id, pipelines=None,
                                  read_logs=True, limits=KeyLimits(), expires_at=expires_at)
        return key.id, secret

    def revoke(self, key_id: int) -> None:
        self.update(key_id, revoked_at=time.time())

    def revoke_stale(self, live_runs: Callable[[], set[str]]) -> int:
        """Revoke the run keys (`mint`'s, named 'task T run R') of runs no longer running (a runtime
        killed mid-run never revoked them); how many. `live_runs` is read after the keys: a run's
        row is written before its key, so a key read here has its run among those if it runs."""
        rows = self.db.all("SELECT id, name FROM tokens WHERE name LIKE 'task % run %' AND revoked_at IS NULL "
                           "AND role = 'deployer'")
        live = live_runs() if rows else set()
        stale = [r["id"] for r in rows if r["name"].rsplit(" ", 1)[-1] not in live]
        if stale:
            now = time.time()
            with self.db.tx() as c:
                c.executemany("UPDATE tokens SET revoked_at = ? WHERE id = ?", [(now, i) for i in stale])
            self.reload()
        return len(stale)

    def update(self, key_id: int, **columns: Any) -> None:
        """Set `columns` (name, pipelines, read_logs, limits, expires_at, revoked_at) of one key."""
        encode = {"pipelines": lambda v: json.dumps(v) if v is not None else None,
                  "limits": lambda v: v.model_dump_json(exclude_none=True), "read_logs": int}
        sets = ", ".join(f"{c} = ?" for c in columns)
        values = [encode.get(c, lambda v: v)(v) for c, v in columns.items()]
        with self.db.tx() as c:
            c.execute(f"UPDATE tokens SET {sets} WHERE id = ?", (*values, key_id))
        self.reload()

    def get(self, key_id: int) -> ApiKey | None:
        row = self.db.one("SELECT * FROM tokens WHERE id = ?", (key_id,))
        return _key(row) if row is not None else None

    def all(self) -> list[ApiKey]:
        return [_key(r) for r in self.db.all("SELECT * FROM tokens ORDER BY id")]

    def last_used(self) -> dict[int, float]:
        """Each key's last use: written ones, then this process's newer ones."""
        used = {r["id"]: r["last_used_at"] for r in self.db.all("SELECT id, last_used_at FROM tokens")
                if r["last_used_at"] is not None}
        for key_id, at in list(self._used.items()):
            used[key_id] = max(at, used.get(key_id, 0.0))
        return used

    # -- requests ------------------------------------------------------------------
    def authenticate(self, token: str) -> ApiKey:
        """The key a bearer token belongs to; Unauthorized for an unknown, expired or revoked one."""
        now = time.monotonic()
        if now - self._loaded_at > STALE_S:
            self.reload()
        digest = hash_token(token)
        key = self._by_hash.get(digest)
        if key is None and now - self._loaded_at > MISS_REFRESH_S:
            self.reload()
            key = self._by_hash.get(digest)
        if key is None:
            raise Unauthorized("invalid token")
        wall = time.time()
        if key.revoked_at is not None:
            raise Unauthorized(f"{key.label} was revoked at {iso(key.revoked_at)}")
        if key.expires_at is not None and wall >= key.expires_at:
            raise Unauthorized(f"{key.label} expired at {iso(key.expires_at)}")
        self._used[key.id] = wall
        return key

    def flush_last_used(self) -> None:
        """Write the last uses seen since the previous flush (never moving one back)."""
        pending, self._used = self._used, {}
        if not pending:
            return
        try:
            with self.db.tx() as c:
                c.executemany(
                    "UPDATE tokens SET last_used_at = ? WHERE id = ? AND COALESCE(last_used_at, 0) < ?",
                    [(at, key_id, at) for key_id, at in pending.items()],
                )
        except OperationalError as exc:  # busy: keep them for the next flush
            log.warning("could not record keys' last use now (%s); retrying", exc)
            for key_id, at in pending.items():
                self._used[key_id] = max(at, self._used.get(key_id, 0.0))
