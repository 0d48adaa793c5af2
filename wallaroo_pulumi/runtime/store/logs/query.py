"""One page of a log query over a pipeline's segments: time and cursor filters, Asc/Desc order,
the page status, and the cursor to go on from (url-safe base64 of `<seq>.<row>` of the last row returned)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from wallaroo_pulumi.runtime.store.logs.segments import Segment, Segments
from wallaroo_pulumi.runtime.store.logs.time_column import TIME_TYPE

Order = Literal["Asc", "Desc"]


@dataclass
class LogPage:
    table: pa.Table
    cursor: str | None
    """Pass back as `cursor` to get the next page (None when nothing more)."""
    status: str
    """All (nothing more) | RecordLimited (limit reached) | SchemaChange (next rows have another schema)."""


def encode_cursor(seq: int, row: int) -> str:
    return base64.urlsafe_b64encode(f"{seq}.{row}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        seq, row = raw.split(".")
        return int(seq), int(row)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cursor {cursor!r} is not a cursor this log store issued") from exc


def read_page(
    segs: Segments,
    read: Callable[[Segment], pa.Table | None],
    after: tuple[int, int] | None,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    order: Order,
) -> LogPage:
    """Up to `limit` rows of `segs` (by number) after position `after`; `read` loads a segment not read
    yet, None when it is gone."""
    if order == "Desc":
        segs.reverse()
    pieces: list[pa.Table] = []
    schema: pa.Schema | None = None
    taken = 0
    last_pos: tuple[int, int] | None = None
    status = "All"
    for seg, table in segs:
        if after is not None:
            if order == "Asc" and seg.seq < after[0]:
                continue
            if order == "Desc" and seg.seq > after[0]:
                continue
        if seg.tmin is not None and end_ms is not None and seg.tmin >= end_ms:
            continue
        if seg.tmax is not None and start_ms is not None and seg.tmax < start_ms:
            continue
        if table is None:
            table = read(seg)
            if table is None:
                continue
        rows = pa.array(range(table.num_rows), pa.int64())
        ms = table.column("time").cast(pa.int64())
        mask = pa.array([True] * table.num_rows)
        if start_ms is not None:
            mask = pc.and_(mask, pc.greater_equal(ms, start_ms))
        if end_ms is not None:
            mask = pc.and_(mask, pc.less(ms, end_ms))
        if after is not None and seg.seq == after[0]:
            mask = pc.and_(mask, pc.greater(rows, after[1]) if order == "Asc" else pc.less(rows, after[1]))
        picked = table.filter(mask)
        picked_rows = rows.filter(mask)
        if picked.num_rows == 0:
            continue
        if order == "Desc":
            idx = pa.array(range(picked.num_rows - 1, -1, -1), pa.int64())
            picked = picked.take(idx)
            picked_rows = picked_rows.take(idx)
        if schema is not None and not picked.schema.equals(schema):
            try:
                pa.unify_schemas([schema, picked.schema], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                status = "SchemaChange"
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
            break
    if pieces:
        out = pa.concat_tables(pieces, promote_options="permissive")
    else:
        out = pa.table({"time": pa.array([], TIME_TYPE)})
    if status == "RecordLimited" and not _has_more(segs, last_pos, start_ms, end_ms, order):
        status = "All"
    next_cursor = encode_cursor(*last_pos) if status != "All" and last_pos else None
    return LogPage(out, next_cursor, status)


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
            if seg.tmin is not None and end_ms is not None and seg.tmin >= end_ms:
                continue
            if seg.tmax is not None and start_ms is not None and seg.tmax < start_ms:
                continue
            return True
    return False
