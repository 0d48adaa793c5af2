"""The `time` column every log row carries: its Arrow type, how an appended table gets it, and
how bounds and query limits become epoch milliseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

TIME_TYPE = pa.timestamp("ms", tz="UTC")


def normalize(table: pa.Table) -> pa.Table:
    """Make `time` a timestamp[ms, UTC] column (adding `now` when missing), first."""
    now_ms = int(time.time() * 1000)
    if "time" not in table.schema.names:
        table = table.add_column(0, "time", pa.array([now_ms] * table.num_rows, pa.int64()).cast(TIME_TYPE))
    col = table.column("time")
    if col.type != TIME_TYPE:
        if pa.types.is_timestamp(col.type):
            if col.type.tz is None:
                col = pc.assume_timezone(col, "UTC") if col.type.unit == "ms" else col
            col = col.cast(TIME_TYPE)
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            col = col.cast(pa.int64()).cast(TIME_TYPE)
        else:
            raise ValueError(f"log column 'time' must be a timestamp or epoch ms, got {col.type}")
        table = table.set_column(table.schema.names.index("time"), "time", col)
    return table


def to_ms(value: datetime | int | float | str | None) -> int | None:
    """A query bound (datetime, ISO string or epoch ms) as epoch ms; naive datetimes are UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    return int(value)


def bounds(table: pa.Table) -> tuple[int | None, int | None]:
    """Oldest and newest `time` of a normalized table in epoch ms; (None, None) when it is empty."""
    if table.num_rows == 0:
        return None, None
    ms = table.column("time").cast(pa.int64())
    mm = pc.min_max(ms)
    return mm["min"].as_py(), mm["max"].as_py()
