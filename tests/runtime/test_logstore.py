"""LogStore unit tests: append/query/paging, schema changes, crash recovery, several writers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.runtime.store.logs.segments import tag_of


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


def test_inference_rows_are_queued_off_the_callers_path_and_written_in_order(tmp_path):
    """append(sync=False) writes nothing itself: the rows wait in memory (a read here sees them at
    once), and the background round writes them, in the order they came, sync=True ones included."""
    import time

    store = LogStore(tmp_path, sync_interval_s=1.0)
    for i in range(5):
        store.append("p", rows(i, 1), sync=False)
    d = tmp_path / "p"
    assert not list(d.glob("*.arrows"))  # nothing written on the caller's path
    assert store.query("p", limit=100).table.column("in.x").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    store.append("p", rows(5, 1), sync=False)
    store.append("p", rows(6, 1))  # a listener's score, fsynced now: after the queued row
    store.append("p", rows(7, 1), sync=False)
    deadline = time.monotonic() + 10
    peer = LogStore(tmp_path)  # another replica reads only what is written
    while peer.query("p", limit=100).table.num_rows < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert peer.query("p", limit=100).table.column("in.x").to_pylist() == [float(i) for i in range(8)]
    store.close()


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


def _pages(store: LogStore, pipeline: str, limit: int, order: str = "Asc", **kw) -> list:
    pages, cursor = [], None
    while True:
        page = store.query(pipeline, limit=limit, order=order, cursor=cursor, **kw)
        pages.append(page)
        if page.status == "All" or page.cursor is None:
            return pages
        cursor = page.cursor


def test_paging_a_window_reads_each_row_group_once_never_the_pages_before(tmp_path):
    from wallaroo_pulumi.runtime.store.logs import query
    from wallaroo_pulumi.runtime.store.logs.segments import ROW_GROUP_ROWS

    store = LogStore(tmp_path, seal_after_s=0)
    n = 6 * ROW_GROUP_ROWS + 100  # one sealed segment of 7 row groups
    store.append("p", rows(0, n))
    store.close()
    store = LogStore(tmp_path)
    groups = -(-n // ROW_GROUP_ROWS)
    for order in ("Asc", "Desc"):
        query.count_reads(True)
        try:
            seen_per_page = []
            pages, cursor = [], None
            while True:
                before = len(query.READS)
                page = store.query("p", limit=ROW_GROUP_ROWS, order=order, cursor=cursor)
                seen_per_page.append(query.READS[before:])
                pages.append(page)
                if page.status == "All" or page.cursor is None:
                    break
                cursor = page.cursor
            reads = list(query.READS)
        finally:
            query.count_reads(False)
        xs = [x for p in pages for x in p.table.column("in.x").to_pylist()]
        expect = [float(i) for i in range(n)]
        assert xs == (expect if order == "Asc" else expect[::-1])
        # a page reads the group its cursor is in and the next one at most: never those before
        assert all(len(r) <= 2 for r in seen_per_page), seen_per_page
        assert len(reads) <= groups + len(pages), reads
        assert sorted(set(reads)) == sorted(f"000000000001.parquet#{i}" for i in range(groups))


def test_a_page_holds_its_rows_not_the_window(tmp_path):
    store = LogStore(tmp_path, seal_after_s=0)
    store.append("p", rows(0, 100_000, **{"in.text": ["x" * 200] * 100_000}))
    store.close()
    page = LogStore(tmp_path).query("p", limit=1000, cursor=None)
    assert page.table.num_rows == 1000
    assert page.table.get_total_buffer_size() < 20 * 2**20  # ~one 16k-row group of 200-byte texts, not 100k rows


def test_the_active_segment_is_sealed_by_time(tmp_path):
    import time

    store = LogStore(tmp_path, seal_after_s=0.3)
    store.append("p", rows(0, 3), sync=False)
    d = tmp_path / "p"
    deadline = time.monotonic() + 10
    while not list(d.glob("*.arrows")) and time.monotonic() < deadline:  # queued: written by the next round
        time.sleep(0.01)
    assert [p.suffix for p in d.iterdir() if p.suffix in (".arrows", ".parquet")] == [".arrows"]
    while time.monotonic() < deadline:
        names = sorted(p.name for p in d.iterdir())
        if names == ["000000000001.parquet"]:
            break
        time.sleep(0.05)
    assert names == ["000000000001.parquet"], names  # no traffic since: sealed anyway
    store.append("p", rows(3, 2), sync=False)
    assert store.query("p", limit=10).table.column("in.x").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    store.close()


def _wakeups(thread: threading.Thread) -> int:
    """How often the kernel has woken `thread` (its voluntary context switches)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")))


