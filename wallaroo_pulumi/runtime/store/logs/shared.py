"""`SharedLogStore`: the inference logs of replicas on many hosts, in a bucket, indexed in the
shared database.

Each replica appends to its own local log (the `LogStore` under its data dir: durable before the
answer returns, group-committed as in the embedded default). A shipper thread cuts each local log
every `ship_interval_s`, uploads the sealed Parquet segment as
`logs/<pipeline>/<writer id>-<local number>.parquet` (a name no other writer uses), then records it
in `log_segments`, whose number orders all writers' segments; only then is the local copy dropped.
Synchronous appends (listener scores) go straight to the bucket and the index. Readers page over
the index, so every replica reads every writer's rows, with cursors as in the embedded store; a
reader ships its own rows first, so it sees what it wrote, and other writers' rows within a ship
interval. Retention deletes index rows first, then objects (D37).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from wallaroo_pulumi.runtime.store.db import Database, IntegrityError
from wallaroo_pulumi.runtime.store.logs.query import LogPage, Order, ParquetSource, Source, decode_cursor, read_page
from wallaroo_pulumi.runtime.store.logs.segments import ROW_GROUP_ROWS, Segment
from wallaroo_pulumi.runtime.store.logs.settled import SegmentPrint, Settled, unsettled
from wallaroo_pulumi.runtime.store.logs.store import LogStore, once_tag
from wallaroo_pulumi.runtime.store.logs.time_column import TIME_TYPE, bounds, normalize, to_ms
from wallaroo_pulumi.runtime.store.object_store import ObjectStore

SCHEMA = """CREATE TABLE IF NOT EXISTS log_segments (
    seq INTEGER PRIMARY KEY,           -- the order of all writers' segments (drawn under the writers' lock)
    pipeline TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,          -- the object, logs/<pipeline>/<writer>-<n>.parquet
    rows INTEGER NOT NULL,
    tmin INTEGER,                      -- epoch ms
    tmax INTEGER,
    created_at REAL NOT NULL
)"""
INDEX = "CREATE INDEX IF NOT EXISTS log_segments_pipeline ON log_segments (pipeline, seq)"
log = logging.getLogger("wallaroo_pulumi.runtime.logstore")


class SharedLogStore(LogStore):
    def __init__(self, root: Path, db: Database, bucket: ObjectStore, ship_interval_s: float = 1.0) -> None:
        super().__init__(root, compact_min_files=0)  # the shipper moves sealed segments to the bucket
        self.db = db
        self.bucket = bucket
        self.ship_interval_s = ship_interval_s
        self.cache = root.parent / "logs-cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        id_file = root / "writer.id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex + "\n")
        self.writer = id_file.read_text().strip()
        with db.tx() as c:
            c.execute(SCHEMA)
            c.execute(INDEX)
        self._stop = threading.Event()
        self._ship_lock = threading.Lock()
        self._shipper = threading.Thread(target=self._ship_loop, name="logstore-ship", daemon=True)
        self._shipper.start()

    # -- writing -------------------------------------------------------------
    def append(self, pipeline: str, table: pa.Table, sync: bool = True) -> None:
        """`sync=False` (inference): durable in the local log now, shipped within a ship interval.
        `sync=True` (listener scores): in the bucket and the index before returning."""
        if table.num_rows == 0:
            return
        if not sync:
            super().append(pipeline, table, sync=False)
            return
        self._log(pipeline)  # checks the name
        self.publish(pipeline, f"{self.writer}-d{uuid.uuid4().hex}", normalize(table))

    def append_once(self, pipeline: str, key: str, table: pa.Table) -> bool:
        """In the bucket and the index once per `key`: the object is named by the key's hash, and the
        index takes each object once (a resend rewrites the same object, then finds it indexed)."""
        self._log(pipeline)  # checks the name
        return table.num_rows == 0 or self.publish(pipeline, f"once-{once_tag(key)}", normalize(table))

    def publish(self, pipeline: str, name: str, table: pa.Table) -> bool:
        """Rows as the object `logs/<pipeline>/<name>.parquet`, then in the index (once, whatever the
        retries); False when the index had it already."""
        key = f"logs/{pipeline}/{name}.parquet"
        with self.bucket.fs.open_output_stream(self.bucket.path(key)) as out:
            pq.write_table(table, out, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        tmin, tmax = bounds(table)
        try:
            with self.db.tx() as c:
                if c.execute("SELECT 1 FROM log_segments WHERE key = ?", (key,)).fetchone() is not None:
                    return False
                c.execute("INSERT INTO log_segments (pipeline, key, rows, tmin, tmax, created_at) VALUES (?,?,?,?,?,?)",
                          (pipeline, key, table.num_rows, tmin, tmax, time.time()))
        except IntegrityError:  # recorded already (a restart shipping again)
            return False
        return True

    def ship(self, only: str | None = None) -> int:
        """Move every sealed local segment (of pipeline `only`, or of all) to the bucket and the index;
        how many moved."""
        moved = 0
        self.write_queued()
        with self._ship_lock:
            for pipeline in [only] if only is not None else LogStore.pipelines(self):
                if not (self.root / pipeline).is_dir():
                    continue
                plog = self._log(pipeline)
                for seg in plog.cut():
                    table = pq.read_table(seg.path)
                    if table.num_rows:
                        self.publish(pipeline, f"{self.writer}-{seg.seq:012d}", table)
                    plog.forget(seg)
                    moved += 1
        return moved

    def _ship_loop(self) -> None:
        while not self._stop.wait(self.ship_interval_s):
            try:
                self.ship()
            except Exception:  # noqa: BLE001 - retried next round; the rows stay in the local log
                log.exception("shipping log segments to %s", self.bucket.describe())

    # -- reading -------------------------------------------------------------
    def pipelines(self) -> list[str]:
        shared = {r["pipeline"] for r in self.db.all("SELECT DISTINCT pipeline FROM log_segments")}
        return sorted(shared | set(LogStore.pipelines(self)))

    def query(
        self, pipeline: str, start: datetime | int | str | None = None, end: datetime | int | str | None = None,
        limit: int = 1000, order: Order = "Asc", cursor: str | None = None, columns: list[str] | None = None,
        skip: Settled | None = None,
    ) -> LogPage:
        if order not in ("Asc", "Desc"):
            raise ValueError(f"order must be 'Asc' or 'Desc', got {order!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.write_queued()
        after = decode_cursor(cursor) if cursor else None
        start_ms, end_ms = to_ms(start), to_ms(end)
        self.ship(pipeline)  # this replica's own rows first: a reader sees what it wrote
        where, params = ["pipeline = ?"], [pipeline]
        if start_ms is not None:
            where.append("(tmax IS NULL OR tmax >= ?)")
            params.append(start_ms)
        if end_ms is not None:
            where.append("(tmin IS NULL OR tmin < ?)")
            params.append(end_ms)
        rows = self.db.all(f"SELECT seq, key, rows, tmin, tmax FROM log_segments WHERE {' AND '.join(where)} ORDER BY seq",
                           tuple(params))
        if not rows:
            return LogPage(pa.table({"time": pa.array([], TIME_TYPE)}), None, "All")
        segs = [(Segment(r["seq"], Path(r["key"]), r["rows"], r["tmin"], r["tmax"], pa.schema([])), None) for r in rows]
        return read_page(unsettled(segs, skip), self._read, after, start_ms, end_ms, limit, order, columns)

    def sealed(self, pipeline: str) -> list[SegmentPrint]:
        self.ship(pipeline)
        rows = self.db.all("SELECT seq, rows, tmin, tmax FROM log_segments WHERE pipeline = ? ORDER BY seq", (pipeline,))
        return [SegmentPrint(r["seq"], r["rows"], r["tmin"], r["tmax"]) for r in rows]

    def _read(self, seg: Segment) -> Source | None:
        """A segment, from this replica's cache of immutable objects, read by row group (None: pruned meanwhile)."""
        local = self.cache / str(seg.path).replace("/", "__")
        if not local.exists():
            try:
                self.bucket.get_file(str(seg.path), local)
            except (FileNotFoundError, OSError):
                return None
        try:
            return ParquetSource(local)
        except FileNotFoundError:
            return None

    # -- retention -----------------------------------------------------------
    def prune(self, cutoff: datetime | int) -> dict[str, tuple[int, int]]:
        """Segments whose newest row is older than `cutoff`, of every writer: out of the index
        (readers stop seeing them at once), then out of the bucket and this replica's cache."""
        cutoff_ms = to_ms(cutoff)
        assert cutoff_ms is not None
        self.ship()
        with self.db.tx() as c:
            doomed = c.execute("SELECT seq, pipeline, key, rows FROM log_segments WHERE tmax IS NOT NULL AND tmax < ?",
                               (cutoff_ms,)).fetchall()
            c.execute("DELETE FROM log_segments WHERE tmax IS NOT NULL AND tmax < ?", (cutoff_ms,))
        removed: dict[str, tuple[int, int]] = {}
        for row in doomed:
            self.bucket.delete(row["key"])
            (self.cache / row["key"].replace("/", "__")).unlink(missing_ok=True)
            segments, count = removed.get(row["pipeline"], (0, 0))
            removed[row["pipeline"]] = (segments + 1, count + row["rows"])
        return removed

    def close(self) -> None:
        self._stop.set()
        self._shipper.join(30)
        super().close()  # seals the local logs
        try:
            self.ship()
        except Exception:  # noqa: BLE001 - shipped at the next start
            log.exception("shipping log segments at stop")
