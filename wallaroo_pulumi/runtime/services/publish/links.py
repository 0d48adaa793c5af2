"""`EdgeLinks`: the centre's side of its edges' own calls, outside API keys: a join (the one-use join
token for an edge key) and log shipping (a sealed segment of an edge's log, taken exactly once, D57)."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import pyarrow as pa

from wallaroo_pulumi.runtime.core.errors import BadRequest, Conflict, NotFound
from wallaroo_pulumi.runtime.services.access.errors import Unauthorized
from wallaroo_pulumi.runtime.services.pipelines import Pipelines
from wallaroo_pulumi.runtime.services.publish.service import Publishes, sha
from wallaroo_pulumi.runtime.store.db import Database
from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.runtime.wire.answers import iso

log = logging.getLogger("wallaroo_pulumi.runtime.publish")


class EdgeLinks:
    def __init__(self, db: Database, pipelines: Pipelines, publishes: Publishes, logstore: LogStore) -> None:
        self.db = db
        self.pipelines = pipelines
        self.publishes = publishes
        self.logstore = logstore

    def join(self, name: str, join_token: str) -> dict[str, Any]:
        """An edge's first call: its join token, taken once, for an edge key (the only time it is shown)."""
        edge = self.db.one("SELECT * FROM edges WHERE join_sha256 = ?", (sha(join_token),))
        if edge is None or edge["name"] != name:
            raise Unauthorized(f"edge {name!r}: this join token belongs to no edge of this centre (it was removed, "
                               "or replaced by an upgrade): add the edge again (add_edge) and start it with the new "
                               "EDGE_BUNDLE")
        if edge["joined_at"] is not None:
            raise Conflict(f"edge {name!r}: its join token was already used at {iso(edge['joined_at'])}; a join token "
                           "works once. Keep the edge's /persist volume between restarts, or remove the edge and add "
                           "it again for a new bundle", source="edge")
        key = secrets.token_urlsafe(32)
        with self.db.tx() as c:
            done = c.execute("UPDATE edges SET joined_at = ?, key_sha256 = ? WHERE id = ? AND joined_at IS NULL",
                             (time.time(), sha(key), edge["id"])).rowcount
        if done != 1:
            raise Conflict(f"edge {name!r}: its join token was used by another start at the same moment", source="edge")
        row = self.publishes.row(edge["publish_id"])
        version = self.pipelines.version(row["pipeline_version_id"])
        return {"edge_id": edge["id"], "edge_key": key, "publish_id": row["id"],
                "pipeline_version": version["version"] if version else None}

    def _edge_of_key(self, key: str) -> dict[str, Any]:
        edge = self.db.one("SELECT * FROM edges WHERE key_sha256 = ?", (sha(key),))
        if edge is None:
            raise Unauthorized("this edge key belongs to no edge of this centre: the edge was removed (remove_edge) "
                               "or joined again elsewhere; its logs are no longer accepted")
        return edge

    def receive_logs(self, key: str, segment: str, table: pa.Table, dropped: int) -> dict[str, Any]:
        """One sealed segment of an edge's inference log, taken exactly once: the rows land in the
        pipeline's log with `metadata.partition` = the edge's name and their own timestamps."""
        edge = self._edge_of_key(key)
        row = self.publishes.row(edge["publish_id"])
        pipeline = self.db.one("SELECT name FROM pipelines WHERE id = ?", (row["pipeline_id"],))
        if pipeline is None:
            raise NotFound(f"edge {edge['name']!r}: its pipeline was deleted; its logs have nowhere to go")
        if "time" not in table.column_names:
            raise BadRequest("body: the rows have no `time` column")
        n = table.num_rows
        table = _set_column(table, "metadata.partition", pa.array([edge["name"]] * n, pa.string()))
        if self.db.one("SELECT 1 FROM edge_shipments WHERE edge_id = ? AND segment = ?", (edge["id"], segment)):
            return {"accepted": 0, "duplicate": True}
        # the log store takes the rows once per (edge, segment) whatever comes after (D57), so a crash
        # between storing them and recording the shipment below cannot store a resent segment again
        stored = self.logstore.append_once(pipeline["name"], f"edge/{edge['id']}/{segment}", table)
        with self.db.tx() as c:  # stored now, or before a crash that came ahead of this record
            if c.execute("INSERT INTO edge_shipments (edge_id, segment, rows, received_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (edge_id, segment) DO NOTHING", (edge["id"], segment, n, time.time())).rowcount == 1:
                c.execute("UPDATE edges SET shipped_rows = shipped_rows + ?, dropped_rows = ? WHERE id = ?",
                          (n, max(dropped, edge["dropped_rows"]), edge["id"]))
        if dropped:
            log.warning("edge %s dropped %d of its oldest inference log rows while it could not ship them "
                        "(its LOCAL_INFERENCE_STORAGE bound)", edge["name"], dropped)
        return {"accepted": n if stored else 0, "duplicate": not stored}


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