def _until(check, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "not within the time allowed"
        time.sleep(0.01)
    return time.monotonic() - t0


def test_an_idle_writer_sleeps_until_rows_come_yet_seals_by_age(tmp_path):
    """Nothing to write, fsync or seal: the writer thread sleeps (it polled 20 times a second); rows
    that come wake it and are written within a round; an active segment still seals on time."""
    store = LogStore(tmp_path, seal_after_s=0.5, sync_interval_s=0.05)
    try:
        store.append("p", rows(0, 3), sync=False)
        writer = store._syncer
        assert writer is not None
        _until(lambda: any((tmp_path / "p").glob("*.parquet")))  # sealed by age, nothing appended since
        time.sleep(0.2)
        before = _wakeups(writer)
        time.sleep(1.0)
        assert _wakeups(writer) - before <= 2, "an idle writer kept waking up"
        store.append("p", rows(3, 2), sync=False)
        other = LogStore(tmp_path)  # another process's view: only what reached the files
        assert _until(lambda: other.query("p", limit=10).table.num_rows == 5) < 1.0
        assert _until(lambda: len(list((tmp_path / "p").glob("*.parquet"))) == 2) < 2.0
        assert store.query("p", limit=10).table.column("in.x").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    finally:
        store.close()


def test_compaction_merges_small_segments_keeping_every_row_in_order_and_cursors_valid(tmp_path):
    writer = LogStore(tmp_path, segment_rows=40, seal_after_s=0, compact_min_files=4)  # small: < 10 rows
    reader = LogStore(tmp_path)  # a peer that pages through while the writer compacts
    log = writer._log("p")
    writer.append("p", rows(0, 3))
    log.close()
    writer.append("p", rows(3, 3))
    log.close()
    first = reader.query("p", limit=4)  # rows 0..3: its cursor points into segment 2
    assert first.table.column("in.x").to_pylist() == [0.0, 1.0, 2.0, 3.0]
    for i in range(2, 7):
        writer.append("p", rows(3 * i, 3))
        log.close()
    parquet = sorted(p.name for p in (tmp_path / "p").glob("*.parquet"))
    assert len(parquet) < 7, parquet  # the 4 small ones became one
    assert parquet[0] == "000000000004.parquet"  # the merged one takes the last number: none is reused
    assert parquet[-1] == "000000000007.parquet"
    rest = [x for p in _pages(reader, "p", 4) for x in p.table.column("in.x").to_pylist()]
    assert rest == [float(i) for i in range(21)]
    # the cursor issued before the merge goes on where it stopped: nothing lost, nothing twice
    after, cursor = [], first.cursor
    while cursor:
        page = reader.query("p", limit=4, cursor=cursor)
        after += page.table.column("in.x").to_pylist()
        cursor = page.cursor
    assert after == [float(i) for i in range(4, 21)]
    assert [x for p in _pages(LogStore(tmp_path), "p", 5, "Desc") for x in p.table.column("in.x").to_pylist()] == [
        float(i) for i in range(20, -1, -1)]


def test_rows_stored_once_per_key_stay_once_across_resends_a_reopen_and_compaction(tmp_path):
    """`append_once` (an edge's shipped segment): the key's rows once however often they come, also from a
    store opened again on the directory (a restart after a crash); their segment is never merged away,
    and the rows around them keep their order."""
    store = LogStore(tmp_path, segment_rows=40, seal_after_s=0, compact_min_files=2)
    store.append("p", rows(0, 2))
    assert store.append_once("p", "edge/a/1", rows(2, 3)) is True
    assert store.append_once("p", "edge/a/1", rows(2, 3)) is False  # sent again
    store.append("p", rows(5, 2))
    assert store.append_once("p", "edge/a/2", rows(7, 1)) is True
    reopened = LogStore(tmp_path, segment_rows=40, seal_after_s=0, compact_min_files=2)
    assert reopened.append_once("p", "edge/a/1", rows(2, 3)) is False
    for i in range(8, 12):  # small segments in a row: compaction merges them
        reopened.append("p", rows(i, 1))
        reopened._log("p").close()
    assert [x for p in _pages(LogStore(tmp_path), "p", 5) for x in p.table.column("in.x").to_pylist()] == [
        float(i) for i in range(12)]
    names = sorted(p.name for p in (tmp_path / "p").glob("*.parquet"))
    assert len([n for n in names if tag_of(n)]) == 2 and len(names) == 5, names  # 8..11 merged into one
