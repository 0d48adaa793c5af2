"""The listener service's background loop: fire due cron ticks, heartbeat and settle run leases,
stop runs of tasks killed elsewhere, reap idle executors; and the start-up settlement of the runs
a dead process left."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from wallaroo_pulumi.orchestration import ORCHESTRATION
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.store.logs import LogStore

from .cron import due_tick, next_tick
from .engine import iso, reconcile
from .executor_cache import ExecutorCache
from .runs import Runs
from .store import TaskStore

log = logging.getLogger("wallaroo_pulumi.listeners")

BACKOFF_RUNS = 8  # the runs a continuous task's backoff looks back on
BACKOFF_MAX_S = 60.0
SHORT_RUN_S = 60.0  # a run that lasted longer resets the backoff


def restart_at(runs: list[dict[str, Any]]) -> float:
    """When a continuous task whose newest runs are `runs` (newest first, none running) starts
    again: 1 s after its last run ended, doubling for each run in a row that ended within a minute
    of its start, at most a minute; at once when it never ran."""
    if not runs:
        return 0.0
    short = 0
    for r in runs:
        if r["finished"] is None or r["finished"] - r["started"] >= SHORT_RUN_S:
            break
        short += 1
    return (runs[0]["finished"] or runs[0]["started"]) + min(BACKOFF_MAX_S, 2.0 ** max(short - 1, 0))


class Scheduler:
    def __init__(
        self,
        store: TaskStore,
        logstore: LogStore,
        runs: Runs,
        executors: ExecutorCache,
        *,
        role: str,
        instance: str,
        tick_seconds: float,
        lease_seconds: float,
        metrics: Metrics | None,
    ) -> None:
        self.store = store
        self.logstore = logstore
        self.runs = runs
        self.executors = executors
        self.role = role
        self.instance = instance
        self.tick_seconds = tick_seconds
        self.lease_seconds = lease_seconds
        self.metrics = metrics
        self._last_settle = 0.0  # monotonic: lease checks run a few times a lease
        self._loop: asyncio.Task[None] | None = None

    @property
    def fires_ticks(self) -> bool:
        return self.role in ("all", "scheduler")

    async def recover(self) -> None:
        """Fail the runs a dead process left `running` and settle their claims (role `serve`:
        none; role `scheduler`: only scheduled runs, since run-once runs belong to serving replicas)."""
        if self.role == "serve":
            return
        store = self.store
        live: set[str] = set()
        for run in store.running_runs():
            if run["owner"] == self.instance:
                continue
            if self.role == "scheduler" and run["tick"] is None:
                live.add(run["id"])  # a run-once run of a serving replica, maybe still going
                continue
            store.log(run["id"], "interrupted: the runtime stopped while this run was in progress")
            if store.finish_run(run["id"], "failed", "interrupted: the runtime stopped during the run"):
                self._count_settled(run)
        if self.role == "all":
            for t in store.list_tasks():
                if t["status"] == "pending_kill":
                    store.update_task(t["id"], status="killed", next_run=None)
        await asyncio.to_thread(reconcile, store, self.logstore, live, lambda m: log.info("%s", m))

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="listener-scheduler")

    async def stop(self) -> None:
        if self._loop:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop

    async def _run(self) -> None:
        while True:
            try:
                await self.runs.renew_leases()
                if self.fires_ticks:
                    await self._settle_expired_runs()
                    await self.schedule_once()
                await self.runs.stop_runs_of_killed_tasks()
                await self.executors.reap()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("listener scheduler tick failed")
            await asyncio.sleep(self.tick_seconds)

    def _count_settled(self, run: dict[str, Any]) -> None:
        """A run of a dead process, failed here: counted here (its own process never will)."""
        task = self.store.get_task(run["task_id"])
        if self.metrics is not None and task is not None and task["orch_id"] in (None, ORCHESTRATION):
            # rows it scored before dying are not counted: how many reached the log is not known here
            self.metrics.listener_run(task["monitored_pipeline"], task["listener_model"]["name"], "failed", 0, None)

    async def _settle_expired_runs(self) -> None:
        """Fail the runs of processes that stopped heartbeating (a serving replica killed mid-run)
        and settle their claims, so that their rows are scored by the next run."""
        now = time.monotonic()
        if now - self._last_settle < self.lease_seconds / 6:
            return
        self._last_settle = now
        store = self.store
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

    async def _restart(self, task: dict[str, Any], now: float) -> None:
        """Start a continuous task again once its last run has ended and its backoff has passed."""
        store = self.store
        if store.running_of(task["id"]):
            return
        due = restart_at(store.list_runs(task["id"], BACKOFF_RUNS))
        if now < due or not store.claim_restart(task["id"], task["last_tick"], now):
            return
        run = await self.runs.launch(task)
        store.log(run["id"], f"stdout F [runtime] continuous task {'started' if due == 0 else 'restarted'} "
                             f"({len(store.list_runs(task['id'], BACKOFF_RUNS)) - 1} earlier run(s))")

    def _still_running(self, task: dict[str, Any], tick: float) -> bool:
        """A built-in listener task runs one run at a time (D58): a tick that finds its last run still
        going is skipped (said in that run's log); the next run scores what this one would have."""
        if task["orch_id"] not in (None, ORCHESTRATION):
            return False
        running = self.store.running_of(task["id"])
        if running is not None:
            self.store.log(running, f"cron tick {iso(tick * 1000.0)} skipped: this run is still going")
        return running is not None

    async def schedule_once(self, now: float | None = None) -> None:
        """Launch a run of every scheduled task whose next tick is due; each tick is claimed in
        the database first, so it never runs twice."""
        store = self.store
        now = time.time() if now is None else now
        for task in store.list_tasks():
            if task["type"] == "continuous" and task["status"] in ("pending", "started"):
                await self._restart(task, now)
                continue
            if not task["schedule"] or task["status"] not in ("pending", "started"):
                continue
            last = task["last_tick"] if task["last_tick"] is not None else task["created_at"]
            tick = due_tick(task["schedule"], last, now)
            if tick is None:
                continue
            if store.claim_tick(task["id"], tick, next_tick(task["schedule"], now)):
                if self._still_running(task, tick):
                    continue
                run = await self.runs.launch(task, tick=tick)
                missed = ""
                if next_tick(task["schedule"], last) < tick:
                    missed = " (ticks missed while the runtime was down ran once)"
                store.log(run["id"], f"cron tick {iso(tick * 1000.0)} of schedule {task['schedule']!r}{missed}")
