"""The listener tables (``listener_*`` in the runtime's SQLite database): tasks, runs, run logs,
and per stream the record of claimed and scored rows that makes scoring exactly once. Timestamps are epoch seconds."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from wallaroo_pulumi.runtime.store.db import Database
from wallaroo_pulumi.runtime.store.logs.settled import SegmentPrint, Settled

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS listener_tasks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        workspace_id INTEGER NOT NULL,
        orch_id TEXT,
        type TEXT NOT NULL,                -- run_once | scheduled | continuous
        monitored_pipeline TEXT NOT NULL,
        listener_model TEXT NOT NULL,      -- JSON {name, version}
        schedule TEXT,
        window_seconds REAL NOT NULL,
        timeout_seconds REAL NOT NULL,
        args TEXT NOT NULL,                -- the task's whole `json`
        status TEXT NOT NULL,              -- pending | started | pending_kill | killed
        next_run REAL,
        last_tick REAL,                    -- the last cron tick fired (never fired twice)
        last_run_status TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS listener_runs (
        id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        status TEXT NOT NULL,              -- running | succeeded | failed | timed_out | killed
        tick REAL,
        owner TEXT NOT NULL,
        started REAL NOT NULL,
        heartbeat REAL,                    -- last sign of life from the owner (its lease)
        finished REAL,
        window_start REAL,
        window_end REAL,
        rows_read INTEGER NOT NULL DEFAULT 0,
        rows_scored INTEGER NOT NULL DEFAULT 0,
        rows_skipped INTEGER NOT NULL DEFAULT 0,
        error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS listener_runs_task ON listener_runs (task_id, started)",
    # the lease checks look for running runs several times a lease: never a scan of all history
    "CREATE INDEX IF NOT EXISTS listener_runs_status ON listener_runs (status)",
    """CREATE TABLE IF NOT EXISTS listener_run_logs (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        line TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS listener_scored (
        stream TEXT NOT NULL,
        row_key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        state TEXT NOT NULL,               -- claimed | done
        source_ms INTEGER NOT NULL,
        PRIMARY KEY (stream, row_key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS listener_scored_claims ON listener_scored (state, run_id)",
    # sealed segments of the monitored log every row of which a stream has settled: its runs skip them (D63)
    """CREATE TABLE IF NOT EXISTS listener_settled (
        stream TEXT NOT NULL,
        seq INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        tmin INTEGER NOT NULL,
        tmax INTEGER NOT NULL,
        PRIMARY KEY (stream, seq, rows, tmin, tmax)
    ) WITHOUT ROWID""",
]

TASK_STATUSES = ("pending", "started", "pending_kill", "killed")
RUN_STATUSES = ("running", "succeeded", "failed", "timed_out", "killed")
MAX_LOG_LINES = 20_000
_IN_CHUNK = 500


class Claimed(NamedTuple):
    mine: list[int]
    """indexes now claimed by the run"""
    held: list[int]
    """indexes another run holds unsettled"""


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class TaskStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.tx() as c:
            for stmt in SCHEMA:
                c.execute(stmt)
        # a data dir from before run leases, and before runs in processes of their own (the key they call with)
        db.add_columns("listener_runs", {"heartbeat": "REAL", "key_id": "INTEGER"})

    # -- tasks -----------------------------------------------------------
    def create_task(
        self,
        *,
        name: str,
        workspace_id: int,
        orch_id: str | None,
        monitored_pipeline: str,
        listener_model: dict[str, Any],
        schedule: str | None,
        window_seconds: float,
        timeout_seconds: float,
        args: dict[str, Any],
        next_run: float | None,
        last_tick: float | None,
        kind: str | None = None,
    ) -> dict[str, Any]:
        tid = str(uuid.uuid4())
        now = time.time()
        with self.db.tx() as c:
            c.execute(
                """INSERT INTO listener_tasks (id, name, workspace_id, orch_id, type, monitored_pipeline,
                   listener_model, schedule, window_seconds, timeout_seconds, args, status, next_run,
                   last_tick, created_at, updated_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (
                    tid, name, workspace_id, orch_id, kind or ("scheduled" if schedule else "run_once"),
                    monitored_pipeline, json.dumps(listener_model), schedule, window_seconds,
                    timeout_seconds, json.dumps(args), "pending", next_run, last_tick, now, now,
                ),
            )
        return self.get_task(tid)  # type: ignore[return-value]

    def get_task(self, tid: str) -> dict[str, Any] | None:
        row = self.db.one("SELECT * FROM listener_tasks WHERE id = ?", (tid,))
        return _task(row) if row else None

    def list_tasks(self, workspace_id: int | None = None) -> list[dict[str, Any]]:
        if workspace_id is None:
            rows = self.db.all("SELECT * FROM listener_tasks ORDER BY created_at")
        else:
            rows = self.db.all(
                "SELECT * FROM listener_tasks WHERE workspace_id = ? ORDER BY created_at", (workspace_id,)
            )
        return [_task(r) for r in rows]

    def update_task(self, tid: str, **fields: Any) -> dict[str, Any] | None:
        if fields:
            for k in ("listener_model", "args"):
                if k in fields:
                    fields[k] = json.dumps(fields[k])
            fields["updated_at"] = time.time()
            cols = ", ".join(f"{k} = ?" for k in fields)
            with self.db.tx() as c:
                c.execute(f"UPDATE listener_tasks SET {cols} WHERE id = ?", (*fields.values(), tid))
        return self.get_task(tid)

    def claim_tick(self, tid: str, tick: float, next_run: float | None) -> bool:
        """Atomically record `tick` as fired; False if it (or a later one) already was."""
        with self.db.tx() as c:
            cur = c.execute(
                """UPDATE listener_tasks SET last_tick = ?, next_run = ?, updated_at = ?
                   WHERE id = ? AND status IN ('pending', 'started') AND schedule IS NOT NULL
                   AND (last_tick IS NULL OR last_tick < ?)""",
                (tick, next_run, time.time(), tid, tick),
            )
            return cur.rowcount == 1

    def claim_restart(self, tid: str, last_tick: float | None, now: float) -> bool:
        """Atomically record a continuous task's restart at `now`; False if another process did first."""
        with self.db.tx() as c:
            cur = c.execute(
                """UPDATE listener_tasks SET last_tick = ?, updated_at = ? WHERE id = ? AND type = 'continuous'
                   AND status IN ('pending', 'started') AND COALESCE(last_tick, -1) = ?""",
                (now, now, tid, -1 if last_tick is None else last_tick),
            )
            return cur.rowcount == 1

    def running_of(self, tid: str) -> str | None:
        """The id of a run of task `tid` still running (None: none is)."""
        row = self.db.one("SELECT id FROM listener_runs WHERE task_id = ? AND status = 'running' LIMIT 1", (tid,))
        return row["id"] if row else None

    def delete_task(self, tid: str) -> None:
        with self.db.tx() as c:
            run_ids = [r[0] for r in c.execute("SELECT id FROM listener_runs WHERE task_id = ?", (tid,))]
            for chunk in _chunks(run_ids, _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                c.execute(f"DELETE FROM listener_run_logs WHERE run_id IN ({marks})", tuple(chunk))
            c.execute("DELETE FROM listener_runs WHERE task_id = ?", (tid,))
            c.execute("DELETE FROM listener_tasks WHERE id = ?", (tid,))

    # -- runs ------------------------------------------------------------
    def create_run(self, task_id: str, owner: str, tick: float | None) -> dict[str, Any]:
        rid = str(uuid.uuid4())
        now = time.time()
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO listener_runs (id, task_id, status, tick, owner, started, heartbeat) VALUES (?,?,?,?,?,?,?)",
                (rid, task_id, "running", tick, owner, now, now),
            )
            c.execute(
                "UPDATE listener_tasks SET status = 'started', updated_at = ? WHERE id = ? AND status = 'pending'",
                (time.time(), task_id),
            )
        return self.get_run(rid)  # type: ignore[return-value]

    def get_run(self, rid: str) -> dict[str, Any] | None:
        return self.db.one("SELECT * FROM listener_runs WHERE id = ?", (rid,))

    def list_runs(self, task_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM listener_runs WHERE task_id = ? ORDER BY started DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.db.all(sql, (task_id,))

    def running_runs(self) -> list[dict[str, Any]]:
        return self.db.all("SELECT * FROM listener_runs WHERE status = 'running'")

    def beat(self, run_ids: Sequence[str]) -> set[str]:
        """Renew the lease of these runs; returns those no longer `running` (settled elsewhere)."""
        now = time.time()
        lost: set[str] = set()
        with self.db.tx() as c:
            for rid in run_ids:
                cur = c.execute("UPDATE listener_runs SET heartbeat = ? WHERE id = ? AND status = 'running'", (now, rid))
                if cur.rowcount == 0:
                    lost.add(rid)
        return lost

    def expired_runs(self, before: float, owner: str) -> list[dict[str, Any]]:
        """Runs of other processes whose last heartbeat is older than `before`."""
        return self.db.all(
            "SELECT * FROM listener_runs WHERE status = 'running' AND owner != ? AND COALESCE(heartbeat, started) < ?",
            (owner, before),
        )

    def update_run(self, rid: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.tx() as c:
            c.execute(f"UPDATE listener_runs SET {cols} WHERE id = ?", (*fields.values(), rid))

    def finish_run(self, rid: str, status: str, error: str | None = None) -> bool:
        """Settle a running run; False when it was already settled (e.g. by another process)."""
        assert status in RUN_STATUSES
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE listener_runs SET status = ?, error = ?, finished = ? WHERE id = ? AND status = 'running'",
                (status, error, time.time(), rid),
            )
            if cur.rowcount == 0:
                return False
            row = c.execute("SELECT task_id FROM listener_runs WHERE id = ?", (rid,)).fetchone()
            if row is not None:
                c.execute(
                    "UPDATE listener_tasks SET last_run_status = ?, updated_at = ? WHERE id = ?",
                    (status, time.time(), row[0]),
                )
        return True

    def log(self, rid: str, line: str) -> None:
        with self.db.tx() as c:
            row = c.execute("SELECT MAX(seq) FROM listener_run_logs WHERE run_id = ?", (rid,)).fetchone()
            seq = (row[0] or 0) + 1
            if seq > MAX_LOG_LINES:
                c.execute("DELETE FROM listener_run_logs WHERE run_id = ? AND seq <= ?", (rid, seq - MAX_LOG_LINES))
            c.execute(
                "INSERT INTO listener_run_logs (run_id, seq, ts, line) VALUES (?,?,?,?)",
                (rid, seq, time.time(), line),
            )

    def logs(self, rid: str, lines: int | None = None) -> list[dict[str, Any]]:
        if lines:
            rows = self.db.all(
                "SELECT ts, line FROM listener_run_logs WHERE run_id = ? ORDER BY seq DESC LIMIT ?",
                (rid, int(lines)),
            )
            rows.reverse()
        else:
            rows = self.db.all("SELECT ts, line FROM listener_run_logs WHERE run_id = ? ORDER BY seq", (rid,))
        return rows

    # -- exactly-once record ---------------------------------------------
    def claim(self, stream: str, run_id: str, keys: Sequence[str], source_ms: Sequence[int]) -> Claimed:
        """Claim the keys nobody has claimed: the indexes (into `keys`) now owned by `run_id`, and
        those another run holds unsettled (its claim may yet be given back)."""
        if not keys:
            return Claimed([], [])
        with self.db.tx() as c:
            taken: dict[str, bool] = {}  # key -> held by another run, not yet done
            for chunk in _chunks(list(keys), _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                taken.update(
                    (r[0], r[1] == "claimed" and r[2] != run_id)
                    for r in c.execute(
                        f"SELECT row_key, state, run_id FROM listener_scored WHERE stream = ? AND row_key IN ({marks})",
                        (stream, *chunk),
                    )
                )
            mine, held, seen = [], [], set()
            for i, k in enumerate(keys):
                if k in taken:
                    if taken[k]:
                        held.append(i)
                elif k not in seen:
                    mine.append(i)
                    seen.add(k)
            c.executemany(
                "INSERT INTO listener_scored (stream, row_key, run_id, state, source_ms) VALUES (?,?,?,?,?)",
                [(stream, keys[i], run_id, "claimed", int(source_ms[i])) for i in mine],
            )
        return Claimed(mine, held)

    def mark_done(self, stream: str, keys: Sequence[str], run_id: str | None = None) -> None:
        """Mark claims done; with `run_id`, only claims that run still holds (a run settled as
        dead while it was in fact alive must not touch claims a later run has taken since)."""
        with self.db.tx() as c:
            c.executemany(
                "UPDATE listener_scored SET state = 'done' WHERE stream = ? AND row_key = ? AND run_id = COALESCE(?, run_id)",
                [(stream, k, run_id) for k in keys],
            )

    def release(self, stream: str, keys: Sequence[str], run_id: str | None = None) -> None:
        with self.db.tx() as c:
            c.executemany(
                "DELETE FROM listener_scored WHERE stream = ? AND row_key = ? AND state = 'claimed' "
                "AND run_id = COALESCE(?, run_id)",
                [(stream, k, run_id) for k in keys],
            )

    def stale_claims(self, live_runs: set[str], only: set[str] | None = None) -> dict[str, list[tuple[str, int]]]:
        """Claims held by runs that are no longer running here (of `only` those runs, when given):
        {stream: [(key, source_ms)]}."""
        out: dict[str, list[tuple[str, int]]] = {}
        for r in self.db.all("SELECT stream, row_key, run_id, source_ms FROM listener_scored WHERE state = 'claimed'"):
            if r["run_id"] not in live_runs and (only is None or r["run_id"] in only):
                out.setdefault(r["stream"], []).append((r["row_key"], r["source_ms"]))
        return out

    def settled(self, stream: str) -> Settled:
        """The sealed segments `stream` has settled every row of."""
        rows = self.db.all("SELECT seq, rows, tmin, tmax FROM listener_settled WHERE stream = ?", (stream,))
        return Settled(SegmentPrint(r["seq"], r["rows"], r["tmin"], r["tmax"]) for r in rows)

    def settle_segments(self, stream: str, segments: Sequence[SegmentPrint], older_than_ms: int) -> None:
        """Record `segments` as settled by `stream`, and forget those whose rows are all older than
        `older_than_ms` (the window has passed them: no run reads them again)."""
        with self.db.tx() as c:
            c.execute("DELETE FROM listener_settled WHERE stream = ? AND tmax < ?", (stream, older_than_ms))
            c.executemany(
                "INSERT INTO listener_settled (stream, seq, rows, tmin, tmax) VALUES (?,?,?,?,?) "
                "ON CONFLICT (stream, seq, rows, tmin, tmax) DO NOTHING",
                [(stream, p.seq, p.rows, p.tmin, p.tmax) for p in segments if p.tmin is not None and p.tmax is not None],
            )

    def scored_count(self, stream: str) -> int:
        row = self.db.one("SELECT COUNT(*) AS n FROM listener_scored WHERE stream = ? AND state = 'done'", (stream,))
        return int(row["n"]) if row else 0

    def forget_stream(self, stream: str) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM listener_scored WHERE stream = ?", (stream,))
            c.execute("DELETE FROM listener_settled WHERE stream = ?", (stream,))


def _task(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["listener_model"] = json.loads(row["listener_model"])
    row["args"] = json.loads(row["args"])
    return row
