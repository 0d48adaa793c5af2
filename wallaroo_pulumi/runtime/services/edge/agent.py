"""`EdgeAgent`: an edge box's link to its centre. It joins once with the bundle's one-use join
token (keeping the edge key it gets in the data dir), and every interval it keeps the local
inference log under its bound (dropping the oldest sealed segments, counted) and ships each sealed
segment to the centre, dropping it here only once the centre has it; a segment is named by its
number, which is never drawn again, so the centre takes each exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from wallaroo_pulumi.runtime.core.auth import write_private
from wallaroo_pulumi.runtime.services.publish.bundle import EdgeBundle, decode_bundle
from wallaroo_pulumi.runtime.settings import EdgeSettings
from wallaroo_pulumi.runtime.store.logs import LogStore

log = logging.getLogger("wallaroo_pulumi.runtime.edge")
JOIN_PATH = "/v1/api/edge/join"
SHIP_PATH = "/v1/api/edge/ship_logs"


class EdgeJoinRefused(Exception):
    """The centre refused the join token (used already, or no edge's): the message says what to do."""


class EdgeAgent:
    def __init__(self, settings: EdgeSettings, data_dir: Path, logstore: LogStore, pipeline: str) -> None:
        self.settings = settings
        self.bundle: EdgeBundle = decode_bundle(settings.bundle.get_secret_value())
        self.state_path = data_dir / "edge.json"
        self.logstore = logstore
        self.pipeline = pipeline
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.error: str | None = None
        self.reachable: bool | None = None
        self.shipped_rows = 0
        self._join_sha = hashlib.sha256(self.bundle.join_token.encode()).hexdigest()
        self._http = httpx.Client(base_url=self.bundle.centre_url, timeout=30)

    @property
    def joined(self) -> bool:
        return self.state.get("join_sha") == self._join_sha and bool(self.state.get("edge_key"))

    def _save(self) -> None:
        write_private(self.state_path, json.dumps(self.state) + "\n")

    def report(self) -> dict[str, Any]:
        return {"name": self.bundle.edge_name, "centre": self.bundle.centre_url, "joined": self.joined,
                "centre_reachable": self.reachable, "shipped_rows": self.shipped_rows,
                "dropped_rows": self.state.get("dropped_rows", 0), "error": self.error}

    # -- joining ---------------------------------------------------------------------
    def join(self) -> bool:
        """Join with the bundle's token; False when the centre cannot be reached (tried again later)."""
        if self.joined:
            return True
        try:
            answer = self._http.post(JOIN_PATH, json={"name": self.bundle.edge_name, "join_token": self.bundle.join_token})
        except httpx.TransportError as exc:
            self.reachable = False
            log.warning("edge %s: the centre %s cannot be reached (%s); serving offline, joining later",
                        self.bundle.edge_name, self.bundle.centre_url, exc)
            return False
        self.reachable = True
        if answer.status_code != 200:
            try:
                message = answer.json().get("msg") or answer.text
            except ValueError:
                message = answer.text
            raise EdgeJoinRefused(f"edge {self.bundle.edge_name}: the centre refused to join it ({answer.status_code}): "
                                  f"{message}")
        body = answer.json()
        self.state.update(join_sha=self._join_sha, edge_key=body["edge_key"], edge_id=body["edge_id"],
                          publish_id=body["publish_id"])
        self._save()
        log.info("edge %s joined the centre %s (publish %s)", self.bundle.edge_name, self.bundle.centre_url,
                 body["publish_id"])
        return True

    # -- the loop --------------------------------------------------------------------
    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ship_interval_s)
            try:
                await asyncio.to_thread(self.round)
            except EdgeJoinRefused as exc:
                self.error = str(exc)
                log.error("%s", exc)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                log.exception("edge %s: shipping round", self.bundle.edge_name)

    def round(self) -> None:
        """Keep the bound, then ship what is sealed (when joined and the centre answers)."""
        log_ = self.logstore.pipeline_log(self.pipeline)
        segments = log_.cut()
        kept = self._keep_bound(log_, segments)
        if self.error is not None or not self.join():
            return
        for seg in kept:
            if not self._ship(seg):
                return
            log_.forget(seg)

    def _keep_bound(self, log_: Any, segments: list[Any]) -> list[Any]:
        sizes = [s.path.stat().st_size if s.path.exists() else 0 for s in segments]
        total, dropped = sum(sizes), 0
        while segments and total > self.settings.storage_bytes:
            seg = segments.pop(0)
            total -= sizes.pop(0)
            dropped += seg.rows
            log_.forget(seg)
        if dropped:
            self.state["dropped_rows"] = self.state.get("dropped_rows", 0) + dropped
            self._save()
            log.warning("edge %s: %d inference log rows dropped (the oldest: over LOCAL_INFERENCE_STORAGE, %d bytes, "
                        "while the centre could not take them); %d dropped in all", self.bundle.edge_name, dropped,
                        self.settings.storage_bytes, self.state["dropped_rows"])
        return segments

    def _ship(self, seg: Any) -> bool:
        table = pq.read_table(seg.path)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        headers = {"Authorization": f"Bearer {self.state['edge_key']}", "Content-Type": "application/vnd.apache.arrow.stream",
                   "X-Edge-Segment": str(seg.seq), "X-Edge-Dropped": str(self.state.get("dropped_rows", 0))}
        started = time.monotonic()
        try:
            answer = self._http.post(SHIP_PATH, content=sink.getvalue().to_pybytes(), headers=headers)
        except httpx.TransportError:
            self.reachable = False
            return False
        self.reachable = True
        if answer.status_code == 401:
            self.error = (f"edge {self.bundle.edge_name}: the centre no longer accepts this edge's logs (it was removed "
                          "or replaced); they stay here, within LOCAL_INFERENCE_STORAGE")
            log.error("%s", self.error)
            return False
        if answer.status_code != 200:
            log.warning("edge %s: the centre answered %d to a log segment: %s", self.bundle.edge_name,
                        answer.status_code, answer.text[:300])
            return False
        self.shipped_rows += table.num_rows
        log.info("edge %s: shipped %d inference log rows (segment %d) in %.2f s", self.bundle.edge_name,
                 table.num_rows, seg.seq, time.monotonic() - started)
        return True

    def close(self) -> None:
        self._http.close()
