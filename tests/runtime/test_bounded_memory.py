"""What the data plane keeps stays bounded (issue 26's soak, D62): the constant metadata columns of
a result table are shared only for a request's few rows, and an error's text, different call after
call, is never kept (real Arrow memory, counted by Arrow's allocator); the log store's background
thread hands back what sealing and compacting segments freed (the resident part of Arrow's
mimalloc arena, read from /proc)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.runtime.wire.formats import result_table

MB = 2**20


def _table(rows: int, error: str | None) -> pa.Table:
    return result_table(None, None, rows=rows, time_ms=0, pipeline_version="5e48d269-15ea-4af1-a469-29d3d99c1057",
                        last_model='{"model_name": "llm", "model_sha": "c99f893cce02aad2"}', elapsed=[1000],
                        partition="engine-1", step="llm", error=error,
                        output_schema=pa.schema([("generated_text", pa.string())]))


def _retained(tables: int, rows: int, error: str | None) -> int:
    """Arrow bytes still allocated once `tables` result tables of `rows` rows are gone."""
    gc.collect()
    before = pa.total_allocated_bytes()
    for i in range(tables):
        table = _table(rows + i, None if error is None else f"{error} (call {i})")
        assert table.num_rows == rows + i
        del table
    gc.collect()
    return pa.total_allocated_bytes() - before


def test_failed_calls_leave_no_copy_of_their_error_behind() -> None:
    """30 failed calls of 2,000 rows, each with its own message: 18 MB stayed in the cache before."""
    message = "500: step llm failed: model raised ValueError: " + "the upstream said no " * 5
    assert _retained(30, 2_000, message) < 1 * MB


def test_long_answers_leave_no_constant_columns_behind() -> None:
    """40 answers of 5,000+ rows (each a row count of its own): 27 MB of metadata columns stayed before."""
    assert _retained(40, 5_000, None) < 1 * MB


def test_short_answers_share_their_constant_columns() -> None:
    """The cache still serves what it is for: a request's few rows, the same arrays call after call."""
    a, b = _table(3, None), _table(3, None)
    assert a.column("metadata.partition").chunk(0).buffers()[1].address == \
        b.column("metadata.partition").chunk(0).buffers()[1].address


def _mimalloc_resident() -> int:
    """Resident bytes of the 1 GiB+ anonymous reservations: Arrow's mimalloc arena in this process."""
    total, big = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                big = hi - lo >= 2**30 and len(head) == 5
            elif line.startswith("Rss:") and big:
                total += int(head[1]) * 1024
    return total


def _sealed_rows(directory: Path) -> list[int]:
    return [pq.ParquetFile(p).metadata.num_rows for p in sorted(directory.glob("*.parquet"))]


@pytest.mark.skipif(pa.default_memory_pool().backend_name != "mimalloc", reason="Arrow's pool here is not mimalloc")
def test_sealing_and_compacting_hand_back_what_they_freed(tmp_path: Path) -> None:
    """Five 40,000-row segments sealed by time on the store's thread, four of them merged into one:
    before, Arrow's arena kept ~38 MB more resident for good (nothing of it allocated)."""
    text = [f"a logged answer of a few words, number {i}" for i in range(40_000)]
    table = pa.table({"time": list(range(40_000)), "out.text": text})
    store = LogStore(tmp_path, segment_rows=400_000, sync_interval_s=0.01, seal_after_s=0.2)
    gc.collect()
    before = _mimalloc_resident()
    for k in range(1, 6):
        store.append("p", table, sync=False)
        deadline = time.monotonic() + 30
        while sum(_sealed_rows(tmp_path / "p")) < 40_000 * k and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(0.5)  # the round that sealed the last one has finished
    grown = _mimalloc_resident() - before
    store.close()
    assert _sealed_rows(tmp_path / "p") == [160_000, 40_000]  # sealed and merged: the work happened
    assert grown < 8 * 2**20
