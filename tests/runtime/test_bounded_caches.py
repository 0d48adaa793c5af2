"""What the data plane caches per request stays bounded in bytes as well as entries (issue 26's soak,
D62): the constant metadata columns of a result table are shared only for a request's few rows,
and an error's text, different call after call, is never kept. Real Arrow memory, counted by
Arrow's own allocator."""

from __future__ import annotations

import gc

import pyarrow as pa

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
