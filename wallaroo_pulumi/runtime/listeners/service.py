"""ListenerService: listener tasks, their runs, the cron scheduler and the HTTP routes.

Wiring (in the runtime app, after ``rt = Runtime(settings)``)::

    from wallaroo_pulumi.runtime.listeners import ListenerService
    app.include_router(ListenerService.for_runtime(rt).router)

The router carries a lifespan that calls :meth:`start` / :meth:`stop`, so including it is all
the wiring needed (FastAPI merges router lifespans into the app's). ``db`` / ``logstore`` may be
omitted when the app sets ``app.state.db`` / ``app.state.logstore`` before startup; when the app
has ``app.state.rt`` (the runtime), uploaded models resolve through its registry even without
``for_runtime``.

Scheduler: one asyncio task; every ``tick_seconds`` it fires each scheduled task whose next cron
tick is due. The fired tick is recorded (compare-and-set on ``last_tick``) in the same
transaction that schedules the next one, before the run starts, so a tick never runs twice, even
across a crash or with two runtimes on one database; ticks missed while the runtime was down
collapse into one run on start. Assumes one scheduler per database for run ownership.

Roles (``role=``, the runtime's ``--role``), for several processes on one data directory:

- ``all`` (default): the only process on the database. Fires cron ticks, runs run-once tasks;
  on start, runs still marked ``running`` are from a dead process and are marked failed, and
  their exactly-once claims are reconciled.
- ``serve`` (any number of replicas): runs the run-once tasks created through it, never fires a
  cron tick, and settles nothing on start (other processes' runs may be live).
- ``scheduler`` (exactly one): fires the cron ticks; on start settles only the *scheduled* runs
  (those carry a tick, so a previous scheduler owned them) and leaves run-once runs, which belong
  to serving replicas, alone.

Leases: every process heartbeats its own running runs a few times per ``lease_seconds``; the
process firing ticks fails any other process's run whose heartbeat is older than that (a
serving replica killed mid-run) and settles its claims, so its rows go to the next run. A
process that finds its run settled that way stops it.

In every role the loop also stops local runs whose task another process killed or deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from croniter import croniter

from wallaroo_pulumi.runtime.db import Database
from wallaroo_pulumi.runtime.logstore import LogStore
from wallaroo_pulumi.runtime.metrics import Metrics

from .engine import ListenerArgs, RunStats, reconcile, run_listener
from .executor import (
    Executor,
    ListenerModelError,
    ListenerModelRef,
    Resolver,
    builtin_resolver,
    chain_resolvers,
    make_executor,
    runtime_resolver,
)
from .store import TaskStore

log = logging.getLogger("wallaroo_pulumi.listeners")

ROLES = ("all", "serve", "scheduler")

CRON_HELP = (
    "expected a cron expression with 5 fields (minute hour day-of-month month day-of-week), "
    "or 6 with seconds last, e.g. '0 * * * *' (hourly) or '* * * * * */10' (every 10 seconds)"
)


class TaskError(Exception):
    """A request problem: `code` (400/404/409) and a message naming the field."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def validate_schedule(schedule: Any) -> str:
    if not isinstance(schedule, str) or not schedule.strip():
        raise TaskError(400, f"schedule: {schedule!r} is not a cron string; {CRON_HELP}")
    s = " ".join(schedule.split())
    if len(s.split(" ")) not in (5, 6) or not croniter.is_valid(s):
        raise TaskError(400, f"schedule: {schedule!r} is not a valid cron expression; {CRON_HELP}")
    return s


def next_tick(schedule: str, after: float) -> float:
    return float(croniter(schedule, after).get_next(float))


def due_tick(schedule: str, last_tick: float, now: float) -> float | None:
    """The latest tick in (last_tick, now], or None."""
    if next_tick(schedule, last_tick) > now:
        return None
    latest = float(croniter(schedule, now).get_prev(float))
    nxt = next_tick(schedule, latest)
    if nxt <= now:  # `now` sits exactly on a tick
        latest = nxt
    return latest if latest > last_tick else None


@dataclass
class _Cached:
    executor: Executor
    refs: int
    last_used: float
    broken: bool = False


