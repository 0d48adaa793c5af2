"""Compaction of a pipeline's log: which runs of small sealed segments to merge, and merging one
run into one Parquet file that keeps its rows, their order and every merged segment's number."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from wallaroo_pulumi.runtime.store.fsync import fsync_dir
from wallaroo_pulumi.runtime.store.logs.segments import Segment, merge_parquet, segment_path, tag_of


def runs_to_merge(sealed: list[Segment], unsealed: set[int], segment_rows: int, min_files: int) -> list[list[Segment]]:
    """Runs of `sealed` (by number) each under a quarter of `segment_rows`, at least `min_files` in
    a row, up to `segment_rows` rows together, one schema, no number of `unsealed` between them.
    A segment stored once under a tag (`append_once`) stays as it is: its name says it was stored."""
    small = max(1, segment_rows // 4)
    runs: list[list[Segment]] = []
    run: list[Segment] = []
    for seg in sealed:
        small_one = seg.rows < small and tag_of(seg.path.name) is None
        fits = small_one and sum(s.rows for s in run) + seg.rows <= segment_rows
        broken = bool(run) and (any(run[-1].seq < u < seg.seq for u in unsealed)
                                or not seg.schema.equals(run[0].schema))
        if not fits or broken:
            runs.append(run)
            run = []
        if small_one:
            run.append(seg)
    runs.append(run)
    return [r for r in runs if len(r) >= min_files]


def merge_run(directory: Path, group: list[Segment]) -> Segment | None:
    """Merge `group` into one file under the last one's number (atomically replaced), recording
    every merged segment as a part; the merged segment, or None when one of them was pruned or
    replaced meanwhile."""
    parts, first_row = [], 0
    for seg in group:
        parts += [(s, first_row + r) for s, r in (seg.parts or [(seg.seq, 0)])]
        first_row += seg.rows
    head = group[-1]  # the last number: numbers are never drawn again
    try:
        rows = merge_parquet(directory, head.seq, [s.path for s in group], head.schema, parts)
    except (FileNotFoundError, pa.ArrowInvalid):
        return None
    for seg in group[:-1]:
        seg.path.unlink(missing_ok=True)
    fsync_dir(directory)
    st = segment_path(directory, head.seq, "parquet").stat()
    tmins = [s.tmin for s in group if s.tmin is not None]
    tmaxs = [s.tmax for s in group if s.tmax is not None]
    return Segment(head.seq, head.path, rows, min(tmins) if tmins else None, max(tmaxs) if tmaxs else None,
                   head.schema, parts=parts, stamp=(st.st_ino, st.st_size))
