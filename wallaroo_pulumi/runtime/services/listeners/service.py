"""ListenerService: listener tasks (run once or on a cron schedule) and their runs, on the
runtime's database and log store. Roles, leases and the scheduler: ``docs/listeners.md``."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from wallaroo_pulumi.orchestration import ORCHESTRATION
from wallaroo_pulumi.runtime.core.errors import describe_validation_error
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.services.orchestrations import TaskRunner
from wallaroo_pulumi.runtime.sidekick import LocalPlacement, Placement
from wallaroo_pulumi.runtime.store.db import Database
from wallaroo_pulumi.runtime.store.logs import LogStore

from .cron import next_tick, validate_schedule
from .engine import ListenerArgs
from .errors import BadListenerRequest, ListenerConflict, ListenerNotFound, ListenerUnavailable
from .executor import ListenerModelRef, Resolver, builtin_resolver, chain_resolvers
from .executor_cache import ExecutorCache
from .linked import user_listener
from .results import ScoreQueries
from .run_api import ListenerRunApi
from .runs import Runs, resolve_listener
from .scheduler import Scheduler
from .store import TaskStore

ROLES = ("all", "serve", "scheduler")
log = logging.getLogger("wallaroo_pulumi.listeners")


def parse_args(payload: Any) -> ListenerArgs:
    """A task's `json`, validated; a 400 naming the bad field."""
    if not isinstance(payload, dict):
        raise BadListenerRequest("json: expected an object {monitored_pipeline, listener_model: {name, version?}, ...}")
    try:
        return ListenerArgs.model_validate(payload)
    except ValidationError as exc:
        raise BadListenerRequest(describe_validation_error(exc, "json")) from None


def _timeout(v: Any) -> float:
    if v is None:
        return 600.0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise BadListenerRequest(f"timeout: expected a positive number of seconds, got {v!r}")
    return float(v)


@dataclass
class _Started:
    """What :meth:`ListenerService.start` builds on the database."""

    store: TaskStore
    runs: Runs
    scheduler: Scheduler


