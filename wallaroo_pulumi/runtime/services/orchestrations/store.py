"""The `orchestrations` table: one row per upload (Wallaroo gives each upload an id of its own;
the zip itself is content-addressed in the artifact store by `sha`). Timestamps are epoch seconds."""

from __future__ import annotations

import time
import uuid
from typing import Any

from wallaroo_pulumi.runtime.store.db import Database

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS orchestrations (
        id TEXT PRIMARY KEY,
        name TEXT,
        file_name TEXT NOT NULL,
        sha TEXT NOT NULL,
        file_size INTEGER NOT NULL,
        workspace_id INTEGER NOT NULL,
        status TEXT NOT NULL,              -- pending_packaging | packaging | ready | error
        error TEXT,
        entry TEXT,                        -- the folder of main.py inside the zip ('.' at its top)
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS orchestrations_workspace ON orchestrations (workspace_id, created_at)",
]
STATUSES = ("pending_packaging", "packaging", "ready", "error")


class OrchestrationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.tx() as c:
            for stmt in SCHEMA:
                c.execute(stmt)

    def create(self, *, name: str | None, file_name: str, sha: str, file_size: int, workspace_id: int,
               entry: str) -> dict[str, Any]:
        oid = str(uuid.uuid4())
        now = time.time()
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO orchestrations (id, name, file_name, sha, file_size, workspace_id, status, entry, "
                "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (oid, name, file_name, sha, file_size, workspace_id, "pending_packaging", entry, now, now),
            )
        return self.get(oid)  # type: ignore[return-value]

    def get(self, oid: str) -> dict[str, Any] | None:
        return self.db.one("SELECT * FROM orchestrations WHERE id = ?", (oid,))

    def list(self, workspace_ids: list[int] | None = None) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT * FROM orchestrations ORDER BY created_at, id")
        return [r for r in rows if workspace_ids is None or r["workspace_id"] in workspace_ids]

    def pending(self) -> list[dict[str, Any]]:
        """Uploads whose packaging had not ended (the runtime stopped during it)."""
        return self.db.all("SELECT * FROM orchestrations WHERE status IN ('pending_packaging', 'packaging')")

    def set_status(self, oid: str, status: str, error: str | None = None) -> None:
        assert status in STATUSES
        with self.db.tx() as c:
            c.execute("UPDATE orchestrations SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                      (status, error, time.time(), oid))

    def delete(self, oid: str) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM orchestrations WHERE id = ?", (oid,))

    def sha_in_use(self, sha: str) -> bool:
        return self.db.one("SELECT 1 AS x FROM orchestrations WHERE sha = ? LIMIT 1", (sha,)) is not None
