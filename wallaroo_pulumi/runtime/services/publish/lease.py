"""One builder per publish where replicas share a database (D49): a publish is built by the process
holding its lease (`builder`, `lease_until` on its row), renewed while it builds; a publish whose
builder stopped is taken by whichever process finds its lease lapsed."""

from __future__ import annotations

import asyncio
import time
import uuid

from wallaroo_pulumi.runtime.store.db import Database

UNFINISHED = "status IN ('PendingPublish', 'Publishing')"


class BuildLease:
    def __init__(self, db: Database, lease_s: float = 60.0) -> None:
        self.db = db
        self.lease_s = lease_s
        self.instance = uuid.uuid4().hex  # this process; a restarted one is another builder
        db.add_columns("publishes", {"builder": "TEXT", "lease_until": "REAL"})

    def claim(self, publish_id: int) -> bool:
        """Take the publish to build it (Publishing): True unless another live builder holds it."""
        now = time.time()
        with self.db.tx() as c:
            taken = c.execute(
                f"UPDATE publishes SET status = 'Publishing', error = NULL, builder = ?, lease_until = ?, updated_at = ? "
                f"WHERE id = ? AND {UNFINISHED} AND (builder IS NULL OR builder = ? OR lease_until < ?)",
                (self.instance, now + self.lease_s, now, publish_id, self.instance, now)).rowcount
        return taken == 1

    async def hold(self, publish_id: int) -> None:
        """Renew the lease a few times per lease until cancelled (the build ended)."""
        while True:
            await asyncio.sleep(self.lease_s / 4)
            await asyncio.to_thread(self._renew, publish_id)

    def _renew(self, publish_id: int) -> None:
        with self.db.tx() as c:
            c.execute("UPDATE publishes SET lease_until = ? WHERE id = ? AND builder = ?",
                      (time.time() + self.lease_s, publish_id, self.instance))

    def due(self) -> list[int]:
        """Unfinished publishes no live builder holds: never claimed, or their builder's lease lapsed."""
        rows = self.db.all(f"SELECT id FROM publishes WHERE {UNFINISHED} AND (builder IS NULL OR lease_until < ?)",
                           (time.time(),))
        return [r["id"] for r in rows]
