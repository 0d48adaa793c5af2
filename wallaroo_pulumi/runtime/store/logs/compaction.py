"""Compaction of one pipeline's segment log: runs of small sealed segments merged into one, their
numbers kept as its parts (cursors stay valid); segments stored once under a tag are left alone."""

from __future__ import annotations

import fcntl
import os
from typing import TYPE_CHECKING

import pyarrow as pa

from wallaroo_pulumi.runtime.store.fsync import fsync_dir
from wallaroo_pulumi.runtime.store.logs.segments import Segment, merge_parquet, segment_path, seq_of, tag_of

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.store.logs.pipeline_log import PipelineLog


def compact(log: PipelineLog) -> int:
    """Merge runs of small sealed segments (each under a quarter of `segment_rows`, at least
    `compact_min_files` of them in a row, nothing unsealed between them) into one, up to
    `segment_rows` rows; the merged file takes the last one's number and records all of them
    as its parts, so cursors into any of them stay valid. Rows and their order are kept.
    One process at a time (flock on `compact.lock`); returns how many files were merged away."""
    if not _runs_to_merge(log):
        return 0
    with open(log.dir / "compact.lock", "a+b") as lock:  # only created when there is work
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # a peer is compacting
        log._peer_segments(read_live=False)
        return sum(_merge(log, group) for group in _runs_to_merge(log))


def _runs_to_merge(log: PipelineLog) -> list[list[Segment]]:
    small = max(1, log.segment_rows // 4)
    unsealed = {seq for seq in (seq_of(n, ("arrows",)) for n in os.listdir(log.dir)) if seq is not None}
    with log.lock:
        unsealed |= {s.seq for s in log.closed}
        if log.active_seq is not None:
            unsealed.add(log.active_seq)
        sealed = sorted(log.sealed, key=lambda s: s.seq)
    runs: list[list[Segment]] = []
    run: list[Segment] = []
    for seg in sealed:  # a tagged segment stays as it is: its name says it was stored
        small_one = seg.rows < small and tag_of(seg.path.name) is None
        fits = small_one and sum(s.rows for s in run) + seg.rows <= log.segment_rows
        broken = bool(run) and (any(run[-1].seq < u < seg.seq for u in unsealed)
                                or not seg.schema.equals(run[0].schema))
        if not fits or broken:
            runs.append(run)
            run = []
        if small_one:
            run.append(seg)
    runs.append(run)
    return [r for r in runs if len(r) >= log.compact_min_files]


def _merge(log: PipelineLog, group: list[Segment]) -> int:
    parts, first_row = [], 0
    for seg in group:
        parts += [(s, first_row + r) for s, r in (seg.parts or [(seg.seq, 0)])]
        first_row += seg.rows
    head = group[-1]  # the last number: numbers are never drawn again
    try:  # atomically replaces the last file
        rows = merge_parquet(log.dir, head.seq, [s.path for s in group], head.schema, parts)
    except (FileNotFoundError, pa.ArrowInvalid):
        return 0  # pruned or being replaced meanwhile: merged next time
    for seg in group[:-1]:
        seg.path.unlink(missing_ok=True)
    fsync_dir(log.dir)
    st = segment_path(log.dir, head.seq, "parquet").stat()
    tmins = [s.tmin for s in group if s.tmin is not None]
    tmaxs = [s.tmax for s in group if s.tmax is not None]
    merged = Segment(head.seq, head.path, rows, min(tmins) if tmins else None, max(tmaxs) if tmaxs else None,
                     head.schema, parts=parts, stamp=(st.st_ino, st.st_size))
    drop = {s.seq for s in group}
    with log.lock:
        log.sealed = sorted([s for s in log.sealed if s.seq not in drop] + [merged], key=lambda s: s.seq)
    return len(group) - 1
