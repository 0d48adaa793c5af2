"""Sealed segments a reader has fully dealt with, so it can skip them unread (a listener stream's
settled segments, D63). A sealed segment never changes: it is known by its number, rows and time
bounds; one compaction merged is known by its parts (number and rows each)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wallaroo_pulumi.runtime.store.logs.segments import Segment, Segments


@dataclass(frozen=True)
class SegmentPrint:
    """What identifies a sealed segment: a number drawn again (a reset index) has other rows or times."""

    seq: int
    rows: int
    tmin: int | None
    tmax: int | None

    def as_json(self) -> dict[str, int | None]:
        return {"seq": self.seq, "rows": self.rows, "tmin": self.tmin, "tmax": self.tmax}


def print_of(seg: Segment) -> SegmentPrint:
    return SegmentPrint(seg.seq, seg.rows, seg.tmin, seg.tmax)


def parts_of(seg: Segment) -> list[tuple[int, int]]:
    """(number, rows) of each segment compaction merged into `seg` (empty: never merged)."""
    firsts = [first for _, first in seg.parts] + [seg.rows]
    return [(seq, firsts[i + 1] - first) for i, (seq, first) in enumerate(seg.parts)]


class Settled:
    """A set of sealed segments to skip: by print, or (merged ones) when every part is in it."""

    def __init__(self, prints: Iterable[SegmentPrint] = ()) -> None:
        self._prints = set(prints)
        self._parts = {(p.seq, p.rows) for p in self._prints}

    def __len__(self) -> int:
        return len(self._prints)

    def covers(self, seg: Segment) -> bool:
        if print_of(seg) in self._prints:
            return True
        parts = parts_of(seg)
        return bool(parts) and all(part in self._parts for part in parts)


def unsettled(segs: Segments, skip: Settled | None) -> Segments:
    """`segs` less the sealed ones (not in memory) that `skip` covers."""
    if not skip:
        return segs
    return [(seg, table) for seg, table in segs if table is not None or not skip.covers(seg)]


def sealed_within(prints: Iterable[SegmentPrint], start_ms: int, end_ms: int) -> list[SegmentPrint]:
    """The sealed segments whose rows all lie in [start_ms, end_ms): a reader of that window saw every one of their rows."""
    return [p for p in prints if p.tmin is not None and p.tmax is not None and start_ms <= p.tmin and p.tmax < end_ms]
