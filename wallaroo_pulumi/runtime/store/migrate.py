"""`wallaroo-pulumi runtime migrate`: copy an embedded data directory (SQLite + local files) into
a PostgreSQL database and an S3-compatible bucket, for replicas on many hosts. The runtime on the
data directory must be stopped; the target database must hold no models, pipelines or keys yet.

Every table of the SQLite file is created in PostgreSQL from its own declaration (translated as
the PostgreSQL backend translates the schema) and its rows copied with their ids; artifacts go
to `artifacts/sha256/`, each pipeline's logs to `logs/<pipeline>/` (indexed); sidekick
credentials are opened with the data dir's key and sealed again under $WALLAROO_SECRETS_KEY."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from wallaroo_pulumi.runtime.core.secrets import KEY_FILE, SecretBox
from wallaroo_pulumi.runtime.store.artifacts_remote import RemoteArtifactStore
from wallaroo_pulumi.runtime.store.db import TABLES, Database, SqliteDatabase, dumps
from wallaroo_pulumi.runtime.store.db_postgres import PostgresDatabase
from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.runtime.store.logs.shared import SharedLogStore
from wallaroo_pulumi.runtime.store.object_store import ObjectStore

_IDENTITY = re.compile(r"\bid\s+INTEGER\s+PRIMARY\s+KEY\b", re.IGNORECASE)
_MUST_BE_EMPTY = ("tokens", "models", "pipelines", "deployments", "listener_tasks")


class MigrationError(Exception):
    """The migration cannot start; the message says why and what to do."""


def migrate(data_dir: Path, database_url: str, object_store_url: str, secrets_key: str,
            say: Callable[[str], None] = print) -> dict[str, int]:
    """Copy everything; returns counts (rows per table, artifacts, log rows)."""
    source_path = data_dir / "runtime.db"
    if not source_path.exists():
        raise MigrationError(f"data_dir: no runtime.db in {data_dir}")
    source = SqliteDatabase(source_path)
    target = PostgresDatabase(database_url)
    bucket = ObjectStore(object_store_url)
    counts: dict[str, int] = {}
    try:
        _check_empty(target)
        old_key = SecretBox.for_data_dir(data_dir, None if (data_dir / KEY_FILE).exists() else secrets_key)
        new_key = SecretBox.for_data_dir(data_dir, secrets_key)
        for table, rows in _copy_tables(source, target, old_key, new_key):
            counts[table] = rows
            say(f"table {table}: {rows} row(s)")
        counts["artifacts"] = _copy_artifacts(data_dir / "artifacts" / "sha256", bucket, say)
        counts["log_rows"] = _copy_logs(data_dir / "logs", target, bucket, say)
    finally:
        source.close()
        target.close()
    return counts


def _check_empty(target: Database) -> None:
    for table in _MUST_BE_EMPTY:
        if target.has_table(table) and (target.one(f"SELECT COUNT(*) AS n FROM {table}") or {}).get("n"):
            raise MigrationError(f"database: the target already holds {table}; migrate into an empty database")


def _tables(source: SqliteDatabase) -> list[tuple[str, str]]:
    rows = source.all("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    known = {r["name"]: r["sql"] for r in rows}
    order = [t for t in TABLES if t in known] + sorted(t for t in known if t not in TABLES)
    return [(t, known[t]) for t in order]


def _copy_tables(source: SqliteDatabase, target: Database, old_key: SecretBox,
                 new_key: SecretBox) -> list[tuple[str, int]]:
    out = []
    with target.tx() as c:
        c.execute("DELETE FROM workspaces")  # the default workspace comes from the source, with its id
    for table, sql in _tables(source):
        with target.tx() as c:
            c.execute(re.sub(r"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?", "CREATE TABLE IF NOT EXISTS ", sql, flags=re.I))
        with source.tx() as c:
            info = c.execute(f"PRAGMA table_info({table})").fetchall()
        decls = {r["name"]: " ".join(filter(None, [r["type"], "NOT NULL" if r["notnull"] else "",
                                                   f"DEFAULT {r['dflt_value']}" if r["dflt_value"] is not None else ""]))
                 for r in info}
        target.add_columns(table, decls)
        for index in source.all("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                                (table,)):
            with target.tx() as c:
                c.execute(re.sub(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(IF\s+NOT\s+EXISTS\s+)?",
                                 lambda m: f"CREATE {m.group(1) or ''}INDEX IF NOT EXISTS ", index["sql"], flags=re.I))
        rows = source.all(f"SELECT * FROM {table}")
        if table == "deployments":  # credentials sealed under the target's key
            for row in rows:
                row["engine_config"] = dumps(new_key.seal_config(old_key.open_config(json.loads(row["engine_config"]))))
        if rows:
            columns = list(rows[0])
            with target.tx() as c:
                c.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                              [tuple(r[k] for k in columns) for r in rows])
                if _IDENTITY.search(sql):
                    target.after_explicit_ids(c, (table,))
        out.append((table, len(rows)))
    return out


def _copy_artifacts(blobs: Path, bucket: ObjectStore, say: Callable[[str], None]) -> int:
    copied = 0
    for blob in sorted(blobs.iterdir()) if blobs.is_dir() else []:
        key = RemoteArtifactStore.key(blob.name)
        if not bucket.exists(key):
            bucket.put_file(blob, key)
        copied += 1
        say(f"artifact {blob.name}: {blob.stat().st_size} bytes")
    return copied


def _copy_logs(logs: Path, target: Database, bucket: ObjectStore, say: Callable[[str], None]) -> int:
    if not logs.is_dir():
        return 0
    local = LogStore(logs)  # seals what a stopped runtime left active
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        shared = SharedLogStore(Path(tmp) / "logs", target, bucket)
        try:
            for pipeline in local.pipelines():
                rows, cursor, part = 0, None, 0
                while True:
                    page = local.query(pipeline, limit=100_000, order="Asc", cursor=cursor)
                    if page.table.num_rows:
                        shared.publish(pipeline, f"migrated-{part:06d}", page.table)
                        part += 1
                        rows += page.table.num_rows
                    cursor = page.cursor
                    if not cursor:
                        break
                say(f"logs of {pipeline}: {rows} row(s)")
                total += rows
        finally:
            shared.close()
            local.close()
    return total
