"""`LogStore`: the inference logs of every pipeline under one directory, one instance per directory
and process (`LogStore.shared`), with a group-commit thread that writes queued rows, fsyncs and seals
in the background."""

from __future__ import annotations

import collections
import fcntl
import hashlib
import itertools
import logging
import re
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from wallaroo_pulumi.runtime.core.memory import trim
from wallaroo_pulumi.runtime.store.logs.pipeline_log import PipelineLog
from wallaroo_pulumi.runtime.store.logs.query import LogPage, Order
from wallaroo_pulumi.runtime.store.logs.settled import SegmentPrint, Settled
from wallaroo_pulumi.runtime.store.logs.time_column import TIME_TYPE, normalize, to_ms

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_SHARED: dict[Path, LogStore] = {}
_SHARED_LOCK = threading.Lock()
QUEUE_WAKE_ROWS = 4096  # queued rows that wake the writer before its next round
logger = logging.getLogger("wallaroo_pulumi.runtime.logstore")


def once_tag(key: str) -> str:
    """What names the rows stored under `key` (`append_once`): its SHA-256, 32 hex digits."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class LogStore:
    """Append-only inference logs for every pipeline under one directory.

    One process should hold one `LogStore` per directory: use
    `LogStore.shared(root)` (the runtime shares its own instance).
    """

    @classmethod
    def shared(cls, root: Path, compact_min_files: int = 4) -> LogStore:
        """`compact_min_files` applies when this call opens the store (0: a shipper numbers segments)."""
        key = Path(root).resolve()
        with _SHARED_LOCK:
            store = _SHARED.get(key)
            if store is None:
                store = _SHARED[key] = cls(key, compact_min_files=compact_min_files)
            return store

    def __init__(
        self, root: Path, segment_rows: int = 100_000, segment_bytes: int = 64 * 2**20, sync_interval_s: float = 0.05,
        seal_after_s: float = 60.0, compact_min_files: int = 4,
    ) -> None:
        """`seal_after_s`: the active segment is sealed into Parquet once this old (0: by size only);
        `compact_min_files`: this many small sealed segments in a row are merged into one (0: never)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.segment_rows = segment_rows
        self.segment_bytes = segment_bytes
        self.seal_after_s = seal_after_s
        self.compact_min_files = compact_min_files
        self.sync_interval_s = sync_interval_s
        self._logs: dict[str, PipelineLog] = {}
        self._lock = threading.Lock()
        self._syncer: threading.Thread | None = None
        self._wake = threading.Event()
        self._idle = False  # the writer sleeps until rows come or a segment is due to seal (`_next_wait`)
        self._closed = False
        self._queued: collections.deque[tuple[str, pa.Table]] = collections.deque()
        self._queued_rows = 0
        self._write_lock = threading.Lock()  # one writer of the queue at a time, so rows keep their order
        #: called with (pipeline, error) when queued rows could not be written (the runtime counts them)
        self.on_write_error: Callable[[str, Exception], None] | None = None

    def _sync_loop(self) -> None:
        while not self._closed:
            woken = self._wake.wait(self._next_wait())
            self._wake.clear()
            if self._idle:
                self._idle = False
                if woken:  # rows came: written at the next round, an interval on, with what follows them
                    continue
            try:
                self._background_round()
            except Exception:  # noqa: BLE001 - the thread must outlive one bad round: retried next round
                logger.exception("log store background round (fsync, rotate, seal)")

    def _next_wait(self) -> float | None:
        """The writer's next sleep: a round's interval while anything waits to be written, fsynced or
        sealed; else, idle, until the first active segment is due to seal by age, or until `append`
        wakes it (None: no active segment). An idle runtime's writer does not wake 20 times a second."""
        self._idle = True  # before looking: an append from now on sees it and wakes the writer
        due = [] if self._queued or self._closed else [w for log in self._logs_now() if (w := log.quiet_for()) is not None]
        if self._queued or self._closed or (due and min(due) <= 0):
            self._idle = False
            return self.sync_interval_s
        return min(due) if due else None

    def _logs_now(self) -> list[PipelineLog]:
        with self._lock:
            return list(self._logs.values())

    def _background_round(self) -> None:
        self.write_queued()
        self.flush()
        logs = [log for log in self._logs_now() if log.rotate_if_old()]
        for log in logs:
            try:
                log.seal_pending()
            except Exception:  # noqa: BLE001 - retried next round; recovery also seals at open
                logger.exception("sealing a log segment")
        if logs:
            # Sealing and compacting read and write whole segments on this thread: what they freed
            # stays resident in this thread's allocator heaps (Arrow's pool, glibc's arena) unless
            # handed back here, and each larger compaction raised the plateau (D62).
            trim()

    def write_queued(self) -> None:
        """Write the rows `append(sync=False)` queued: each run of one pipeline's rows with one schema as one
        write (several record batches, one flush), in the order they came."""
        with self._write_lock:
            taken: list[tuple[str, pa.Table]] = []
            while self._queued:
                taken.append(self._queued.popleft())
            self._queued_rows = 0
            pending = False
            for (pipeline, _schema), run in itertools.groupby(taken, key=lambda item: (item[0], item[1].schema)):
                tables = [table for _, table in run]
                try:
                    log = self._log(pipeline)
                    # one record batch per run: a batch per row cost an IPC message each, to write and to keep
                    pending |= log.append(tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks(),
                                          sync=False)
                except Exception as exc:  # noqa: BLE001 - the rows of the others must still be written
                    logger.exception("could not write %d queued log rows of pipeline %s", sum(t.num_rows for t in tables),
                                     pipeline)
                    if self.on_write_error is not None:
                        self.on_write_error(pipeline, exc)
            if pending:
                self._wake.set()

    def flush(self) -> None:
        """fsync every segment written with `sync=False` since the last flush."""
        with self._lock:
            logs = [log for log in self._logs.values() if log.dirty]
        for log in logs:
            try:
                log.sync()
            except (OSError, ValueError):  # a segment sealed meanwhile is already fsynced
                pass

    def _log(self, pipeline: str) -> PipelineLog:
        if not pipeline or _SAFE.search(pipeline) or pipeline.startswith("."):
            raise ValueError(f"pipeline name {pipeline!r} is not a valid log name")
        with self._lock:
            log = self._logs.get(pipeline)
            if log is None:
                log = PipelineLog(self.root / pipeline, self.segment_rows, self.segment_bytes, self.seal_after_s,
                                  self.compact_min_files)
                self._logs[pipeline] = log
            return log

    def pipeline_log(self, pipeline: str) -> PipelineLog:
        """One pipeline's segment log (a shipper `cut`s and `forget`s its sealed segments)."""
        return self._log(pipeline)

    def pipelines(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def append(self, pipeline: str, table: pa.Table, sync: bool = True) -> None:
        """Append rows; `time` is added when missing.

        `sync=True` (default) fsyncs before returning; `sync=False` (the inference path) queues the rows
        in memory and returns: the background thread writes what is queued, in order and a batch per
        pipeline, and fsyncs it, every `sync_interval_s` (group commit, D46). Reads here see queued rows.
        """
        if table.num_rows == 0:
            return
        log = self._log(pipeline)  # checks the name now, in the caller
        table = normalize(table)
        if not sync:
            self._queued.append((pipeline, table))
            self._queued_rows += table.num_rows
            if self._queued_rows >= QUEUE_WAKE_ROWS:
                self._wake.set()
        else:
            self.write_queued()  # rows queued before these come first
            if log.append(table, sync=True):
                self._wake.set()
        if self._idle:  # the writer sleeps: these rows (or a new segment to seal by age) need it
            self._wake.set()
        if self._syncer is None:  # also seals segments by age, whoever appended them
            with self._lock:
                if self._syncer is None:
                    self._syncer = threading.Thread(target=self._sync_loop, name="logstore-fsync", daemon=True)
                    self._syncer.start()

    def append_once(self, pipeline: str, key: str, table: pa.Table) -> bool:
        """Rows stored exactly once per `key`, however often they are sent and wherever a crash falls:
        a sealed segment named by the key's hash, renamed in atomically; False when the key's rows are
        here already. One writer at a time per pipeline (a file lock, across processes too)."""
        log = self._log(pipeline)
        if table.num_rows == 0:
            return True
        tag = once_tag(key)
        self.write_queued()  # rows queued before these come first
        with open(log.dir / "once.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            if any(log.dir.glob(f"*.{tag}.parquet")):
                return False
            log.seal_tagged(normalize(table), tag)
        return True

    def query(
        self,
        pipeline: str,
        start: datetime | int | str | None = None,
        end: datetime | int | str | None = None,
        limit: int = 1000,
        order: Order = "Asc",
        cursor: str | None = None,
        columns: list[str] | None = None,
        skip: Settled | None = None,
    ) -> LogPage:
        """Rows with start <= time < end (either bound optional), in append order
        (Asc) or reverse (Desc), at most `limit`, continuing after `cursor`; only `columns`
        (and `time`) when given; none of the sealed segments `skip` covers. A page reads only
        the row groups it returns (see `query.py`)."""
        if order not in ("Asc", "Desc"):
            raise ValueError(f"order must be 'Asc' or 'Desc', got {order!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.write_queued()
        if not (self.root / pipeline).is_dir() and pipeline not in self._logs:
            return LogPage(pa.table({"time": pa.array([], TIME_TYPE)}), None, "All")
        return self._log(pipeline).query(to_ms(start), to_ms(end), limit, order, cursor, columns, skip)

    def sealed(self, pipeline: str) -> list[SegmentPrint]:
        """The pipeline's sealed segments now (every writer's): what a reader may later skip as settled."""
        self.write_queued()
        if not (self.root / pipeline).is_dir() and pipeline not in self._logs:
            return []
        return self._log(pipeline).sealed_prints()

    def prune(self, cutoff: datetime | int) -> dict[str, tuple[int, int]]:
        """Log retention: per pipeline, (segments, rows) deleted because all their rows are
        older than `cutoff`. Safe with peers on the same directory: their readers skip a
        deleted segment."""
        cutoff_ms = to_ms(cutoff)
        assert cutoff_ms is not None
        self.write_queued()
        removed = {}
        for pipeline in self.pipelines():
            counts = self._log(pipeline).prune(cutoff_ms)
            if counts[0]:
                removed[pipeline] = counts
        return removed

    def close(self) -> None:
        """Seal active segments (they are also recovered on the next open after a crash)."""
        self.write_queued()
        self._closed = True
        self._wake.set()
        with self._lock:
            for log in self._logs.values():
                log.close()
            self._logs.clear()
