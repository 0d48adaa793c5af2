"""Metadata in SQLite (WAL mode): workspaces, models and versions, pipelines and versions,
deployments (with their full config, sidekick env sealed: D11) and token hashes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL DEFAULT 'admin',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    visibility TEXT NOT NULL DEFAULT 'private',
    created_at REAL NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE TABLE IF NOT EXISTS model_versions (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    version TEXT NOT NULL UNIQUE,
    sha TEXT NOT NULL,
    file_name TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    input_schema TEXT NOT NULL,
    output_schema TEXT NOT NULL,
    conversion TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    openai_config TEXT,
    UNIQUE (model_id, sha)
);
CREATE TABLE IF NOT EXISTS pipelines (
    id INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    current_version_id INTEGER,
    created_at REAL NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE TABLE IF NOT EXISTS pipeline_versions (
    id INTEGER PRIMARY KEY,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    version TEXT NOT NULL UNIQUE,
    definition TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY,
    pipeline_id INTEGER NOT NULL UNIQUE REFERENCES pipelines(id) ON DELETE CASCADE,
    deploy_name TEXT NOT NULL,
    pipeline_version_id INTEGER NOT NULL,
    engine_config TEXT NOT NULL,
    desired TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""

# Columns added after a table's first release: (table, column, declaration). A database made
# before gets them by ALTER TABLE at open (NULL in existing rows); new ones have them in SCHEMA.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model_versions", "openai_config", "TEXT"),  # JSON of Wallaroo's OpenaiConfig (D35), NULL: not set
)


_SCRUBBED = 1  # PRAGMA user_version once the database was rewritten with secure_delete on
log = logging.getLogger("wallaroo_pulumi.runtime.db")


class Database:
    """A single SQLite connection shared by threads under a lock (writes are tiny)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists()
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        if new:
            os.chmod(path, 0o600)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        # overwritten and deleted content is zeroed, not left in free space (credentials, tokens)
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.executescript(SCHEMA)
        self._add_columns()
        with self.tx() as c:
            if c.execute("SELECT 1 FROM workspaces WHERE id = 1").fetchone() is None:
                c.execute(
                    "INSERT INTO workspaces (id, name, created_at) VALUES (1, 'default', ?)", (time.time(),)
                )

    def _add_columns(self) -> None:
        """The upgrade path for databases made before a column of ADDED_COLUMNS existed."""
        with self.tx() as c:
            for table, column, decl in ADDED_COLUMNS:
                have = {r["name"] for r in c.execute(f"PRAGMA table_info({table})").fetchall()}
                if column not in have:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [dict(r) for r in rows]

    def scrub(self) -> None:
        """At start: leave no earlier plaintext behind. Once per database, rewrite it (VACUUM),
        so rows deleted before `secure_delete` was on leave no residue in free pages; every
        time, empty the WAL, which may hold old page images from the last process."""
        with self._lock:
            try:
                if self._conn.execute("PRAGMA user_version").fetchone()[0] < _SCRUBBED:
                    self._conn.execute("VACUUM")
                    self._conn.execute(f"PRAGMA user_version = {_SCRUBBED}")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:  # a peer holds the database: the next start retries
                log.warning("could not scrub %s now (%s); it is retried at the next start", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
