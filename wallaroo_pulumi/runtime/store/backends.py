"""Where a runtime keeps its state: the embedded data dir, or the shared services given by URL
(a PostgreSQL database for metadata, an S3-compatible bucket for artifacts and logs)."""

from __future__ import annotations

from pathlib import Path

from wallaroo_pulumi.runtime.store.artifacts import ArtifactStore
from wallaroo_pulumi.runtime.store.db import Database, SqliteDatabase
from wallaroo_pulumi.runtime.store.logs import LogStore


def open_database(data_dir: Path, url: str | None = None) -> Database:
    """The embedded SQLite file in `data_dir`, or the PostgreSQL database at `url`
    (`postgresql://user@host:port/db`; the password from the URL, $PGPASSWORD or ~/.pgpass)."""
    if url is None:
        return SqliteDatabase(data_dir / "runtime.db")
    from wallaroo_pulumi.runtime.store.db_postgres import PostgresDatabase

    return PostgresDatabase(url)


def open_artifacts(data_dir: Path, object_store_url: str | None = None) -> ArtifactStore:
    """Artifacts in `data_dir/artifacts`, or in the bucket at `object_store_url` (s3://bucket/prefix)
    with local copies there."""
    if object_store_url is None:
        return ArtifactStore(data_dir / "artifacts")
    from wallaroo_pulumi.runtime.store.artifacts_remote import RemoteArtifactStore
    from wallaroo_pulumi.runtime.store.object_store import ObjectStore

    bucket = ObjectStore(object_store_url)
    bucket.ensure_bucket()
    return RemoteArtifactStore(data_dir / "artifacts", bucket)


def open_logstore(data_dir: Path, object_store_url: str | None, db: Database, compact: bool = True) -> LogStore:
    """Inference logs in `data_dir/logs`, or in the bucket at `object_store_url`, indexed in `db`
    (this replica's rows wait in `data_dir/logs` until shipped). `compact=False`: an edge, whose
    shipper names each sealed segment by its number."""
    if object_store_url is None:
        return LogStore.shared(data_dir / "logs", compact_min_files=4 if compact else 0)
    from wallaroo_pulumi.runtime.store.logs.shared import SharedLogStore
    from wallaroo_pulumi.runtime.store.object_store import ObjectStore

    return SharedLogStore(data_dir / "logs", db, ObjectStore(object_store_url))
