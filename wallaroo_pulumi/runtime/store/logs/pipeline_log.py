"""`PipelineLog`: one pipeline's segment log. It appends to an active stream segment, rotates it
(by rows, bytes or age), seals closed segments into Parquet, compacts small sealed ones, recovers
orphans, indexes peers' segments (found by `peers.py`) and prunes old ones."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from contextlib import suppress
from pathlib import Path

import pyarrow as pa

from wallaroo_pulumi.runtime.store.fsync import fsync_dir
from wallaroo_pulumi.runtime.store.logs.compaction import merge_run, runs_to_merge
from wallaroo_pulumi.runtime.store.logs.peers import read_sealed, scan_peers
from wallaroo_pulumi.runtime.store.logs.query import LogPage, Order, ParquetSource, Source, decode_cursor, read_page
from wallaroo_pulumi.runtime.store.logs.segments import (
    Segment,
    Segments,
    create_stream,
    mark_pruned,
    read_stream_file,
    seal_orphan,
    segment_path,
    seq_of,
    write_parquet,
)
from wallaroo_pulumi.runtime.store.logs.settled import SegmentPrint, Settled, print_of, unsettled
from wallaroo_pulumi.runtime.store.logs.time_column import bounds

logger = logging.getLogger(__name__)

_STALE_TMP_S = 600.0
_COALESCE_BATCHES = 64  # the active segment's in-memory batches are merged into one past this many


class PipelineLog:
    def __init__(
        self, directory: Path, segment_rows: int, segment_bytes: int, seal_after_s: float = 60.0,
        compact_min_files: int = 4,
    ) -> None:
        self.dir = directory
        self.segment_rows = segment_rows
        self.segment_bytes = segment_bytes
        self.seal_after_s = seal_after_s
        self.compact_min_files = compact_min_files  # 0: never compact (a shipper moves sealed files away)
        self.active_batches: list[pa.RecordBatch] = []  # our active segment's rows, for readers
        self.active_coalesced = 0  # how many of them are already merged ones
        self.active_opened = 0.0  # monotonic
        self.lock = threading.RLock()
        self.sealed: list[Segment] = []
        self.active_seq: int | None = None
        self.active_path: Path | None = None
        self.active_file = None
        self.active_writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.active_schema: pa.Schema | None = None
        self.active_rows = 0
        self.active_bytes = 0
        self.active_tmin: int | None = None
        self.active_tmax: int | None = None
        self.dirty = False
        self.closed: list[Segment] = []
        self.seal_lock = threading.Lock()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._recover()

    # -- startup ---------------------------------------------------------
    def _recover(self) -> None:
        stale = time.time() - _STALE_TMP_S
        for tmp in self.dir.glob("*.tmp"):  # a live peer's temp files are younger
            with suppress(OSError):
                if tmp.stat().st_mtime < stale:
                    tmp.unlink()
        for stream in sorted(self.dir.glob("*.arrows")):
            seal_orphan(self.dir, stream)
        self._index([seg for seg in map(read_sealed, sorted(self.dir.glob("*.parquet"))) if seg is not None])

    def _index(self, found: list[Segment], drop: frozenset[int] | set[int] = frozenset()) -> None:
        """Drop the sealed segments numbered in `drop`, then add those in `found` not indexed yet."""
        with self.lock:
            self.sealed = [s for s in self.sealed if s.seq not in drop]
            held = {s.seq for s in self.sealed}
            for seg in found:
                if seg.seq not in held:
                    self.sealed.append(seg)
                    held.add(seg.seq)
            self.sealed.sort(key=lambda s: s.seq)

    def _next_seq(self) -> int:
        # `.pruned`: the number of the newest segment log retention deleted, so numbers never restart
        on_disk = [seq for seq in (seq_of(n, ("arrows", "parquet", "pruned")) for n in os.listdir(self.dir))
                   if seq is not None]
        last = max([s.seq for s in self.sealed] + [s.seq for s in self.closed] + on_disk + [0])
        if self.active_seq is not None:
            last = max(last, self.active_seq)
        return last + 1

    # -- writing ---------------------------------------------------------
    def _rotate(self) -> None:
        """Close the active segment (fsynced) and queue it for sealing into Parquet."""
        if self.active_writer is None:
            return
        try:
            self.active_writer.close()
            self.active_file.flush()
            os.fsync(self.active_file.fileno())
        except (OSError, ValueError):  # the stream file failed under us: its rows are sealed from memory
            logger.exception("closing log segment %s", self.active_path)
        if self.active_rows:  # the file stays open, and flocked, until it is sealed
            self.closed.append(
                Segment(self.active_seq, self.active_path, self.active_rows, self.active_tmin, self.active_tmax,
                        self.active_schema, self.active_file, data=self._active_table())
            )
        else:
            self.active_path.unlink(missing_ok=True)
            self.active_file.close()
        self.active_writer = None
        self.active_file = None
        self.active_path = None
        self.active_seq = None
        self.active_schema = None
        self.active_rows = self.active_bytes = 0
        self.active_tmin = self.active_tmax = None
        self.active_batches = []
        self.active_coalesced = 0
        self.dirty = False

    def _remember(self, table: pa.Table) -> None:
        """Keep an appended table for readers of the active segment, coalesced: every
        `_COALESCE_BATCHES` small batches become one, and as many of those one again."""
        self.active_batches.extend(table.to_batches())
        if len(self.active_batches) - self.active_coalesced > _COALESCE_BATCHES:
            tail = pa.Table.from_batches(self.active_batches[self.active_coalesced:], schema=self.active_schema)
            self.active_batches[self.active_coalesced:] = tail.combine_chunks().to_batches()
            self.active_coalesced = len(self.active_batches)
            if self.active_coalesced > _COALESCE_BATCHES:
                self.active_batches = self._active_table().combine_chunks().to_batches()
                self.active_coalesced = len(self.active_batches)

    def _active_table(self) -> pa.Table | None:
        if not self.active_batches:
            return None
        return pa.Table.from_batches(self.active_batches, schema=self.active_schema)

    def quiet_for(self) -> float | None:
        """How long the background round has nothing to do here: 0 while rows wait for an fsync or a
        closed segment waits to be sealed; the time until the active segment is due to seal by age;
        None when there is neither."""
        with self.lock:
            if self.dirty or self.closed:
                return 0.0
            if self.active_writer is not None and self.seal_after_s > 0:
                return max(0.0, self.active_opened + self.seal_after_s - time.monotonic())
            return None

    def rotate_if_old(self) -> bool:
        """Close the active segment once it is `seal_after_s` old (sealed by time as well as by
        size); True when a closed segment waits to be sealed."""
        with self.lock:
            if (self.active_writer is not None and self.seal_after_s > 0
                    and time.monotonic() - self.active_opened >= self.seal_after_s):
                self._rotate()
            return bool(self.closed)

    def seal_pending(self) -> None:
        """Convert closed stream segments to Parquet (temp + fsync + rename). Runs off the
        append path (the store's background thread) unless appends are synchronous."""
        with self.seal_lock:
            while True:
                with self.lock:
                    if not self.closed:
                        return
                    seg = self.closed[0]
                table = seg.data if seg.data is not None else read_stream_file(seg.path)
                path = write_parquet(self.dir, seg.seq, table) if table is not None and table.num_rows else None
                with self.lock:
                    self.closed.pop(0)
                    if path is not None:
                        st = path.stat()
                        self.sealed.append(Segment(seg.seq, path, table.num_rows, seg.tmin, seg.tmax, table.schema,
                                                   stamp=(st.st_ino, st.st_size)))
                        self.sealed.sort(key=lambda x: x.seq)
                    seg.path.unlink(missing_ok=True)
                    if seg.handle is not None:
                        seg.handle.close()  # releases the flock: nothing left to recover
                    seg.data = None
                if self.compact_min_files:
                    self.compact()

    def append(self, table: pa.Table, sync: bool = True) -> bool:
        """Returns True when a segment was closed and waits to be sealed."""
        with self.lock:
            if self.active_writer is not None and not table.schema.equals(self.active_schema):
                self._rotate()
            if self.active_writer is None:
                self.active_seq, self.active_path, self.active_file = create_stream(self.dir, self._next_seq)
                self.active_writer = pa.ipc.new_stream(self.active_file, table.schema)
                self.active_schema = table.schema
                self.active_opened = time.monotonic()
                fsync_dir(self.dir)
            self.active_writer.write_table(table)
            self._remember(table)
            self.active_file.flush()  # in the kernel now: survives a kill -9 of this process
            if sync:
                os.fsync(self.active_file.fileno())
                self.dirty = False
            else:
                self.dirty = True
            self.active_rows += table.num_rows
            self.active_bytes += table.get_total_buffer_size()  # nbytes walks every chunk's buffers: ~0.6 ms a round
            lo, hi = bounds(table)
            if lo is not None:
                self.active_tmin = lo if self.active_tmin is None else min(self.active_tmin, lo)
                self.active_tmax = hi if self.active_tmax is None else max(self.active_tmax, hi)
            if (self.active_rows >= self.segment_rows or self.active_bytes >= self.segment_bytes
                    or (self.seal_after_s > 0 and time.monotonic() - self.active_opened >= self.seal_after_s)):
                self._rotate()
            pending = bool(self.closed)
        if pending and sync:
            self.seal_pending()
            return False
        return pending

    def seal_tagged(self, table: pa.Table, tag: str) -> None:
        """Rows sealed at once as a segment of their own named with `tag`, after every row appended so
        far (the active segment is closed first, so a cursor past them misses nothing); the rename
        of its file is the commit point of `LogStore.append_once`."""
        with self.lock:
            self._rotate()
            seq = self._next_seq()
            path = write_parquet(self.dir, seq, table, tag=tag)
            st = path.stat()
            lo, hi = bounds(table)
            self.sealed.append(Segment(seq, path, table.num_rows, lo, hi, table.schema, stamp=(st.st_ino, st.st_size)))
            self.sealed.sort(key=lambda s: s.seq)
        self.seal_pending()

    def sync(self) -> None:
        with self.lock:
            if self.dirty and self.active_file is not None:
                os.fsync(self.active_file.fileno())
            self.dirty = False

    def close(self) -> None:
        with self.lock:
            self._rotate()
        self.seal_pending()

    def cut(self) -> list[Segment]:
        """Close and seal the active segment now; every sealed segment (oldest first), for a
        shipper that moves them elsewhere and then `forget`s them."""
        self.close()
        with self.lock:
            return list(self.sealed)

    def forget(self, seg: Segment) -> None:
        """A sealed segment was moved elsewhere: drop it here (its number is never drawn again)."""
        mark_pruned(self.dir, seg.seq)
        with self.lock:
            self.sealed = [s for s in self.sealed if s.seq != seg.seq]
        seg.path.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------
    def _peer_segments(self, read_live: bool = True) -> Segments:
        """What peers wrote since we last looked: new sealed segments (indexed once; again when
        compaction rewrote the file), and their active stream segments (sealed here if their
        writer died; read now unless `read_live` is False, for callers that only need the index)."""
        with self.lock:
            sealed = {s.seq: s for s in self.sealed}
            ours = set(sealed) | {s.seq for s in self.closed}
            if self.active_seq is not None:
                ours.add(self.active_seq)
        scan = scan_peers(self.dir, sealed, ours, read_live)
        if scan.drop or scan.found:
            self._index(scan.found, scan.drop)
        return scan.live

    def _segments(self) -> Segments:
        """Sealed segments (read lazily, by row group), closed and active ones of ours (in memory)
        and peers' active ones (read now), by number. Nothing is read under the lock: an append
        never waits for a reader."""
        peers = self._peer_segments()
        with self.lock:
            segs: Segments = [(s, s.data) for s in sorted(self.sealed + self.closed, key=lambda x: x.seq)]
            if self.active_writer is not None and self.active_rows:
                table = self._active_table()
                if table is not None and table.num_rows:
                    seg = Segment(
                        self.active_seq, self.active_path, table.num_rows,
                        self.active_tmin, self.active_tmax, table.schema,
                    )
                    segs.append((seg, table))
        segs.extend(peers)
        segs.sort(key=lambda item: item[0].seq)
        return segs

    def _open(self, seg: Segment) -> Source | None:
        path = seg.path if seg.path.suffix == ".parquet" else segment_path(self.dir, seg.seq, "parquet")
        try:
            return ParquetSource(path)
        except FileNotFoundError:  # removed by log retention or merged by compaction (maybe in another process)
            with self.lock:
                self.sealed = [s for s in self.sealed if s.seq != seg.seq]
            return None

    def query(
        self, start_ms: int | None, end_ms: int | None, limit: int, order: Order, cursor: str | None,
        columns: list[str] | None = None, skip: Settled | None = None,
    ) -> LogPage:
        after: tuple[int, int] | None = decode_cursor(cursor) if cursor else None
        for _attempt in range(3):
            missing: list[int] = []

            def open_source(seg: Segment, missing: list[int] = missing) -> Source | None:
                src = self._open(seg)
                if src is None:
                    missing.append(seg.seq)
                return src

            page = read_page(unsettled(self._segments(), skip), open_source, after, start_ms, end_ms, limit, order, columns)
            if not missing:
                return page
            self._peer_segments(read_live=False)
            with self.lock:
                merged = {seq for s in self.sealed for seq, _ in s.parts}
            if not set(missing) & merged:
                return page  # pruned: those rows are gone
            # merged by compaction while this page was read: read it again from the same cursor
        return page

    def sealed_prints(self) -> list[SegmentPrint]:
        """Every sealed segment now, ours and peers' (indexed, not read)."""
        self._peer_segments(read_live=False)
        with self.lock:
            return [print_of(s) for s in sorted(self.sealed, key=lambda x: x.seq)]

    def compact(self) -> int:
        """Merge runs of small sealed segments (each under a quarter of `segment_rows`, at least
        `compact_min_files` of them in a row, nothing unsealed between them) into one, up to
        `segment_rows` rows; the merged file takes the last one's number and records all of them
        as its parts, so cursors into any of them stay valid. Rows and their order are kept.
        One process at a time (flock on `compact.lock`); returns how many files were merged away."""
        if not self._runs_to_merge():
            return 0
        with open(self.dir / "compact.lock", "a+b") as lock:  # only created when there is work
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # a peer is compacting
            self._peer_segments(read_live=False)
            return sum(self._merge(group) for group in self._runs_to_merge())

    def _runs_to_merge(self) -> list[list[Segment]]:
        unsealed = {seq for seq in (seq_of(n, ("arrows",)) for n in os.listdir(self.dir)) if seq is not None}
        with self.lock:
            unsealed |= {s.seq for s in self.closed}
            if self.active_seq is not None:
                unsealed.add(self.active_seq)
            sealed = sorted(self.sealed, key=lambda s: s.seq)
        return runs_to_merge(sealed, unsealed, self.segment_rows, self.compact_min_files)

    def _merge(self, group: list[Segment]) -> int:
        merged = merge_run(self.dir, group)
        if merged is None:
            return 0  # pruned or being replaced meanwhile: merged next time
        drop = {s.seq for s in group}
        with self.lock:
            self.sealed = sorted([s for s in self.sealed if s.seq not in drop] + [merged], key=lambda s: s.seq)
        return len(group) - 1

    def prune(self, cutoff_ms: int) -> tuple[int, int]:
        """Delete sealed segments whose newest row is older than `cutoff_ms`; (segments, rows).

        An active segment holding only older rows is sealed first, so an idle pipeline's old rows go too.
        """
        self._peer_segments(read_live=False)  # index what peers sealed, so their old segments go as well
        with self.lock:
            if self.active_writer is not None and self.active_tmax is not None and self.active_tmax < cutoff_ms:
                self._rotate()
        self.seal_pending()
        with self.lock:
            doomed = [s for s in self.sealed if s.tmax is not None and s.tmax < cutoff_ms]
            gone = {s.seq for s in doomed}
            self.sealed = [s for s in self.sealed if s.seq not in gone]
        if not doomed:
            return 0, 0
        mark_pruned(self.dir, max(gone))
        for seg in doomed:
            seg.path.unlink(missing_ok=True)
        fsync_dir(self.dir)
        return len(doomed), sum(s.rows for s in doomed)
