"""Segment files of one pipeline's log directory: their names and numbers, the flocked Arrow
stream a writer appends to, reads that drop a torn tail, and sealing into Parquet."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from wallaroo_pulumi.runtime.store.fsync import fsync_dir


@dataclass
class Segment:
    seq: int
    path: Path
    rows: int
    tmin: int | None  # epoch ms
    tmax: int | None
    schema: pa.Schema
    handle: Any = None  # our open (and flocked) stream file, until the segment is sealed


Segments = list[tuple[Segment, pa.Table | None]]
"""Segments by number, each with its table when it was read already (None: read it when needed)."""


def segment_path(directory: Path, seq: int, suffix: str) -> Path:
    """`<directory>/<seq, 12 digits>.<suffix>`: `arrows` (being written), `parquet` (sealed), `pruned` (marker)."""
    return directory / f"{seq:012d}.{suffix}"


def seq_of(name: str, suffixes: tuple[str, ...] = ("arrows", "parquet")) -> int | None:
    stem, _, suffix = name.partition(".")
    return int(stem) if suffix in suffixes and stem.isdigit() else None


def read_stream_file(path: Path) -> pa.Table | None:
    """All complete batches of an IPC stream file; a torn tail is ignored."""
    batches = []
    schema = None
    try:
        with open(path, "rb") as f:
            reader = pa.ipc.open_stream(f)
            schema = reader.schema
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
    except (pa.ArrowInvalid, OSError, EOFError):
        pass
    if schema is None:
        return None
    return pa.Table.from_batches(batches, schema=schema)


def try_lock(path: Path) -> Any:
    """The file opened and exclusively flocked, or None when another process holds it (or it is gone)."""
    try:
        handle = open(path, "rb")
    except OSError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def create_stream(directory: Path, next_seq: Callable[[], int]) -> tuple[int, Path, Any]:
    """A new stream segment file, created exclusively and flocked: no two writers share a number."""
    # Locked before it has its name (link of a locked temp file), so no reader can ever
    # take a fresh peer segment for an orphan.
    tmp = directory / f"writer.{uuid.uuid4().hex}.tmp"
    handle = open(tmp, "xb")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        while True:
            seq = next_seq()
            path = segment_path(directory, seq, "arrows")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue  # a peer took the number between our listing and our link: list again
            return seq, path, handle
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(directory: Path, seq: int, table: pa.Table) -> Path:
    """Seal rows as segment `seq` (temp file + fsync + rename)."""
    final = segment_path(directory, seq, "parquet")
    tmp = directory / f"{seq:012d}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(directory)
    return final


def seal_orphan(directory: Path, stream: Path) -> bool:
    """Seal a stream segment whose writer is gone (its flock is free); False if a live peer holds it."""
    handle = try_lock(stream)
    if handle is None:
        return False
    try:
        seq = seq_of(stream.name)
        if seq is not None and not segment_path(directory, seq, "parquet").exists():
            table = read_stream_file(stream)
            if table is not None and table.num_rows:
                write_parquet(directory, seq, table)
        stream.unlink(missing_ok=True)
    finally:
        handle.close()
    return True


def read_segment(directory: Path, seg: Segment) -> pa.Table:
    """A segment's rows; raises FileNotFoundError when log retention removed it."""
    if seg.path.suffix == ".arrows":
        table = read_stream_file(seg.path) if seg.path.exists() else None
        if table is not None:
            return table
        # sealed meanwhile by the background thread
        return pq.read_table(segment_path(directory, seg.seq, "parquet"))
    return pq.read_table(seg.path)
