"""The listener run API: what a run of the built-in `llm-listener` in a process of its own asks of the
runtime (a page of the monitored pipeline's logs, claims on row keys, score rows appended, its counts).
Every call is scoped by the calling key alone: it must be the key minted for a running run (D50, D58), and
the pipelines, stream and run id come from that run's task, never from the caller."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from wallaroo_pulumi.runtime.store.logs import LogPage, LogStore
from wallaroo_pulumi.runtime.store.logs.settled import SegmentPrint

from .engine import ListenerArgs, stream_id
from .errors import BadListenerRequest, NotThisRunsKey
from .store import Claimed, TaskStore

#: The most rows one page request may ask for (the run's page_size is at most this too).
MAX_PAGE = 1_000_000
COUNTS = ("rows_read", "rows_scored", "rows_skipped")
WINDOW = ("window_start", "window_end")


@dataclass(frozen=True)
class RunScope:
    """The run a key belongs to and what its task lets it touch."""

    run_id: str
    task: dict[str, Any]
    monitored: str
    score_pipeline: str
    stream: str


def encode(table: pa.Table) -> bytes:
    """A table as an Arrow IPC stream."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def decode(body: bytes, what: str) -> pa.Table:
    """An Arrow IPC stream sent as `what`; a 400 naming it when it is not one."""
    try:
        return pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadListenerRequest(f"{what}: expected an Arrow IPC stream ({exc})") from None


class ListenerRunApi:
    def __init__(self, store: TaskStore, logstore: LogStore) -> None:
        self.store = store
        self.logstore = logstore

    def scope(self, key_id: int | None, key_name: str | None, label: str = "this key") -> RunScope:
        """The running run whose own key this is (`label` names the key in a refusal); 403 for any other
        key, admin keys included."""
        _, _, rid = (key_name or "").rpartition(" run ")
        run = self.store.get_run(rid) if rid and key_id is not None else None
        if run is None or run.get("key_id") != key_id:
            raise NotThisRunsKey(f"{label} lacks a listener run of its own: the listener run API answers only "
                                 "the key minted for a running listener run (revoked when it ends)")
        if run["status"] != "running":
            raise NotThisRunsKey(f"{label} lacks a running run: run {rid} is {run['status']}, so its key no "
                                 "longer acts for it")
        task = self.store.get_task(run["task_id"])
        if task is None:
            raise NotThisRunsKey(f"run {rid}: its task was deleted")
        args = ListenerArgs.model_validate(task["args"])
        out = args.score_pipeline()
        return RunScope(rid, task, args.monitored_pipeline, out, stream_id(args.monitored_pipeline, out))

    def page(self, scope: RunScope, start_ms: int, end_ms: int, limit: int, cursor: str | None,
             skip_settled: bool = False) -> LogPage:
        """One page of the monitored pipeline's logs in [start_ms, end_ms), after `cursor`; without the
        sealed segments the run's stream has settled when `skip_settled`."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadListenerRequest(f"limit: expected 1..{MAX_PAGE} rows, got {limit}")
        skip = self.store.settled(scope.stream) if skip_settled else None
        try:
            return self.logstore.query(scope.monitored, start_ms, end_ms, limit, "Asc", cursor, skip=skip)
        except ValueError as exc:
            raise BadListenerRequest(f"cursor: {exc}") from None

    def sealed(self, scope: RunScope) -> list[SegmentPrint]:
        """The monitored pipeline's sealed segments now."""
        return self.logstore.sealed(scope.monitored)

    def settle_segments(self, scope: RunScope, segments: list[SegmentPrint], older_than_ms: int) -> None:
        """Sealed segments of the monitored pipeline whose every row the run's stream has settled."""
        self.store.settle_segments(scope.stream, segments, older_than_ms)

    def claim(self, scope: RunScope, keys: list[str], times_ms: list[int]) -> Claimed:
        """Claim for the run the row keys nobody holds: the indexes of those now its own, and of those
        another run holds unsettled."""
        if len(keys) != len(times_ms):
            raise BadListenerRequest(f"times: expected one per key ({len(keys)}), got {len(times_ms)}")
        return self.store.claim(scope.stream, scope.run_id, keys, times_ms)

    def settle(self, scope: RunScope, keys: list[str], done: bool) -> None:
        """The run's claims on `keys`: scored (`done`), or given back."""
        (self.store.mark_done if done else self.store.release)(scope.stream, keys, scope.run_id)

    def append_scores(self, scope: RunScope, table: pa.Table) -> None:
        """Score rows of this run, appended to its score pipeline's logs; every row must name this
        run, its task and the monitored pipeline (what `results` and `run_id=` filters read)."""
        need = {"metadata.run_id": scope.run_id, "metadata.task_id": scope.task["id"],
                "metadata.source_pipeline": scope.monitored}
        for col, value in need.items():
            if col not in table.column_names or set(table.column(col).to_pylist()) - {value}:
                raise BadListenerRequest(f"scores.{col}: every row must be {value!r} (this run's)")
        if "in.source_key" not in table.column_names:
            raise BadListenerRequest("scores.in.source_key: required (the scored row's key)")
        self.logstore.append(scope.score_pipeline, table)

    def report(self, scope: RunScope, fields: dict[str, Any]) -> None:
        """The run's counts so far and its window (epoch seconds)."""
        bad = sorted(set(fields) - {*COUNTS, *WINDOW})
        if bad:
            raise BadListenerRequest(f"{bad[0]}: not a run field; expected {', '.join((*COUNTS, *WINDOW))}")
        for k, v in fields.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or (k in COUNTS and v != int(v)):
                raise BadListenerRequest(f"{k}: expected a non-negative {'count' if k in COUNTS else 'time'}, got {v!r}")
        if fields:
            self.store.update_run(scope.run_id, **fields)
