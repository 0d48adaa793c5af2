"""Log retention: inference and score logs older than `--log-retention` are deleted (D16)."""

from __future__ import annotations

import asyncio
import logging
import time

from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.store.db import Database
from wallaroo_pulumi.runtime.store.logs import LogStore

log = logging.getLogger("wallaroo_pulumi.runtime.retention")

MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 3600.0


def interval_for(retention_s: float) -> float:
    """Prune a few times per retention period, between every second and every hour."""
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, retention_s / 4))


class LogRetention:
    def __init__(self, logstore: LogStore, db: Database, metrics: Metrics, retention_s: float) -> None:
        self.logstore = logstore
        self.db = db
        self.metrics = metrics
        self.retention_s = retention_s

    def prune_once(self, now: float | None = None) -> dict[str, tuple[int, int]]:
        """Delete what is older than the retention; per pipeline, (segments, rows) removed."""
        cutoff_ms = int(((now if now is not None else time.time()) - self.retention_s) * 1000)
        removed = self.logstore.prune(cutoff_ms)
        for pipeline, (segments, rows) in removed.items():
            self.metrics.log_rows_pruned.labels(pipeline).inc(rows)
            log.info("log retention: removed %d segment(s), %d row(s) of %s older than %s",
                     segments, rows, pipeline, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff_ms / 1000)))
        if self.db.has_table("listener_scored"):
            with self.db.tx() as c:
                c.execute("DELETE FROM listener_scored WHERE state = 'done' AND source_ms < ?", (cutoff_ms,))
        return removed

    async def run_forever(self) -> None:
        interval = interval_for(self.retention_s)
        log.info("log retention: keeping %gs of logs, checking every %gs", self.retention_s, interval)
        while True:
            try:
                await asyncio.to_thread(self.prune_once)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - retried next round; serving must not stop for it
                log.exception("log retention")
            await asyncio.sleep(interval)
