"""What other writers did to a pipeline's shared log directory since one `PipelineLog` last looked:
their new sealed segments, ours that they compacted or pruned, and their active stream segments."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from wallaroo_pulumi.runtime.store.logs.segments import (
    Segment,
    Segments,
    parts_of,
    read_stream_file,
    seal_orphan,
    segment_path,
    seq_of,
)
from wallaroo_pulumi.runtime.store.logs.time_column import bounds


def read_sealed(path: Path) -> Segment | None:
    """One Parquet segment indexed (ours or a peer's; sealed files never change); None when the name is
    no segment's or the file is being replaced (tmp + rename) or removed: the next listing sees it."""
    seq = seq_of(path.name)
    if seq is None:
        return None
    try:
        st = path.stat()
        meta = pq.read_metadata(path)
        tmin = tmax = None
        if meta.num_rows:
            tmin, tmax = bounds(pq.read_table(path, columns=["time"]))
        schema = meta.schema.to_arrow_schema().remove_metadata()
    except (OSError, pa.ArrowInvalid):
        return None
    return Segment(seq, path, meta.num_rows, tmin, tmax, schema, parts=parts_of(meta),
                   stamp=(st.st_ino, st.st_size))


@dataclasses.dataclass
class PeerScan:
    drop: set[int]  # our sealed segments whose file is gone or was rewritten (compacted elsewhere)
    found: list[Segment]  # sealed segments to index: peers' new ones, ours rewritten, orphans sealed here
    live: Segments  # peers' active stream segments, read now


def scan_peers(directory: Path, sealed: dict[int, Segment], ours: set[int], read_live: bool) -> PeerScan:
    """List `directory` against what we hold (`sealed` by number, `ours`: every number we wrote); a
    peer's stream segment is sealed here if its writer died, else read now unless `read_live` is False."""
    names = sorted(os.listdir(directory))
    parquet = {seq for seq in (seq_of(n) for n in names if n.endswith(".parquet")) if seq is not None}
    scan = PeerScan({seq for seq in sealed if seq not in parquet}, [], [])  # gone: pruned or merged elsewhere
    for name in names:
        seq = seq_of(name)
        if seq is None:
            continue
        path = directory / name
        if seq in ours:
            seg = sealed.get(seq)
            if seg is not None and name.endswith(".parquet"):
                try:
                    st = path.stat()
                except OSError:
                    continue
                if seg.stamp is not None and seg.stamp != (st.st_ino, st.st_size):  # compacted elsewhere
                    scan.drop.add(seq)
                    _found(scan, path)
            continue
        if name.endswith(".parquet"):
            _found(scan, path)
        elif seq not in parquet:
            if seal_orphan(directory, path):
                _found(scan, segment_path(directory, seq, "parquet"))
            elif read_live:
                table = read_stream_file(path)
                if table is not None and table.num_rows:
                    tmin, tmax = bounds(table)
                    scan.live.append((Segment(seq, path, table.num_rows, tmin, tmax, table.schema), table))
    return scan


def _found(scan: PeerScan, path: Path) -> None:
    seg = read_sealed(path)
    if seg is not None:
        scan.found.append(seg)