class ListenerService:
    def __init__(
        self,
        db: Database | None = None,
        logstore: LogStore | None = None,
        *,
        resolver: Resolver | None = None,
        executor: str = "auto",
        tick_seconds: float = 0.25,
        executor_idle_seconds: float = 60.0,
        role: str = "all",
        lease_seconds: float = 30.0,
        metrics: Metrics | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds: expected a positive number of seconds, got {lease_seconds!r}")
        self.lease_seconds = lease_seconds
        self.metrics = metrics
        self._last_beat = self._last_settle = 0.0  # monotonic: lease work runs a few times a lease
        self.role = role
        self.db = db
        self.logstore = logstore
        self._own_resolver = resolver is not None
        self.resolver = chain_resolvers(resolver, builtin_resolver)
        self.executor_mode = executor
        self.tick_seconds = tick_seconds
        self.executor_idle_seconds = executor_idle_seconds
        self.instance = uuid.uuid4().hex
        self.store: TaskStore | None = None
        self._runs: dict[str, asyncio.Task] = {}
        self._run_task: dict[str, str] = {}
        self._kill_requested: set[str] = set()
        self._lease_lost: set[str] = set()
        self._executors: dict[tuple, _Cached] = {}
        self._exec_lock = asyncio.Lock()
        self._scheduler: asyncio.Task | None = None
        self._started = False
        from .routes import build_router

        self.router = build_router(self)

    @classmethod
    def for_runtime(cls, rt: Any, **kwargs: Any) -> ListenerService:
        """The service on a runtime's db, log store and model registry (built-ins as fallback)."""
        return cls(db=rt.db, logstore=rt.logstore, resolver=runtime_resolver(rt), **kwargs)

    # -- lifecycle -------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        state = getattr(app, "state", None)
        if self.db is None and state is not None:
            self.db = getattr(state, "db", None)
        if self.logstore is None and state is not None:
            self.logstore = getattr(state, "logstore", None)
        rt = getattr(state, "rt", None) if state is not None else None
        if not self._own_resolver and rt is not None and hasattr(rt, "engine") and hasattr(rt, "db"):
            # in the runtime app: uploaded listener models resolve through its registry
            self.resolver = chain_resolvers(runtime_resolver(rt), builtin_resolver)
            self._own_resolver = True
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        if self.db is None or self.logstore is None:
            raise RuntimeError("ListenerService needs the runtime's Database and LogStore (db=, logstore=)")
        self.store = TaskStore(self.db)
        if self.role != "serve":
            live: set[str] = set()
            for run in self.store.running_runs():
                if run["owner"] == self.instance:
                    continue
                if self.role == "scheduler" and run["tick"] is None:
                    live.add(run["id"])  # a run-once run of a serving replica, maybe still going
                    continue
                self.store.log(run["id"], "interrupted: the runtime stopped while this run was in progress")
                if self.store.finish_run(run["id"], "failed", "interrupted: the runtime stopped during the run"):
                    self._count_settled(run)
            if self.role == "all":
                for t in self.store.list_tasks():
                    if t["status"] == "pending_kill":
                        self.store.update_task(t["id"], status="killed", next_run=None)
            await asyncio.to_thread(reconcile, self.store, self.logstore, live, lambda m: log.info("%s", m))
        self._scheduler = asyncio.create_task(self._schedule_loop(), name="listener-scheduler")
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._scheduler:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._scheduler
        runs = list(self._runs.values())
        for t in runs:
            t.cancel()
        if runs:
            await asyncio.gather(*runs, return_exceptions=True)
        for c in list(self._executors.values()):
            with contextlib.suppress(Exception):
                await c.executor.stop()
        self._executors.clear()

    def _store(self) -> TaskStore:
        if self.store is None:
            raise TaskError(503, "the listener service is not started")
        return self.store

    # -- tasks -----------------------------------------------------------
    def parse_args(self, payload: Any) -> ListenerArgs:
        from pydantic import ValidationError

        from wallaroo_pulumi.runtime.errors import describe_validation_error

        if not isinstance(payload, dict):
            raise TaskError(400, "json: expected an object {monitored_pipeline, listener_model: {name, version?}, ...}")
        try:
            return ListenerArgs.model_validate(payload)
        except ValidationError as exc:
            raise TaskError(400, describe_validation_error(exc, "json")) from None

    async def create_task(
        self,
        *,
        name: str,
        workspace_id: int,
        json_args: Any,
        schedule: str | None = None,
        timeout: float | None = None,
        orch_id: str | None = None,
    ) -> dict[str, Any]:
        store = self._store()
        args = self.parse_args(json_args)
        if schedule is not None:
            schedule = validate_schedule(schedule)
        timeout = _timeout(timeout)
        await self._resolve(workspace_id, args)  # fail now, not at the first tick
        now = time.time()
        task = store.create_task(
            name=name, workspace_id=workspace_id, orch_id=orch_id, monitored_pipeline=args.monitored_pipeline,
            listener_model=args.listener_model.model_dump(), schedule=schedule,
            window_seconds=args.window_seconds, timeout_seconds=timeout,
            args=args.model_dump(mode="json", exclude_none=True),
            next_run=next_tick(schedule, now) if schedule else None, last_tick=now if schedule else None,
        )
        if schedule:
            task = store.update_task(task["id"], status="started")
        else:
            await self.launch(task)
            task = store.get_task(task["id"])
        return task  # type: ignore[return-value]

    async def update_task(
        self, tid: str, *, schedule: str | None = None, json_args: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        store = self._store()
        task = self.get_task(tid)
        if task["status"] in ("killed", "pending_kill"):
            raise TaskError(409, f"id: task {tid} is {task['status']}; create a new task instead")
        fields: dict[str, Any] = {}
        if json_args is not None:
            args = self.parse_args(json_args)
            await self._resolve(task["workspace_id"], args)
            fields.update(
                args=args.model_dump(mode="json", exclude_none=True), monitored_pipeline=args.monitored_pipeline,
                listener_model=args.listener_model.model_dump(), window_seconds=args.window_seconds,
            )
        if schedule is not None:
            if task["schedule"] is None:
                raise TaskError(400, "schedule: this task runs once; create a scheduled task (run_scheduled) instead")
            schedule = validate_schedule(schedule)
            if schedule != task["schedule"]:
                now = time.time()
                fields.update(schedule=schedule, next_run=next_tick(schedule, now),
                              last_tick=max(task["last_tick"] or 0.0, now))
        if timeout is not None:
            fields["timeout_seconds"] = _timeout(timeout)
        return store.update_task(tid, **fields)  # type: ignore[return-value]

    def get_task(self, tid: Any) -> dict[str, Any]:
        if not isinstance(tid, str) or not tid:
            raise TaskError(400, f"id: expected a task id string, got {tid!r}")
        task = self._store().get_task(tid)
        if task is None:
            raise TaskError(404, f"id: no task {tid}")
        return task

    def list_tasks(self, workspace_id: int | None = None) -> list[dict[str, Any]]:
        return self._store().list_tasks(workspace_id)

    async def kill_task(self, tid: str) -> dict[str, Any]:
        store = self._store()
        task = self.get_task(tid)
        if task["status"] == "killed":
            return task
        live = [rid for rid, t in self._run_task.items() if t == tid]
        if live:
            store.update_task(tid, status="pending_kill", next_run=None)
            running = [self._runs[rid] for rid in live if rid in self._runs]
            for rid in live:
                self._kill_requested.add(rid)
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        return store.update_task(tid, status="killed", next_run=None)  # type: ignore[return-value]

    async def delete_task(self, tid: str) -> None:
        self.get_task(tid)
        await self.kill_task(tid)
        self._store().delete_task(tid)

    def list_runs(self, tid: str, limit: int | None = None) -> list[dict[str, Any]]:
        self.get_task(tid)
        return self._store().list_runs(tid, limit)

    def get_run(self, rid: str) -> dict[str, Any]:
        run = self._store().get_run(rid) if isinstance(rid, str) else None
        if run is None:
            raise TaskError(404, f"id: no task run {rid}")
        return run

    def run_logs(self, rid: str, lines: int | None = None) -> list[dict[str, Any]]:
        self.get_run(rid)
        return self._store().logs(rid, lines)

    async def wait_run(self, rid: str) -> dict[str, Any]:
        t = self._runs.get(rid)
        if t is not None:
            await asyncio.gather(t, return_exceptions=True)
        return self.get_run(rid)

    # -- runs ------------------------------------------------------------
    async def _resolve(self, workspace_id: int, args: ListenerArgs) -> ListenerModelRef:
        try:
            return await self.resolver(workspace_id, args.listener_model.name, args.listener_model.version)
        except ListenerModelError as exc:
            raise TaskError(400, str(exc)) from None

    async def launch(self, task: dict[str, Any], tick: float | None = None) -> dict[str, Any]:
        store = self._store()
        run = store.create_run(task["id"], self.instance, tick)
        rid = run["id"]
        self._run_task[rid] = task["id"]
        self._runs[rid] = asyncio.create_task(self._execute(rid, task), name=f"listener-run-{rid}")
        return run

    async def _acquire(self, ref: ListenerModelRef) -> tuple[tuple, Executor]:
        key = (self.executor_mode, *ref.cache_key)
        async with self._exec_lock:
            c = self._executors.get(key)
            if c is None or c.broken:
                ex = make_executor(ref, self.executor_mode)
                await ex.start()
                c = self._executors[key] = _Cached(ex, 0, time.monotonic())
            c.refs += 1
            c.last_used = time.monotonic()
            return key, c.executor

    async def _release(self, key: tuple, broken: bool) -> None:
        async with self._exec_lock:
            c = self._executors.get(key)
            if c is None:
                return
            c.refs -= 1
            c.last_used = time.monotonic()
            if broken:
                c.broken = True
            if c.broken and c.refs <= 0:
                del self._executors[key]
                with contextlib.suppress(Exception):
                    await c.executor.stop()

    async def _reap_executors(self) -> None:
        if self._exec_lock.locked():  # a listener model is starting (maybe for minutes): reap next tick,
            return                    # never stall this loop's heartbeats and kill checks behind it
        now = time.monotonic()
        async with self._exec_lock:
            for key, c in list(self._executors.items()):
                if c.refs <= 0 and now - c.last_used > self.executor_idle_seconds:
                    del self._executors[key]
                    with contextlib.suppress(Exception):
                        await c.executor.stop()

    def _count_settled(self, run: dict[str, Any]) -> None:
        """A run of a dead process, failed here: counted here (its own process never will)."""
        task = self.store.get_task(run["task_id"]) if self.store is not None else None
        if self.metrics is not None and task is not None:
            # rows it scored before dying are not counted: how many reached the log is not known here
            self.metrics.listener_run(task["monitored_pipeline"], task["listener_model"]["name"], "failed", 0, None)

    async def _execute(self, rid: str, task: dict[str, Any]) -> None:
        store = self._store()
        started = time.monotonic()

        def say(line: str) -> None:
            store.log(rid, line)

        key: tuple | None = None
        broken = False
        status, error = "failed", None
        stats = RunStats()
        try:
            args = ListenerArgs.model_validate(task["args"])
            try:
                async with asyncio.timeout(task["timeout_seconds"]):
                    ref = await self._resolve(task["workspace_id"], args)
                    say(f"starting listener model {ref.name} version {ref.version} ({self.executor_mode} executor)")
                    t0 = time.perf_counter()
                    try:
                        key, executor = await self._acquire(ref)
                    except Exception as exc:  # noqa: BLE001
                        raise ListenerModelError(
                            f"listener model {ref.name} failed to start: {type(exc).__name__}: {exc}"
                        ) from exc
                    say(f"listener model ready in {time.perf_counter() - t0:.2f}s")
                    try:
                        await run_listener(
                            run_id=rid, task=task, args=args, ref=ref, executor=executor,
                            logstore=self.logstore, store=store, log=say, stats=stats,  # type: ignore[arg-type]
                        )
                    except (asyncio.CancelledError, TimeoutError):
                        raise
                    except Exception:
                        broken = True
                        raise
            except TimeoutError:
                status, error = "timed_out", f"timed out after {task['timeout_seconds']:g}s (timeout)"
                say(error)
            else:
                status = "succeeded"
        except asyncio.CancelledError:
            if rid in self._kill_requested:
                status, error = "killed", "killed on request"
            elif rid in self._lease_lost:
                status, error = "failed", "stopped: its lease lapsed and another process settled it"
            else:
                status, error = "failed", "interrupted: the runtime stopped during the run"
            say(error)
        except TaskError as exc:
            error = exc.message
            say(f"failed: {error}")
        except Exception as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ListenerModelError) else str(exc)
            say(f"failed: {error}")
            log.warning("listener run %s failed: %s", rid, error)
        finally:
            if key is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release(key, broken))
            if stats.rows_read:
                store.update_run(rid, rows_read=stats.rows_read, rows_scored=stats.rows_scored,
                                 rows_skipped=stats.rows_skipped)
            if store.finish_run(rid, status, error) and self.metrics is not None:
                self.metrics.listener_run(task["monitored_pipeline"], task["listener_model"]["name"], status,
                                          stats.rows_scored, time.monotonic() - started)
            self._runs.pop(rid, None)
            self._run_task.pop(rid, None)
            self._kill_requested.discard(rid)
            self._lease_lost.discard(rid)

    # -- scheduler -------------------------------------------------------
    @property
    def fires_ticks(self) -> bool:
        return self.role in ("all", "scheduler")

    async def _schedule_loop(self) -> None:
        while True:
            try:
                await self._renew_leases()
                if self.fires_ticks:
                    await self._settle_expired_runs()
                    await self._schedule_once()
                await self._stop_runs_of_killed_tasks()
                await self._reap_executors()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("listener scheduler tick failed")
            await asyncio.sleep(self.tick_seconds)

    async def _renew_leases(self) -> None:
        """Heartbeat the runs this process is running, a few times per lease. A run found already
        settled (the scheduler judged this process dead) is stopped here: its claims are no
        longer its own."""
        now = time.monotonic()
        if not self._runs or now - self._last_beat < self.lease_seconds / 6:
            return
        self._last_beat = now
        lost = await asyncio.to_thread(self._store().beat, list(self._runs))
        for rid in lost:
            t = self._runs.get(rid)
            if t is not None and not t.done():
                log.warning("listener run %s was settled by another process (its lease lapsed); stopping it here", rid)
                self._lease_lost.add(rid)
                t.cancel()

    async def _settle_expired_runs(self) -> None:
        """Fail the runs of processes that stopped heartbeating (a serving replica killed mid-run)
        and settle their claims, so that their rows are scored by the next run."""
        now = time.monotonic()
        if now - self._last_settle < self.lease_seconds / 6:
            return
        self._last_settle = now
        store = self._store()
        expired = store.expired_runs(time.time() - self.lease_seconds, self.instance)
        for run in expired:
            reason = (f"interrupted: the process running it stopped (no heartbeat for {self.lease_seconds:g}s); "
                      "its unscored rows go to the next run")
            store.log(run["id"], reason)
            if store.finish_run(run["id"], "failed", reason):
                self._count_settled(run)
            log.warning("listener run %s of task %s: %s", run["id"], run["task_id"], reason)
        if expired:
            await asyncio.to_thread(reconcile, store, self.logstore, set(), lambda m: log.info("%s", m),
                                    {run["id"] for run in expired})

    async def _stop_runs_of_killed_tasks(self) -> None:
        """Runs here whose task was killed or deleted through another process (another replica)."""
        if not self._run_task:
            return
        store = self._store()
        for rid, tid in list(self._run_task.items()):
            if rid in self._kill_requested:
                continue
            task = store.get_task(tid)
            if task is None or task["status"] in ("pending_kill", "killed"):
                t = self._runs.get(rid)
                if t is not None and not t.done():
                    self._kill_requested.add(rid)
                    t.cancel()

    async def _schedule_once(self, now: float | None = None) -> None:
        store = self._store()
        now = time.time() if now is None else now
        for task in store.list_tasks():
            if not task["schedule"] or task["status"] not in ("pending", "started"):
                continue
            last = task["last_tick"] if task["last_tick"] is not None else task["created_at"]
            tick = due_tick(task["schedule"], last, now)
            if tick is None:
                continue
            if store.claim_tick(task["id"], tick, next_tick(task["schedule"], now)):
                run = await self.launch(task, tick=tick)
                missed = ""
                if next_tick(task["schedule"], last) < tick:
                    missed = " (ticks missed while the runtime was down ran once)"
                store.log(run["id"], f"cron tick {_iso_s(tick)} of schedule {task['schedule']!r}{missed}")


def _timeout(v: Any) -> float:
    if v is None:
        return 600.0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise TaskError(400, f"timeout: expected a positive number of seconds, got {v!r}")
    return float(v)


def _iso_s(t: float | None) -> str | None:
    from .engine import iso

    return iso(t * 1000.0) if t is not None else None
