"""One page of a log query over a pipeline's segments: time and cursor filters, Asc/Desc order,
the page status, and the cursor to go on from (url-safe base64 of `<seq>.<row>` of the last row returned).

A page reads only what it returns: a segment is read by row group (sealed Parquet segments are
written in groups of `ROW_GROUP_ROWS` rows, each with its time bounds), groups before the cursor
or outside the window are skipped unread, and reading stops once the page is full. Page N of a
window therefore never re-reads pages 1..N-1, and a page holds at most `limit` rows plus one group.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wallaroo_pulumi.runtime.store.logs.segments import Segment, Segments
from wallaroo_pulumi.runtime.store.logs.time_column import TIME_TYPE

Order = Literal["Asc", "Desc"]
Group = tuple[int, int, int | None, int | None]
"""A readable piece of a segment: (first row, rows, oldest time ms, newest time ms)."""


@dataclass
class LogPage:
    table: pa.Table
    cursor: str | None
    """Pass back as `cursor` to get the next page (None when nothing more)."""
    status: str
    """All (nothing more) | RecordLimited (limit reached) | SchemaChange (next rows have another schema)."""
    floor_ms: int | None = None
    """(Asc) no row after this page is older than this (epoch ms): what a reader keeps per row
    (e.g. a listener run's duplicate counts) may drop rows older than it. None: unknown / nothing more."""


class Source(Protocol):
    groups: list[Group]

    def read(self, index: int, columns: list[str] | None) -> pa.Table: ...

    def close(self) -> None: ...


class TableSource:
    """Rows already in memory (an active segment): one group."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.groups: list[Group] = [(0, table.num_rows, None, None)]

    def read(self, index: int, columns: list[str] | None) -> pa.Table:
        if columns is None:
            return self.table
        return self.table.select([c for c in self.table.column_names if c in columns])

    def close(self) -> None:
        pass


READS: list[str] = []
"""`<file>#<row group>` of every group read while `count_reads(True)` (a test hook)."""
_COUNT_READS = False


def count_reads(on: bool) -> None:
    """Record every Parquet row group read in `READS` (for tests proving pages never re-read)."""
    global _COUNT_READS
    _COUNT_READS = on
    READS.clear()


class ParquetSource:
    """A sealed segment, read one row group at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = pq.ParquetFile(path)
        meta = self.file.metadata
        names = self.file.schema_arrow.names
        self.names = names
        tcol = names.index("time") if "time" in names else None
        self.groups = []
        start = 0
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            lo = hi = None
            if tcol is not None:
                stats = rg.column(tcol).statistics
                if stats is not None and stats.has_min_max:
                    lo, hi = _ms(stats.min), _ms(stats.max)
            self.groups.append((start, rg.num_rows, lo, hi))
            start += rg.num_rows

    def read(self, index: int, columns: list[str] | None) -> pa.Table:
        if _COUNT_READS:
            READS.append(f"{self.path.name}#{index}")
        cols = None if columns is None else [c for c in self.names if c in columns]
        table = self.file.read_row_group(index, columns=cols)
        return table.replace_schema_metadata(None)

    def close(self) -> None:
        self.file.close()


def _ms(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    ts = getattr(value, "timestamp", None)
    return int(round(ts() * 1000)) if ts is not None else None


def encode_cursor(seq: int, row: int) -> str:
    return base64.urlsafe_b64encode(f"{seq}.{row}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        seq, row = raw.split(".")
        return int(seq), int(row)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cursor {cursor!r} is not a cursor this log store issued") from exc


def _remap(segs: Segments, after: tuple[int, int]) -> tuple[int, int]:
    """A cursor into a segment compaction merged into another: the same row in the merged one."""
    if any(seg.seq == after[0] for seg, _ in segs):
        return after
    for seg, _ in segs:
        for part_seq, first_row in seg.parts:
            if part_seq == after[0]:
                return seg.seq, first_row + after[1]
    return after


def read_page(
    segs: Segments,
    open_source: Callable[[Segment], Source | None],
    after: tuple[int, int] | None,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    order: Order,
    columns: list[str] | None = None,
) -> LogPage:
    """Up to `limit` rows of `segs` (by number) after position `after`; `open_source` opens a segment
    not in memory, None when it is gone. `columns`: only these (and `time`)."""
    if columns is not None and "time" not in columns:
        columns = ["time", *columns]
    if after is not None:
        after = _remap(segs, after)
    if order == "Desc":
        segs.reverse()
    pieces: list[pa.Table] = []
    schema: pa.Schema | None = None
    taken = 0
    last_pos: tuple[int, int] | None = None
    status = "All"
    done = False
    rest_min: int | None = None  # (Asc) the oldest time in the groups of the last segment not passed yet
    for seg, table in segs:
        if after is not None and (seg.seq < after[0] if order == "Asc" else seg.seq > after[0]):
            continue  # the cursor is past it
        if not _in_window(seg.tmin, seg.tmax, start_ms, end_ms):
            continue
        src = TableSource(table) if table is not None else open_source(seg)
        if src is None:
            continue
        try:
            groups = list(enumerate(src.groups))
            if order == "Desc":
                groups.reverse()
            after_row = after[1] if after is not None and seg.seq == after[0] else None
            for index, (first, count, gmin, gmax) in groups:
                if after_row is not None and (first + count - 1 <= after_row if order == "Asc" else first >= after_row):
                    continue  # the cursor is past it
                if not _in_window(gmin, gmax, start_ms, end_ms):
                    continue
                picked, picked_rows = _pick_rows(src.read(index, columns), first, after_row, start_ms, end_ms, order)
                if picked.num_rows == 0:
                    continue
                if schema is not None and not _unifies(schema, picked.schema):
                    status = "SchemaChange"
                    done = True
                    break
                want = limit - taken
                if picked.num_rows > want:
                    picked = picked.slice(0, want)
                    picked_rows = picked_rows.slice(0, want)
                    status = "RecordLimited"
                pieces.append(picked)
                schema = picked.schema if schema is None else schema
                taken += picked.num_rows
                last_pos = (seg.seq, picked_rows[-1].as_py())
                if taken >= limit:
                    status = "RecordLimited"
                    done = True
                    if order == "Asc":
                        lows = [g[2] for g in src.groups[index:]]
                        rest_min = min(lows) if lows and None not in lows else None  # type: ignore[type-var]
                    break
        finally:
            src.close()
        if done:
            break
    if pieces:
        out = pa.concat_tables(pieces, promote_options="permissive")
    else:
        out = pa.table({"time": pa.array([], TIME_TYPE)})
    if status == "RecordLimited" and not _has_more(segs, last_pos, start_ms, end_ms, order):
        status = "All"
    next_cursor = encode_cursor(*last_pos) if status != "All" and last_pos else None
    floor = _floor(segs, last_pos, start_ms, end_ms, rest_min) if next_cursor and order == "Asc" else None
    return LogPage(out, next_cursor, status, floor)


def _unifies(schema: pa.Schema, other: pa.Schema) -> bool:
    """Whether rows of `other` can stand in one table with rows of `schema`."""
    if other.equals(schema):
        return True
    try:
        pa.unify_schemas([schema, other], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def _pick_rows(part: pa.Table, first: int, after_row: int | None, start_ms: int | None, end_ms: int | None,
               order: Order) -> tuple[pa.Table, pa.Array]:
    """The rows of one row group (numbered from `first`) in the time window and past the cursor's
    row `after_row`, in `order`; with their row numbers."""
    rows = pa.array(np.arange(first, first + part.num_rows, dtype=np.int64))
    mask = None
    if start_ms is not None or end_ms is not None:
        ms = part.column("time").cast(pa.int64())
        if start_ms is not None:
            mask = pc.greater_equal(ms, start_ms)
        if end_ms is not None:
            m = pc.less(ms, end_ms)
            mask = m if mask is None else pc.and_(mask, m)
    if after_row is not None:
        m = pc.greater(rows, after_row) if order == "Asc" else pc.less(rows, after_row)
        mask = m if mask is None else pc.and_(mask, m)
    picked, picked_rows = (part, rows) if mask is None else (part.filter(mask), rows.filter(mask))
    if order == "Desc" and picked.num_rows:
        idx = pa.array(np.arange(picked.num_rows - 1, -1, -1, dtype=np.int64))
        picked, picked_rows = picked.take(idx), picked_rows.take(idx)
    return picked, picked_rows


def _in_window(tmin: int | None, tmax: int | None, start_ms: int | None, end_ms: int | None) -> bool:
    if tmin is not None and end_ms is not None and tmin >= end_ms:
        return False
    return not (tmax is not None and start_ms is not None and tmax < start_ms)


def _floor(
    segs: Segments, last_pos: tuple[int, int] | None, start_ms: int | None, end_ms: int | None, rest_min: int | None
) -> int | None:
    """The oldest time any row after `last_pos` may have (Asc): the oldest of the segments not done
    yet (for the one the page stopped in, of its row groups not passed yet when known)."""
    if last_pos is None:
        return None
    lows = []
    for seg, _table in segs:
        if seg.seq >= last_pos[0] and _in_window(seg.tmin, seg.tmax, start_ms, end_ms):
            low = rest_min if seg.seq == last_pos[0] and rest_min is not None else seg.tmin
            if low is None:
                return None
            lows.append(low)
    return min(lows) if lows else None


def _has_more(
    segs: Segments, last_pos: tuple[int, int] | None, start_ms: int | None, end_ms: int | None, order: Order
) -> bool:
    """Cheap check (segment bounds only) so a page that ends exactly at the end says All."""
    if last_pos is None:
        return False
    seq, row = last_pos
    for seg, _table in segs:
        beyond = seg.seq > seq if order == "Asc" else seg.seq < seq
        if seg.seq == seq:
            if (order == "Asc" and row < seg.rows - 1) or (order == "Desc" and row > 0):
                return True
        elif beyond:
            if not _in_window(seg.tmin, seg.tmax, start_ms, end_ms):
                continue
            return True
    return False
