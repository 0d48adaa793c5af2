"""LogStore unit tests: append/query/paging, schema changes, crash recovery, several writers."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.store.logs import LogStore


def rows(start: int, n: int, **extra) -> pa.Table:
    data = {"time": [1_000 + i for i in range(start, start + n)], "in.x": [float(i) for i in range(start, start + n)]}
    data.update(extra)
    return pa.table(data)


def test_paging_both_orders_and_time_range(tmp_path):
    store = LogStore(tmp_path, segment_rows=4)
    for i in range(10):
        store.append("p", rows(i, 1))
    seen, cursor = [], None
    while True:
        page = store.query("p", limit=3, order="Asc", cursor=cursor)
        seen += page.table.column("in.x").to_pylist()
        if page.status == "All":
            assert page.cursor is None
            break
        assert page.status == "RecordLimited"
        cursor = page.cursor
    assert seen == [float(i) for i in range(10)]
    page = store.query("p", limit=4, order="Desc")
    assert page.table.column("in.x").to_pylist() == [9.0, 8.0, 7.0, 6.0]
    page = store.query("p", limit=100, order="Desc", cursor=page.cursor)
    assert page.table.column("in.x").to_pylist() == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0] and page.status == "All"
    assert store.query("p", start=1_003, end=1_006).table.column("in.x").to_pylist() == [3.0, 4.0, 5.0]
    assert store.query("missing").table.num_rows == 0
    with pytest.raises(ValueError):
        store.query("p", order="Up")
    with pytest.raises(ValueError):
        store.query("p", cursor="garbage!")


def test_schema_change_and_missing_time(tmp_path):
    store = LogStore(tmp_path)
    store.append("p", rows(0, 2))
    store.append("p", pa.table({"in.x": ["text"]}))  # no time: filled in; string vs double: a schema change
    page = store.query("p", limit=10)
    assert page.status == "SchemaChange" and page.table.num_rows == 2
    rest = store.query("p", limit=10, cursor=page.cursor)
    assert rest.table.column("in.x").to_pylist() == ["text"] and rest.status == "All"
    store.append("p", rows(5, 1, **{"out.y": [1.0]}))  # new column: promoted with nulls
    last = store.query("p", limit=10, order="Desc")
    assert last.table.column("out.y").to_pylist() == [1.0] and last.status == "SchemaChange"


def test_recovery_keeps_whole_batches_and_drops_a_torn_tail(tmp_path):
    store = LogStore(tmp_path)
    for i in range(3):
        store.append("p", rows(i, 1))
    active = next((tmp_path / "p").glob("*.arrows"))
    with open(active, "ab") as f:
        f.write(b"\xff\xff\xff\xff\x10\x00")  # a half-written message, as after kill -9
    recovered = LogStore(tmp_path)
    assert recovered.query("p", limit=10).table.column("in.x").to_pylist() == [0.0, 1.0, 2.0]
    recovered.append("p", rows(3, 1))
    assert recovered.query("p", limit=10).table.column("in.x").to_pylist() == [0.0, 1.0, 2.0, 3.0]
    assert not list((tmp_path / "p").glob("*.tmp"))


def test_group_commit_appends_seal_in_the_background_and_stay_queryable(tmp_path):
    import time

    store = LogStore(tmp_path, segment_rows=3, sync_interval_s=0.01)
    for i in range(10):
        store.append("p", rows(i, 1), sync=False)
        assert store.query("p", limit=100).table.num_rows == i + 1  # visible at once, sealed or not
    deadline = time.monotonic() + 5
    while len(list((tmp_path / "p").glob("*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(list((tmp_path / "p").glob("*.parquet"))) == 3  # 3 full segments sealed off the append path
    assert store.query("p", limit=100, order="Desc").table.column("in.x").to_pylist() == [float(i) for i in range(9, -1, -1)]
    store.close()
    assert LogStore(tmp_path).query("p", limit=100).table.column("in.x").to_pylist() == [float(i) for i in range(10)]


def test_two_writers_on_one_directory_lose_nothing_and_see_each_other(tmp_path):
    """Serving replicas share the data dir: numbers never collide, each sees the other's rows."""
    a = LogStore(tmp_path, segment_rows=5)
    b = LogStore(tmp_path, segment_rows=7)
    for i in range(60):
        (a if i % 3 else b).append("p", rows(i, 1))
        if i == 30:  # a replica starting meanwhile recovers nothing that a live writer holds
            c = LogStore(tmp_path)
            assert len(c.query("p", limit=1000).table) == 31
    expected = [float(i) for i in range(60)]
    for store in (a, b, c):
        assert sorted(store.query("p", limit=1000).table.column("in.x").to_pylist()) == expected
    names = [p.name for p in (tmp_path / "p").iterdir()]
    seqs = [n.split(".")[0] for n in names if n.endswith((".arrows", ".parquet"))]
    assert len(seqs) == len(set(seqs)), names  # one file per segment number
    a.close()
    b.close()
    assert sorted(LogStore(tmp_path).query("p", limit=1000).table.column("in.x").to_pylist()) == expected


def test_a_dead_writers_segment_is_sealed_by_a_live_peer(tmp_path):
    a = LogStore(tmp_path)
    b = LogStore(tmp_path)
    b.append("p", rows(3, 1))  # b is up and writing before a starts
    a.append("p", rows(0, 3))
    assert sorted(b.query("p", limit=10).table.column("in.x").to_pylist()) == [0.0, 1.0, 2.0, 3.0]
    orphan = a._log("p").active_path
    a._log("p").active_file.close()  # as if its process was killed: the flock goes with it
    assert sorted(b.query("p", limit=10).table.column("in.x").to_pylist()) == [0.0, 1.0, 2.0, 3.0]
    assert not Path(orphan).exists() and Path(orphan).with_suffix(".parquet").exists()
