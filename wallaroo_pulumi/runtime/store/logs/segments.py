"""Segment files of one pipeline's log directory: their names and numbers, the flocked Arrow
stream a writer appends to, reads that drop a torn tail, and sealing into Parquet."""

from __future__ import annotations

import fcntl
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
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
    parts: list[tuple[int, int]] = field(default_factory=list)
    """(seq, first row) of the segments compaction merged into this one (empty: never merged)."""
    stamp: tuple[int, int] | None = None  # (inode, size) of the sealed file when indexed
    data: pa.Table | None = None  # a closed segment's rows, kept in memory until it is sealed

ROW_GROUP_ROWS = 16_384
"""Rows per Parquet row group: the unit a page reads, so a page holds at most its rows plus one group."""
PARTS_KEY = b"wallaroo.parts"
_NAME = re.compile(r"^([0-9]+)\.(?:([0-9a-f]+)\.)?([a-z]+)$")  # <seq>[.<tag>].<suffix>


Segments = list[tuple[Segment, pa.Table | None]]
"""Segments by number, each with its table when it was read already (None: read it when needed)."""


def segment_path(directory: Path, seq: int, suffix: str, tag: str | None = None) -> Path:
    """`<directory>/<seq, 12 digits>[.<tag>].<suffix>`: `arrows` (being written), `parquet` (sealed),
    `pruned` (marker); a `tag` (hex) names a segment stored once under that tag (`PipelineLog.append_once`)."""
    return directory / (f"{seq:012d}.{tag}.{suffix}" if tag else f"{seq:012d}.{suffix}")


def mark_pruned(directory: Path, seq: int) -> None:
    """Record `seq` as the newest number removed (`<seq>.pruned`), so numbers never restart; the
    older markers go."""
    segment_path(directory, seq, "pruned").touch()
    for old in directory.glob("*.pruned"):
        if (seq_of(old.name, ("pruned",)) or 0) < seq:
            old.unlink(missing_ok=True)


def seq_of(name: str, suffixes: tuple[str, ...] = ("arrows", "parquet")) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match and match.group(3) in suffixes else None


def tag_of(name: str) -> str | None:
    """The tag of a sealed segment stored once (None: an ordinary segment)."""
    match = _NAME.match(name)
    return match.group(2) if match and match.group(3) == "parquet" else None


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


def write_parquet(directory: Path, seq: int, table: pa.Table, parts: list[tuple[int, int]] | None = None,
                  tag: str | None = None) -> Path:
    """Seal rows as segment `seq` (temp file + fsync + rename), in row groups of `ROW_GROUP_ROWS`
    rows (whatever batches they were appended in); `parts`: the segments merged into it."""
    final = segment_path(directory, seq, "parquet", tag)
    tmp = directory / f"{seq:012d}.{uuid.uuid4().hex}.tmp"
    table = table.replace_schema_metadata({PARTS_KEY: json.dumps(parts).encode()} if parts else None)
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(directory)
    return final


def merge_parquet(directory: Path, seq: int, paths: list[Path], schema: pa.Schema, parts: list[tuple[int, int]]) -> int:
    """Write the rows of `paths` (Parquet files of one `schema`), in order, as segment `seq`
    (temp file + fsync + rename), streaming: at most one row group is held at a time. Returns the
    rows written; raises FileNotFoundError if one of them is gone."""
    final = segment_path(directory, seq, "parquet")
    tmp = directory / f"{seq:012d}.{uuid.uuid4().hex}.tmp"
    rows = 0
    try:
        with open(tmp, "wb") as f:
            with pq.ParquetWriter(f, schema.with_metadata({PARTS_KEY: json.dumps(parts).encode()}),
                                  compression="zstd") as writer:
                pending: list[pa.Table] = []
                held = 0
                for path in paths:
                    with pq.ParquetFile(path) as source:
                        for i in range(source.num_row_groups):
                            table = source.read_row_group(i, use_threads=False).replace_schema_metadata(None)
                            pending.append(table)
                            held += table.num_rows
                            rows += table.num_rows
                            if held >= ROW_GROUP_ROWS:
                                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                                pending, held = [], 0
                if pending:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(directory)
    return rows


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


def parts_of(meta: pq.FileMetaData) -> list[tuple[int, int]]:
    raw = (meta.metadata or {}).get(PARTS_KEY)
    return [(int(a), int(b)) for a, b in json.loads(raw)] if raw else []
