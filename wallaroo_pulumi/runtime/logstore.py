"""Inference log store: append-only Arrow/Parquet segments per pipeline, shared by the processes of one data dir.

Layout, crash safety and the multi-writer rules: docs/runtime-api.md ("Logs", "Roles").
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TIME_TYPE = pa.timestamp("ms", tz="UTC")
_STALE_TMP_S = 600.0
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

Order = Literal["Asc", "Desc"]


@dataclass
class LogPage:
    table: pa.Table
    cursor: str | None
    """Pass back as `cursor` to get the next page (None when nothing more)."""
    status: str
    """All (nothing more) | RecordLimited (limit reached) | SchemaChange (next rows have another schema)."""


@dataclass
class _Segment:
    seq: int
    path: Path
    rows: int
    tmin: int | None  # epoch ms
    tmax: int | None
    schema: pa.Schema
    handle: Any = None  # our open (and flocked) stream file, until the segment is sealed


def _to_ms(value: datetime | int | float | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    return int(value)


def _encode_cursor(seq: int, row: int) -> str:
    return base64.urlsafe_b64encode(f"{seq}.{row}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        seq, row = raw.split(".")
        return int(seq), int(row)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cursor {cursor!r} is not a cursor this log store issued") from exc


def normalize(table: pa.Table) -> pa.Table:
    """Make `time` a timestamp[ms, UTC] column (adding `now` when missing), first."""
    now_ms = int(time.time() * 1000)
    if "time" not in table.column_names:
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
        table = table.set_column(table.column_names.index("time"), "time", col)
    return table


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_stream_file(path: Path) -> pa.Table | None:
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


def _try_lock(path: Path) -> Any:
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


def _seq_of(name: str, suffixes: tuple[str, ...] = ("arrows", "parquet")) -> int | None:
    stem, _, suffix = name.partition(".")
    return int(stem) if suffix in suffixes and stem.isdigit() else None


def _bounds(table: pa.Table) -> tuple[int | None, int | None]:
    if table.num_rows == 0:
        return None, None
    ms = table.column("time").cast(pa.int64())
    mm = pc.min_max(ms)
    return mm["min"].as_py(), mm["max"].as_py()


class _PipelineLog:
    def __init__(self, directory: Path, segment_rows: int, segment_bytes: int) -> None:
        self.dir = directory
        self.segment_rows = segment_rows
        self.segment_bytes = segment_bytes
        self.lock = threading.RLock()
        self.sealed: list[_Segment] = []
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
        self.closed: list[_Segment] = []
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
            self._seal_orphan(stream)
        for path in sorted(self.dir.glob("*.parquet")):
            self._add_sealed(path)

    def _seal_orphan(self, stream: Path) -> bool:
        """Seal a stream segment whose writer is gone (its flock is free); False if a live peer holds it."""
        handle = _try_lock(stream)
        if handle is None:
            return False
        try:
            seq = _seq_of(stream.name)
            if seq is not None and not (self.dir / f"{seq:012d}.parquet").exists():
                table = _read_stream_file(stream)
                if table is not None and table.num_rows:
                    self._write_parquet(seq, table)
            stream.unlink(missing_ok=True)
        finally:
            handle.close()
        return True

    def _add_sealed(self, path: Path) -> None:
        """Index one Parquet segment (ours or a peer's; sealed files never change)."""
        seq = _seq_of(path.name)
        if seq is None or any(s.seq == seq for s in self.sealed):
            return
        try:
            meta = pq.read_metadata(path)
            tmin = tmax = None
            if meta.num_rows:
                tmin, tmax = _bounds(pq.read_table(path, columns=["time"]))
        except (OSError, pa.ArrowInvalid):
            return  # being replaced (tmp + rename) or removed: the next listing sees it
        self.sealed.append(_Segment(seq, path, meta.num_rows, tmin, tmax, meta.schema.to_arrow_schema()))
        self.sealed.sort(key=lambda s: s.seq)

    def _next_seq(self) -> int:
        # `.pruned`: the number of the newest segment log retention deleted, so numbers never restart
        on_disk = [seq for seq in (_seq_of(n, ("arrows", "parquet", "pruned")) for n in os.listdir(self.dir))
                   if seq is not None]
        last = max([s.seq for s in self.sealed] + [s.seq for s in self.closed] + on_disk + [0])
        if self.active_seq is not None:
            last = max(last, self.active_seq)
        return last + 1

    def _create_active(self) -> tuple[int, Path, Any]:
        """A new stream segment file, created exclusively and flocked: no two writers share a number."""
        # Locked before it has its name (link of a locked temp file), so no reader can ever
        # take a fresh peer segment for an orphan.
        tmp = self.dir / f"writer.{uuid.uuid4().hex}.tmp"
        handle = open(tmp, "xb")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            while True:
                seq = self._next_seq()
                path = self.dir / f"{seq:012d}.arrows"
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    continue  # a peer took the number between our listing and our link: list again
                return seq, path, handle
        finally:
            tmp.unlink(missing_ok=True)

    def _write_parquet(self, seq: int, table: pa.Table) -> Path:
        final = self.dir / f"{seq:012d}.parquet"
        tmp = self.dir / f"{seq:012d}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        return final

    # -- writing ---------------------------------------------------------
    def _rotate(self) -> None:
        """Close the active segment (fsynced) and queue it for sealing into Parquet."""
        if self.active_writer is None:
            return
        self.active_writer.close()
        self.active_file.flush()
        os.fsync(self.active_file.fileno())
        if self.active_rows:  # the file stays open, and flocked, until it is sealed
            self.closed.append(
                _Segment(self.active_seq, self.active_path, self.active_rows, self.active_tmin, self.active_tmax,
                         self.active_schema, self.active_file)
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
        self.dirty = False

    def seal_pending(self) -> None:
        """Convert closed stream segments to Parquet (temp + fsync + rename). Runs off the
        append path (the store's background thread) unless appends are synchronous."""
        with self.seal_lock:
            while True:
                with self.lock:
                    if not self.closed:
                        return
                    seg = self.closed[0]
                table = _read_stream_file(seg.path)
                path = self._write_parquet(seg.seq, table) if table is not None and table.num_rows else None
                with self.lock:
                    self.closed.pop(0)
                    if path is not None:
                        self.sealed.append(_Segment(seg.seq, path, table.num_rows, seg.tmin, seg.tmax, table.schema))
                        self.sealed.sort(key=lambda x: x.seq)
                    seg.path.unlink(missing_ok=True)
                    if seg.handle is not None:
                        seg.handle.close()  # releases the flock: nothing left to recover

    def append(self, table: pa.Table, sync: bool = True) -> bool:
        """Returns True when a segment was closed and waits to be sealed."""
        with self.lock:
            if self.active_writer is not None and not table.schema.equals(self.active_schema):
                self._rotate()
            if self.active_writer is None:
                self.active_seq, self.active_path, self.active_file = self._create_active()
                self.active_writer = pa.ipc.new_stream(self.active_file, table.schema)
                self.active_schema = table.schema
                _fsync_dir(self.dir)
            self.active_writer.write_table(table)
            self.active_file.flush()  # in the kernel now: survives a kill -9 of this process
            if sync:
                os.fsync(self.active_file.fileno())
                self.dirty = False
            else:
                self.dirty = True
            self.active_rows += table.num_rows
            self.active_bytes += table.nbytes
            lo, hi = _bounds(table)
            if lo is not None:
                self.active_tmin = lo if self.active_tmin is None else min(self.active_tmin, lo)
                self.active_tmax = hi if self.active_tmax is None else max(self.active_tmax, hi)
            if self.active_rows >= self.segment_rows or self.active_bytes >= self.segment_bytes:
                self._rotate()
            pending = bool(self.closed)
        if pending and sync:
            self.seal_pending()
            return False
        return pending

    def sync(self) -> None:
        with self.lock:
            if self.dirty and self.active_file is not None:
                os.fsync(self.active_file.fileno())
            self.dirty = False

    def close(self) -> None:
        with self.lock:
            self._rotate()
        self.seal_pending()

    # -- reading ---------------------------------------------------------
    def _peer_segments(self, read_live: bool = True) -> list[tuple[_Segment, pa.Table | None]]:
        """What peers wrote since we last looked: new sealed segments (indexed once), and their
        active stream segments (sealed here if their writer died; read now unless `read_live`
        is False, for callers that only need the index)."""
        live: list[tuple[_Segment, pa.Table | None]] = []
        with self.lock:
            ours = {s.seq for s in self.sealed} | {s.seq for s in self.closed}
            if self.active_seq is not None:
                ours.add(self.active_seq)
        names = sorted(os.listdir(self.dir))
        parquet = {seq for seq in (_seq_of(n) for n in names if n.endswith(".parquet")) if seq is not None}
        for name in names:
            seq = _seq_of(name)
            if seq is None or seq in ours:
                continue
            path = self.dir / name
            if name.endswith(".parquet"):
                with self.lock:
                    self._add_sealed(path)
            elif seq not in parquet:
                if self._seal_orphan(path):
                    with self.lock:
                        self._add_sealed(self.dir / f"{seq:012d}.parquet")
                    continue
                if not read_live:
                    continue
                table = _read_stream_file(path)
                if table is not None and table.num_rows:
                    tmin, tmax = _bounds(table)
                    live.append((_Segment(seq, path, table.num_rows, tmin, tmax, table.schema), table))
        return live

    def _segments(self) -> list[tuple[_Segment, pa.Table | None]]:
        """Sealed segments (table read lazily), peers' active ones and ours (read now), by number."""
        peers = self._peer_segments()
        with self.lock:
            segs: list[tuple[_Segment, pa.Table | None]] = [(s, None) for s in sorted(self.sealed + self.closed, key=lambda x: x.seq)]
            if self.active_writer is not None and self.active_rows:
                table = _read_stream_file(self.active_path)
                if table is not None and table.num_rows:
                    seg = _Segment(
                        self.active_seq, self.active_path, table.num_rows,
                        self.active_tmin, self.active_tmax, table.schema,
                    )
                    segs.append((seg, table))
        segs.extend(peers)
        segs.sort(key=lambda item: item[0].seq)
        return segs

    def query(
        self, start_ms: int | None, end_ms: int | None, limit: int, order: Order, cursor: str | None
    ) -> LogPage:
        after: tuple[int, int] | None = _decode_cursor(cursor) if cursor else None
        segs = self._segments()
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
                try:
                    table = self._read_segment(seg)
                except FileNotFoundError:  # removed by log retention (maybe in another process)
                    self._forget(seg.seq)
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
        if status == "RecordLimited" and not self._has_more(segs, last_pos, start_ms, end_ms, order):
            status = "All"
        next_cursor = _encode_cursor(*last_pos) if status != "All" and last_pos else None
        return LogPage(out, next_cursor, status)

    def _forget(self, seq: int) -> None:
        with self.lock:
            self.sealed = [s for s in self.sealed if s.seq != seq]

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
        marker = self.dir / f"{max(gone):012d}.pruned"
        marker.touch()
        for seg in doomed:
            seg.path.unlink(missing_ok=True)
        for old in self.dir.glob("*.pruned"):
            if old != marker and (_seq_of(old.name, ("pruned",)) or 0) < max(gone):
                old.unlink(missing_ok=True)
        _fsync_dir(self.dir)
        return len(doomed), sum(s.rows for s in doomed)

    def _read_segment(self, seg: _Segment) -> pa.Table:
        if seg.path.suffix == ".arrows":
            table = _read_stream_file(seg.path) if seg.path.exists() else None
            if table is not None:
                return table
            # sealed meanwhile by the background thread
            return pq.read_table(self.dir / f"{seg.seq:012d}.parquet")
        return pq.read_table(seg.path)

    @staticmethod
    def _has_more(segs, last_pos, start_ms, end_ms, order) -> bool:
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


_SHARED: dict[Path, LogStore] = {}
_SHARED_LOCK = threading.Lock()


class LogStore:
    """Append-only inference logs for every pipeline under one directory.

    One process should hold one `LogStore` per directory: use
    `LogStore.shared(root)` (the runtime shares its own instance).
    """

    @classmethod
    def shared(cls, root: Path) -> LogStore:
        key = Path(root).resolve()
        with _SHARED_LOCK:
            store = _SHARED.get(key)
            if store is None:
                store = _SHARED[key] = cls(key)
            return store

    def __init__(
        self, root: Path, segment_rows: int = 100_000, segment_bytes: int = 64 * 2**20, sync_interval_s: float = 0.05
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.segment_rows = segment_rows
        self.segment_bytes = segment_bytes
        self.sync_interval_s = sync_interval_s
        self._logs: dict[str, _PipelineLog] = {}
        self._lock = threading.Lock()
        self._syncer: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False

    def _sync_loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.sync_interval_s)
            self._wake.clear()
            self.flush()
            with self._lock:
                logs = [log for log in self._logs.values() if log.closed]
            for log in logs:
                try:
                    log.seal_pending()
                except Exception:  # noqa: BLE001 - retried next round; recovery also seals at open
                    import logging

                    logging.getLogger("wallaroo_pulumi.runtime.logstore").exception("sealing a log segment")

    def flush(self) -> None:
        """fsync every segment written with `sync=False` since the last flush."""
        with self._lock:
            logs = [log for log in self._logs.values() if log.dirty]
        for log in logs:
            try:
                log.sync()
            except (OSError, ValueError):  # a segment sealed meanwhile is already fsynced
                pass

    def _log(self, pipeline: str) -> _PipelineLog:
        if not pipeline or _SAFE.search(pipeline) or pipeline.startswith("."):
            raise ValueError(f"pipeline name {pipeline!r} is not a valid log name")
        with self._lock:
            log = self._logs.get(pipeline)
            if log is None:
                log = _PipelineLog(self.root / pipeline, self.segment_rows, self.segment_bytes)
                self._logs[pipeline] = log
            return log

    def pipelines(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def append(self, pipeline: str, table: pa.Table, sync: bool = True) -> None:
        """Append rows; `time` is added when missing.

        `sync=True` (default) fsyncs before returning; `sync=False` (the inference path) returns once the
        rows are in the kernel, and a background thread fsyncs them within `sync_interval_s` (group commit).
        """
        if table.num_rows == 0:
            return
        pending = self._log(pipeline).append(normalize(table), sync=sync)
        if pending:
            self._wake.set()
        if not sync and self._syncer is None:
            with self._lock:
                if self._syncer is None:
                    self._syncer = threading.Thread(target=self._sync_loop, name="logstore-fsync", daemon=True)
                    self._syncer.start()

    def query(
        self,
        pipeline: str,
        start: datetime | int | str | None = None,
        end: datetime | int | str | None = None,
        limit: int = 1000,
        order: Order = "Asc",
        cursor: str | None = None,
    ) -> LogPage:
        """Rows with start <= time < end (either bound optional), in append order
        (Asc) or reverse (Desc), at most `limit`, continuing after `cursor`."""
        if order not in ("Asc", "Desc"):
            raise ValueError(f"order must be 'Asc' or 'Desc', got {order!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not (self.root / pipeline).is_dir() and pipeline not in self._logs:
            return LogPage(pa.table({"time": pa.array([], TIME_TYPE)}), None, "All")
        return self._log(pipeline).query(_to_ms(start), _to_ms(end), limit, order, cursor)

    def prune(self, cutoff: datetime | int) -> dict[str, tuple[int, int]]:
        """Log retention: per pipeline, (segments, rows) deleted because all their rows are
        older than `cutoff`. Safe with peers on the same directory: their readers skip a
        deleted segment."""
        cutoff_ms = _to_ms(cutoff)
        assert cutoff_ms is not None
        removed = {}
        for pipeline in self.pipelines():
            counts = self._log(pipeline).prune(cutoff_ms)
            if counts[0]:
                removed[pipeline] = counts
        return removed

    def close(self) -> None:
        """Seal active segments (they are also recovered on the next open after a crash)."""
        self._closed = True
        self._wake.set()
        with self._lock:
            for log in self._logs.values():
                log.close()
            self._logs.clear()
