"""The shared log store on PostgreSQL + a bucket, two writers in one test (each its own local
dir): cursors page across both writers' segments, rows written between pages come after the
cursor, and retention by either writer removes both writers' old segments, index and objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow.fs import FileSelector

from wallaroo_pulumi.runtime.store.db_postgres import PostgresDatabase
from wallaroo_pulumi.runtime.store.logs.settled import Settled, sealed_within
from wallaroo_pulumi.runtime.store.logs.shared import SharedLogStore
from wallaroo_pulumi.runtime.store.object_store import ObjectStore
from wallaroo_pulumi.testing.postgres import PostgresServer
from wallaroo_pulumi.testing.s3 import S3Server


def rows(values: list[int], t_ms: int) -> pa.Table:
    return pa.table({"time": pa.array([t_ms + i for i in range(len(values))], pa.int64()).cast(pa.timestamp("ms", "UTC")),
                     "in.x": pa.array(values, pa.float64())})


@pytest.fixture
def writers(tmp_path: Path, postgres: PostgresServer, s3: S3Server) -> Iterator[tuple[SharedLogStore, SharedLogStore, ObjectStore]]:
    database, bucket_url = postgres.new_database(), s3.new_bucket()
    bucket = ObjectStore(bucket_url, s3.env)
    dbs = [PostgresDatabase(database, max_connections=2) for _ in range(2)]
    stores = [SharedLogStore(tmp_path / f"node-{i}" / "logs", db, ObjectStore(bucket_url, s3.env), ship_interval_s=3600)
              for i, db in enumerate(dbs)]
    yield stores[0], stores[1], bucket
    for store, db in zip(stores, dbs, strict=True):
        store.close()
        db.close()


def read_all(store: SharedLogStore, pipeline: str, page: int, **kw) -> tuple[list[float], list[str]]:
    values, statuses, cursor = [], [], None
    while True:
        got = store.query(pipeline, limit=page, cursor=cursor, **kw)
        values += got.table.column("in.x").to_pylist() if got.table.num_rows else []
        statuses.append(got.status)
        cursor = got.cursor
        if not cursor:
            return values, statuses


def test_cursors_page_across_writers_and_rows_written_between_pages_come_after(writers) -> None:
    a, b, _ = writers
    now = 1_800_000_000_000
    a.append("p", rows([1, 2, 3], now), sync=False)  # inference rows: local until shipped
    b.append("p", rows([4, 5], now + 10), sync=False)
    assert read_all(b, "p", 100)[0] == [4.0, 5.0]  # a reader ships its own rows: it sees what it wrote
    a.ship()
    first = b.query("p", limit=4)
    assert first.table.column("in.x").to_pylist() == [4.0, 5.0, 1.0, 2.0] and first.status == "RecordLimited"
    a.append("p", rows([6], now + 20), sync=True)  # a listener's scores: in the index at once
    rest = b.query("p", limit=100, cursor=first.cursor)
    assert rest.table.column("in.x").to_pylist() == [3.0, 6.0] and rest.cursor is None
    values, _ = read_all(a, "p", 2, order="Desc")
    assert values == [6.0, 3.0, 2.0, 1.0, 5.0, 4.0]
    assert a.pipelines() == b.pipelines() == ["p"]


def test_retention_by_one_writer_removes_every_writers_old_segments(writers) -> None:
    a, b, bucket = writers
    old, new = 1_700_000_000_000, 1_800_000_000_000
    a.append("p", rows([1, 2], old), sync=True)
    b.append("p", rows([3], old), sync=True)
    b.append("p", rows([4], new), sync=True)
    assert sorted(read_all(a, "p", 100)[0]) == [1.0, 2.0, 3.0, 4.0]
    before = bucket.fs.get_file_info(FileSelector(
        bucket.path("logs/p"), recursive=True))
    assert len(before) == 3
    removed = a.prune(new - 1000)
    assert removed == {"p": (2, 3)}
    assert read_all(b, "p", 100)[0] == [4.0]
    after = bucket.fs.get_file_info(FileSelector(
        bucket.path("logs/p"), recursive=True))
    assert len(after) == 1


def test_a_missing_bucket_is_created_once(s3: S3Server) -> None:
    bucket = ObjectStore(f"s3://made-by-the-runtime-{id(s3)}/prefix", s3.env)
    assert not bucket.exists("artifacts/x")
    bucket.ensure_bucket()
    bucket.ensure_bucket()  # there now: nothing to do
    assert bucket.fs.get_file_info(bucket.bucket).type.name == "Directory"


def test_rows_stored_once_per_key_are_stored_once_whichever_replica_takes_them(writers) -> None:
    """An edge's segment sent twice, the resend reaching another replica: its rows are in the bucket and
    the index once."""
    a, b, _ = writers
    now = 1_800_000_000_000
    assert a.append_once("p", "edge/e1/7", rows([1, 2, 3], now)) is True
    assert b.append_once("p", "edge/e1/7", rows([1, 2, 3], now)) is False
    assert a.append_once("p", "edge/e1/7", rows([1, 2, 3], now)) is False
    assert b.append_once("p", "edge/e1/8", rows([4], now + 10)) is True
    assert sorted(read_all(a, "p", 100)[0]) == [1.0, 2.0, 3.0, 4.0]


def test_sealed_segments_of_every_writer_are_listed_and_a_settled_set_skips_them(writers) -> None:
    """What a listener stream settles (D63) on the shared store: every writer's shipped segments, by print."""
    a, b, _ = writers
    now = 1_800_000_000_000
    a.append("p", rows([1, 2], now), sync=False)
    b.append("p", rows([3], now + 10), sync=False)
    a.ship()
    sealed = b.sealed("p")  # b ships its own first: after a's
    assert [p.rows for p in sealed] == [2, 1] and [p.tmin for p in sealed] == [now, now + 10]
    assert sealed_within(sealed, now, now + 5) == [p for p in sealed if p.rows == 2]
    a.append("p", rows([4], now + 20), sync=True)
    assert read_all(b, "p", 100, skip=Settled(sealed))[0] == [4.0]
    assert read_all(b, "p", 100, skip=Settled(sealed[:1]))[0] == [3.0, 4.0]