class ListenerService:
    def __init__(
        self,
        db: Database,
        logstore: LogStore,
        *,
        resolver: Resolver | None = None,
        executor: str = "auto",
        tick_seconds: float = 0.25,
        executor_idle_seconds: float = 60.0,
        role: str = "all",
        lease_seconds: float = 30.0,
        metrics: Metrics | None = None,
        placement: Placement | None = None,
        tasks: TaskRunner | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds: expected a positive number of seconds, got {lease_seconds!r}")
        self.db = db
        self.logstore = logstore
        self.resolver = chain_resolvers(resolver, builtin_resolver)
        self.role = role
        self.tick_seconds = tick_seconds
        self.lease_seconds = lease_seconds
        self.metrics = metrics
        self.tasks = tasks  # runs user orchestrations' tasks; None: only the built-in llm-listener runs
        self.instance = uuid.uuid4().hex
        self.executors = ExecutorCache(executor, executor_idle_seconds, placement or LocalPlacement())
        self.results = ScoreQueries(self.list_tasks, logstore)
        self._on: _Started | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        """Open the task tables, settle what a dead process left, start the scheduler loop."""
        if self._started:
            return
        store = TaskStore(self.db)
        runs = Runs(store, self.logstore, self.executors, self.resolver, instance=self.instance,
                    lease_seconds=self.lease_seconds, metrics=self.metrics, tasks=self.tasks)
        scheduler = Scheduler(store, self.logstore, runs, self.executors, role=self.role, instance=self.instance,
                              tick_seconds=self.tick_seconds, lease_seconds=self.lease_seconds, metrics=self.metrics)
        self._on = _Started(store, runs, scheduler)
        await scheduler.recover()
        if self.tasks is not None:  # the keys of user runs a dead process left go with them
            revoked = await self.tasks.settle_stale(lambda: {r["id"] for r in store.running_runs()})
            if revoked:
                log.info("revoked %d key(s) of task runs that ended with a stopped runtime", revoked)
        scheduler.start()
        self._started = True

    async def stop(self) -> None:
        """Stop the scheduler loop, interrupt the runs in progress, stop the executors."""
        if not self._started or self._on is None:
            return
        self._started = False
        await self._on.scheduler.stop()
        await self._on.runs.close()
        await self.executors.close()

    def _live(self) -> _Started:
        if self._on is None:
            raise ListenerUnavailable("the listener service is not started")
        return self._on

    @property
    def store(self) -> TaskStore:
        return self._live().store

    @property
    def scheduler(self) -> Scheduler:
        return self._live().scheduler

    @property
    def run_api(self) -> ListenerRunApi:
        """What a built-in run in a process of its own calls back (routes/listener_runs.py)."""
        return ListenerRunApi(self._live().store, self.logstore)

    # -- tasks -----------------------------------------------------------
    async def resolve(self, workspace_id: int, args: ListenerArgs) -> ListenerModelRef:
        return await resolve_listener(self.resolver, workspace_id, args)

    async def create_task(
        self,
        *,
        name: str,
        workspace_id: int,
        json_args: Any,
        schedule: str | None = None,
        timeout: float | None = None,
        orch_id: str | None = None,
        continuous: bool = False,
    ) -> dict[str, Any]:
        """A task that runs now (no `schedule`), on every cron tick of `schedule`, or `continuous`ly
        (restarted with backoff whenever it ends): the built-in llm-listener (`orch_id` None or its
        name) or an uploaded orchestration's main.py."""
        live = self._live()
        store = live.store
        if orch_id not in (None, ORCHESTRATION):
            return await self._create_user_task(live, name=name, workspace_id=workspace_id, json_args=json_args,
                                                schedule=schedule, timeout=timeout, orch_id=orch_id,
                                                continuous=continuous)
        if continuous:
            raise BadListenerRequest(f"orch_id: the built-in {ORCHESTRATION!r} runs once or on a schedule, not "
                                     "continuously; use run_scheduled")
        args = parse_args(json_args)
        if schedule is not None:
            schedule = validate_schedule(schedule)
        timeout = _timeout(timeout)
        await self.resolve(workspace_id, args)  # fail now, not at the first tick
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
            await live.runs.launch(task)
            task = store.get_task(task["id"])
        return task  # type: ignore[return-value]

    async def _create_user_task(self, live: _Started, *, name: str, workspace_id: int, json_args: Any,
                                schedule: str | None, timeout: float | None, orch_id: str,
                                continuous: bool) -> dict[str, Any]:
        if self.tasks is None:
            raise BadListenerRequest(f"orch_id: only the built-in {ORCHESTRATION!r} orchestration runs here; got {orch_id!r}")
        orch = self.tasks.orchestrations.find(orch_id)
        if orch is None:
            raise ListenerNotFound(f"orch_id: no orchestration {orch_id!r}; upload one (/v1/api/orchestration/upload)")
        if orch["workspace_id"] != workspace_id:
            raise BadListenerRequest(f"orch_id: orchestration {orch_id} is in workspace {orch['workspace_id']}, "
                                     f"not {workspace_id}")
        if orch["status"] != "ready":
            why = f" ({orch['error']})" if orch["error"] else "; wait until its status is ready"
            raise ListenerConflict(f"orch_id: orchestration {orch_id} is {orch['status']}{why}")
        if json_args is None:
            json_args = {}
        if not isinstance(json_args, dict):
            raise BadListenerRequest(f"json: expected an object (the task's arguments), got {type(json_args).__name__}")
        monitored, listener = user_listener(json_args, orch["name"] or orch_id)
        if schedule is not None:
            schedule = validate_schedule(schedule)
        timeout_s = None if continuous and timeout is None else _timeout(timeout)
        now = time.time()
        task = live.store.create_task(
            name=name, workspace_id=workspace_id, orch_id=orch_id, monitored_pipeline=monitored, listener_model=listener,
            schedule=schedule, window_seconds=0.0, timeout_seconds=timeout_s or 0.0, args=json_args,
            next_run=next_tick(schedule, now) if schedule else None, last_tick=now if schedule else None,
            kind="continuous" if continuous else None,
        )
        if schedule or continuous:
            return live.store.update_task(task["id"], status="started")  # type: ignore[return-value]
        await live.runs.launch(task)
        return live.store.get_task(task["id"])  # type: ignore[return-value]

    async def update_task(
        self, tid: str, *, schedule: str | None = None, json_args: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        store = self.store
        task = self.get_task(tid)
        if task["status"] in ("killed", "pending_kill"):
            raise ListenerConflict(f"id: task {tid} is {task['status']}; create a new task instead")
        fields: dict[str, Any] = {}
        if json_args is not None and task["orch_id"] not in (None, ORCHESTRATION):
            if not isinstance(json_args, dict):
                raise BadListenerRequest(f"json: expected an object (the task's arguments), got {type(json_args).__name__}")
            orch = self.tasks.orchestrations.find(task["orch_id"]) if self.tasks is not None else None
            monitored, listener = user_listener(json_args, (orch or {}).get("name") or task["orch_id"])
            fields.update(args=json_args, monitored_pipeline=monitored, listener_model=listener)
        elif json_args is not None:
            args = parse_args(json_args)
            await self.resolve(task["workspace_id"], args)
            fields.update(
                args=args.model_dump(mode="json", exclude_none=True), monitored_pipeline=args.monitored_pipeline,
                listener_model=args.listener_model.model_dump(), window_seconds=args.window_seconds,
            )
        if schedule is not None:
            if task["schedule"] is None:
                raise BadListenerRequest("schedule: this task runs once; create a scheduled task (run_scheduled) instead")
            schedule = validate_schedule(schedule)
            if schedule != task["schedule"]:
                now = time.time()
                fields.update(schedule=schedule, next_run=next_tick(schedule, now),
                              last_tick=max(task["last_tick"] or 0.0, now))
        if timeout is not None:
            fields["timeout_seconds"] = _timeout(timeout)
        updated = store.update_task(tid, **fields)
        if task["type"] == "continuous" and fields.get("args", task["args"]) != task["args"]:
            # its run goes on with the old arguments: stopped, it starts again with the new ones
            await self._live().runs.kill(self._live().runs.of_task(tid))
        return updated  # type: ignore[return-value]

    def get_task(self, tid: Any, field: str = "id") -> dict[str, Any]:
        """The task `tid`, named by request field `field` (400/404 say which)."""
        if not isinstance(tid, str) or not tid:
            raise BadListenerRequest(f"{field}: expected a task id string, got {tid!r}")
        task = self.store.get_task(tid)
        if task is None:
            raise ListenerNotFound(f"{field}: no task {tid}")
        return task

    def list_tasks(self, workspace_id: int | None = None, killed: bool | None = None, *, orch_id: str | None = None,
                   orch_sha: str | None = None) -> list[dict[str, Any]]:
        """Tasks, of `orch_id` (an upload's id or the built-in's name) or of the uploads of content `orch_sha`."""
        tasks = self.store.list_tasks(workspace_id)
        if killed is not None:
            tasks = [t for t in tasks if (t["status"] == "killed") == killed]
        if orch_id is not None:
            tasks = [t for t in tasks if (t["orch_id"] or ORCHESTRATION) == orch_id]
        if orch_sha is not None:
            found = self.tasks.orchestrations.find if self.tasks is not None else (lambda _o: None)
            tasks = [t for t in tasks if (found(t["orch_id"] or "") or {}).get("sha") == orch_sha]
        return tasks

    async def kill_task(self, tid: str) -> dict[str, Any]:
        """Stop the task's runs (they end `killed`) and its schedule."""
        live = self._live()
        task = self.get_task(tid)
        if task["status"] == "killed":
            return task
        running = live.runs.of_task(tid)
        if running:
            live.store.update_task(tid, status="pending_kill", next_run=None)
            await live.runs.kill(running)
        return live.store.update_task(tid, status="killed", next_run=None)  # type: ignore[return-value]

    async def delete_task(self, tid: str) -> None:
        self.get_task(tid)
        await self.kill_task(tid)
        self.store.delete_task(tid)

    # -- runs ------------------------------------------------------------
    def list_runs(
        self, tid: str, limit: int | None = None, *, status: str | None = None,
        window: tuple[int, int] | None = None, field: str = "id",
    ) -> list[dict[str, Any]]:
        """The task's runs, newest first; only those of `status` started within `window` (epoch ms)."""
        self.get_task(tid, field)
        if status is None and window is None:
            return self.store.list_runs(tid, limit)
        runs = [r for r in self.store.list_runs(tid) if (status is None or r["status"] == status)
                and (window is None or window[0] <= r["started"] * 1000 < window[1])]
        return runs[:limit] if limit is not None else runs

    def get_run(self, rid: Any, field: str = "id") -> dict[str, Any]:
        run = self.store.get_run(rid) if isinstance(rid, str) else None
        if run is None:
            raise ListenerNotFound(f"{field}: no task run {rid}")
        return run

    def run_logs(self, rid: str, lines: int | None = None) -> list[dict[str, Any]]:
        self.get_run(rid)
        return self.store.logs(rid, lines)

    async def wait_run(self, rid: str) -> dict[str, Any]:
        """The run once it has ended (at once if it is not running here)."""
        if self._on is not None:
            await self._on.runs.wait(rid)
        return self.get_run(rid)
