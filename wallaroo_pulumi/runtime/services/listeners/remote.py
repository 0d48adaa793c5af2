"""The listener run API as a run in a process of its own sees it: the log store's `query`/`append` and
the task store's `claim`/`release`/`mark_done`/`update_run`, each one HTTP call with the run's key
(routes/listener_runs.py), so `engine.run_listener` runs there unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pyarrow as pa

from wallaroo_pulumi.runtime.store.logs import LogPage
from wallaroo_pulumi.runtime.store.logs.settled import SegmentPrint, Settled

from .errors import ListenerRunError
from .run_api import decode, encode
from .store import Claimed

PREFIX = "/v1/api/task/listener_run"


class RunClient:
    """One run's calls back to the runtime that started it."""

    def __init__(self, url: str, key: str, timeout_s: float = 300.0) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, **kw: Any) -> httpx.Response:
        r = self.http.post(f"{PREFIX}/{path}", **kw)
        if r.status_code >= 400:
            raise ListenerRunError(f"the runtime refused {path} ({r.status_code}): {r.text[:500]}")
        return r

    # -- what engine.run_listener asks of the log store ------------------
    def query(self, pipeline: str, start_ms: int, end_ms: int, limit: int, order: str,
              cursor: str | None, skip: Settled | None = None) -> LogPage:
        """A page of the monitored pipeline (the run's own: `pipeline` is what the engine names, the
        runtime reads its task's); `skip`: without what the stream settled, as the runtime records it."""
        r = self._post("page", json={"start_ms": start_ms, "end_ms": end_ms, "limit": limit, "cursor": cursor,
                                     "skip_settled": skip is not None})
        floor = r.headers.get("x-page-floor-ms")
        return LogPage(decode(r.content, "page"), r.headers.get("x-page-cursor") or None,
                       r.headers["x-page-status"], int(floor) if floor else None)

    def sealed(self, pipeline: str) -> list[SegmentPrint]:
        return [SegmentPrint(**p) for p in self._post("sealed").json()["segments"]]

    def append(self, pipeline: str, table: pa.Table) -> None:
        self._post("scores", content=encode(table), headers={"Content-Type": "application/vnd.apache.arrow.stream"})

    # -- what it asks of the task store -----------------------------------
    def settled(self, stream: str) -> Settled:
        """The runtime applies the stream's record itself (`query`'s skip): nothing to fetch."""
        return Settled()

    def settle_segments(self, stream: str, segments: Sequence[SegmentPrint], older_than_ms: int) -> None:
        self._post("settle_segments", json={"segments": [p.as_json() for p in segments],
                                            "older_than_ms": older_than_ms})

    def claim(self, stream: str, run_id: str, keys: Sequence[str], source_ms: Sequence[int]) -> Claimed:
        got = self._post("claim", json={"keys": list(keys), "times": [int(t) for t in source_ms]}).json()
        return Claimed(got["mine"], got["held"])

    def mark_done(self, stream: str, keys: Sequence[str], run_id: str | None = None) -> None:
        self._post("settle", json={"keys": list(keys), "done": True})

    def release(self, stream: str, keys: Sequence[str], run_id: str | None = None) -> None:
        self._post("settle", json={"keys": list(keys), "done": False})

    def update_run(self, rid: str, **fields: Any) -> None:
        self._post("report", json=fields)
