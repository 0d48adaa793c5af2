"""Row keys of a listener run: one per logged row, stable across runs (its time, a hash of its
inputs, outputs and metadata, and a count among identical rows), so a stream scores each row once.
What a run holds for them is bounded (`prune_seen`, `held_bytes`)."""

from __future__ import annotations

import hashlib
from collections import Counter

import pyarrow as pa

KEY_PREFIXES = ("in.", "out.")
KEY_EXTRA = ("metadata.pipeline_version", "metadata.partition")


def _key_columns(table: pa.Table) -> list[str]:
    return sorted(c for c in table.column_names if c.startswith(KEY_PREFIXES) or c in KEY_EXTRA)


def row_keys(table: pa.Table, seen: Counter) -> list[str]:
    times = table.column("time").cast(pa.int64()).to_pylist()
    cols = _key_columns(table)
    values = [table.column(c).to_pylist() for c in cols]
    keys = []
    for i, t in enumerate(times):
        parts = [f"{c}={values[j][i]!r}" for j, c in enumerate(cols) if values[j][i] is not None]
        h = hashlib.blake2b(("\x1f".join(parts)).encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
        base = f"{t}:{h}"
        n = seen[base]
        seen[base] = n + 1
        keys.append(f"{base}:{n}")
    return keys


def prune_seen(seen: Counter, floor_ms: int | None) -> None:
    """Forget the duplicate counts of rows older than `floor_ms`: no row still to come is that old
    (the log store says so per page), so the counts a run keeps follow its pages, not its window."""
    if floor_ms is None or not seen:
        return
    for k in [k for k in seen if int(k.partition(":")[0]) < floor_ms]:
        del seen[k]


def page_keys(table: pa.Table, seen: Counter, floor_ms: int | None) -> list[str]:
    keys = row_keys(table, seen)
    prune_seen(seen, floor_ms)
    return keys


_SEEN_ENTRY_BYTES = 160  # a Counter entry: its key string (~40 chars) and the dict slot


def held_bytes(table: pa.Table, seen: Counter) -> int:
    """What a run holds for one page: the page's Arrow buffers, about as much again in the Python
    lists it scores from, and the duplicate counts it keeps."""
    return 2 * table.get_total_buffer_size() + _SEEN_ENTRY_BYTES * len(seen)
