"""The metadata store: workspaces, models and versions, pipelines and versions, deployments
(with their full config, sidekick env sealed: D11), token hashes, and the tables services add.

One interface, two backends: `SqliteDatabase` (WAL, the embedded default, in the data dir) and
`PostgresDatabase` (`db_postgres.py`, for replicas on many hosts). Services write SQL once, in
the SQLite dialect with `?` placeholders; the schema is declared once and the PostgreSQL backend
translates it (D36). `backends.open_database` picks the backend from a URL.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

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
    dynamic_batching_config TEXT,
    UNIQUE (model_id, sha)
);
CREATE TABLE IF NOT EXISTS pipelines (
    id INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    current_version_id INTEGER,
    created_at REAL NOT NULL,
    guardrails TEXT,
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
    ("model_versions", "openai_config", "TEXT"),  # JSON of Wallaroo's OpenaiConfig, NULL: not set
    ("pipelines", "guardrails", "TEXT"),  # JSON of the pipeline's guardrail policies (D45), NULL: none
    ("model_versions", "dynamic_batching_config", "TEXT"),  # JSON of Wallaroo's DynamicBatchingConfig, NULL: not set
)

#: The tables of SCHEMA in the order their rows can be copied (parents first; `runtime migrate`).
TABLES = ("workspaces", "tokens", "models", "model_versions", "pipelines", "pipeline_versions", "deployments")

_SCRUBBED = 1  # PRAGMA user_version once the database was rewritten with secure_delete on
log = logging.getLogger("wallaroo_pulumi.runtime.db")


class IntegrityError(Exception):
    """A write broke a constraint (unique, foreign key), on either backend."""


class OperationalError(Exception):
    """The database could not run a statement now (busy, a missing table), on either backend."""


class Cursor(Protocol):
    rowcount: int

    @property
    def lastrowid(self) -> int | None: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What a transaction body gets: rows index by name and by position."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> Cursor: ...


class Database(ABC):
    """The one interface services use: `tx()` for writes (one writer at a time, D36), `one`/`all` for reads."""

    dialect: str

    def _setup(self) -> None:
        """The schema, its added columns and the default workspace (both backends, at open)."""
        with self.tx() as c:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
        for table, column, decl in ADDED_COLUMNS:
            self.add_columns(table, {column: decl})
        with self.tx() as c:
            if c.execute("SELECT 1 FROM workspaces WHERE id = 1").fetchone() is None:
                c.execute("INSERT INTO workspaces (id, name, created_at) VALUES (1, 'default', ?)", (time.time(),))
                self.after_explicit_ids(c, ("workspaces",))

    @abstractmethod
    def tx(self) -> AbstractContextManager[Connection]:
        """One write transaction, rolled back on error; writers never interleave."""

    @abstractmethod
    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...

    @abstractmethod
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abstractmethod
    def columns(self, c: Connection, table: str) -> set[str]:
        """The columns `table` has now (empty when there is no such table)."""

    def has_table(self, table: str) -> bool:
        with self.tx() as c:
            return bool(self.columns(c, table))

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Add the columns `table` lacks (an upgrade path), inside a write transaction so
        replicas starting together alter once."""
        with self.tx() as c:
            present = self.columns(c, table)
            for column, decl in columns.items():
                if column not in present:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def after_explicit_ids(self, c: Connection, tables: Iterable[str]) -> None:
        """Rows were inserted with explicit ids: later inserts must still get fresh ones
        (SQLite's next rowid follows the largest: nothing to do)."""
        return None

    def scrub(self) -> None:
        """At start: leave no earlier plaintext of this backend's own files behind (none of its own: nothing)."""
        return None

    @abstractmethod
    def describe(self) -> str:
        """Where the metadata lives, for logs (never a password)."""

    @abstractmethod
    def close(self) -> None: ...


class SqliteDatabase(Database):
    """A single SQLite connection shared by threads under a lock (writes are tiny)."""

    dialect = "sqlite"

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
        self._setup()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on error."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise OperationalError(str(exc)) from exc
            try:
                yield self._conn  # type: ignore[misc]
            except BaseException as exc:
                self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise IntegrityError(str(exc)) from exc
                if isinstance(exc, sqlite3.OperationalError):
                    raise OperationalError(str(exc)) from exc
                raise
            else:
                self._conn.execute("COMMIT")

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        with self._lock:
            try:
                row = self._conn.execute(sql, tuple(params)).fetchone()
            except sqlite3.OperationalError as exc:
                raise OperationalError(str(exc)) from exc
        return dict(row) if row is not None else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                rows = self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.OperationalError as exc:
                raise OperationalError(str(exc)) from exc
        return [dict(r) for r in rows]

    def columns(self, c: Connection, table: str) -> set[str]:
        return {r["name"] for r in c.execute(f"PRAGMA table_info({table})").fetchall()}

    def scrub(self) -> None:
        """Once per database, rewrite it (VACUUM), so rows deleted before `secure_delete` was on
        leave no residue in free pages; every time, empty the WAL, which may hold old page images
        from the last process."""
        with self._lock:
            try:
                if self._conn.execute("PRAGMA user_version").fetchone()[0] < _SCRUBBED:
                    self._conn.execute("VACUUM")
                    self._conn.execute(f"PRAGMA user_version = {_SCRUBBED}")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:  # a peer holds the database: the next start retries
                log.warning("could not scrub %s now (%s); it is retried at the next start", self.path, exc)

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
