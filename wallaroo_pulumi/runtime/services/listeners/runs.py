"""The listener runs of this process: launch one as an asyncio task, record how it ended, stop it
on kill, heartbeat its lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wallaroo_pulumi.orchestration import ORCHESTRATION
from wallaroo_pulumi.runtime.core.memory import trim
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.services.orchestrations import OrchestrationNotReady, TaskFailed, TaskRunner
from wallaroo_pulumi.runtime.store.logs import LogStore

from . import process_run
from .engine import ListenerArgs, RunStats, reconcile, run_listener
from .errors import BadListenerRequest
from .executor import ListenerModelError, ListenerModelRef, Resolver
from .executor_cache import ExecutorCache, Key
from .store import TaskStore

log = logging.getLogger("wallaroo_pulumi.listeners")


async def resolve_listener(resolver: Resolver, workspace_id: int, args: ListenerArgs) -> ListenerModelRef:
    """The listener model `args` names; a 400 naming `listener_model` when there is none."""
    try:
        return await resolver(workspace_id, args.listener_model.name, args.listener_model.version)
    except ListenerModelError as exc:
        raise BadListenerRequest(str(exc)) from None


class Runs:
    def __init__(
        self,
        store: TaskStore,
        logstore: LogStore,
        executors: ExecutorCache,
        resolver: Resolver,
        *,
        instance: str,
        lease_seconds: float,
        metrics: Metrics | None,
        tasks: TaskRunner | None = None,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.logstore = logstore
        self.executors = executors
        self.resolver = resolver
        self.instance = instance
        self.lease_seconds = lease_seconds
        self.metrics = metrics
        self._runs: dict[str, asyncio.Task[None]] = {}  # run id -> the task running it
        self._run_task: dict[str, str] = {}  # run id -> its listener task's id
        self._kill_requested: set[str] = set()
        self._lease_lost: set[str] = set()
        self._last_beat = 0.0  # monotonic: heartbeats go out a few times a lease
        # run log lines are database commits (an fsync each): written in order by one thread, never on the loop
        self._log_writer = ThreadPoolExecutor(1, thread_name_prefix="listener-run-log")

    async def launch(self, task: dict[str, Any], tick: float | None = None) -> dict[str, Any]:
        """Record a run of `task` owned by this process and start it; returns the run row."""
        row = self.store.create_run(task["id"], self.instance, tick)
        rid = row["id"]
        self._run_task[rid] = task["id"]
        user = task["orch_id"] not in (None, ORCHESTRATION)
        # the built-in runs as a task of its own where a task runner is (the runtime); in-process without one
        run = self._execute_user(rid, task) if user else (
            self._execute(rid, task) if self.tasks is None else self._execute_process(rid, task))
        self._runs[rid] = asyncio.create_task(run, name=f"task-run-{rid}")
        return row

    def of_task(self, tid: str) -> list[str]:
        """Ids of the runs of task `tid` in progress here."""
        return [rid for rid, t in self._run_task.items() if t == tid]

    async def kill(self, run_ids: list[str]) -> None:
        """Stop these runs (each ends `killed`) and wait for them."""
        running = [self._runs[rid] for rid in run_ids if rid in self._runs]
        for rid in run_ids:
            self._kill_requested.add(rid)
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def wait(self, rid: str) -> None:
        t = self._runs.get(rid)
        if t is not None:
            await asyncio.gather(t, return_exceptions=True)

    async def close(self) -> None:
        """Interrupt every run here (each ends `failed`, interrupted) and wait for them."""
        runs = list(self._runs.values())
        for t in runs:
            t.cancel()
        if runs:
            await asyncio.gather(*runs, return_exceptions=True)

    async def renew_leases(self) -> None:
        """Heartbeat the runs here, a few times per lease. A run found already settled (another
        process judged this one dead) is stopped: its claims are no longer its own."""
        now = time.monotonic()
        if not self._runs or now - self._last_beat < self.lease_seconds / 6:
            return
        self._last_beat = now
        lost = await asyncio.to_thread(self.store.beat, list(self._runs))
        for rid in lost:
            t = self._runs.get(rid)
            if t is not None and not t.done():
                log.warning("listener run %s was settled by another process (its lease lapsed); stopping it here", rid)
                self._lease_lost.add(rid)
                t.cancel()

    async def stop_runs_of_killed_tasks(self) -> None:
        """Stop the runs here whose task was killed or deleted through another process."""
        if not self._run_task:
            return
        for rid, tid in list(self._run_task.items()):
            if rid in self._kill_requested:
                continue
            task = self.store.get_task(tid)
            if task is None or task["status"] in ("pending_kill", "killed"):
                t = self._runs.get(rid)
                if t is not None and not t.done():
                    self._kill_requested.add(rid)
                    t.cancel()

    def _cancelled(self, rid: str) -> tuple[str, str]:
        """The status and reason of a run that was cancelled: killed, or stopped under it."""
        if rid in self._kill_requested:
            return "killed", "killed on request"
        if rid in self._lease_lost:
            return "failed", "stopped: its lease lapsed and another process settled it"
        return "failed", "interrupted: the runtime stopped during the run"

    async def _execute_user(self, rid: str, task: dict[str, Any]) -> None:
        """A run of a user orchestration's task: its main.py in a sandbox (orchestrations.runner)."""
        store = self.store

        def say(line: str) -> None:
            self._log_writer.submit(store.log, rid, line)

        status, error = "failed", None
        deadline = task["timeout_seconds"] or None
        try:
            if self.tasks is None:
                raise OrchestrationNotReady(f"orch_id: user orchestrations do not run here ({task['orch_id']})")
            try:
                async with asyncio.timeout(deadline):
                    await self.tasks.run(rid, task, say, deadline)
            except TimeoutError:
                status, error = "timed_out", f"timed out after {deadline:g}s (timeout): main.py was killed"
            else:
                status = "succeeded"
        except asyncio.CancelledError:
            status, error = self._cancelled(rid)
        except TaskFailed as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the run's status and log say why
            error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("task run %s failed: %s", rid, error)
        finally:
            if error:
                say(f"stderr F [runtime] {status}: {error}")
            with contextlib.suppress(Exception):  # every line is written before the run is settled
                await asyncio.shield(asyncio.wrap_future(self._log_writer.submit(lambda: None)))
            store.finish_run(rid, status, error)
            self._runs.pop(rid, None)
            self._run_task.pop(rid, None)
            self._kill_requested.discard(rid)
            self._lease_lost.discard(rid)

    async def _execute_process(self, rid: str, task: dict[str, Any]) -> None:
        """A run of the built-in in a process of its own, through the task runner (process_run, D58)."""
        assert self.tasks is not None
        store = self.store
        lines: list[str] = []

        def say(line: str) -> None:
            lines.append(line)
            del lines[:-20]
            self._log_writer.submit(store.log, rid, line)

        started = time.monotonic()
        status, error = "failed", None
        args = ListenerArgs.model_validate(task["args"])
        try:
            try:
                async with asyncio.timeout(task["timeout_seconds"]):
                    ref = await resolve_listener(self.resolver, task["workspace_id"], args)
                    launch = process_run.launch(rid, task, args, ref, self.executors.mode)
                    await self.tasks.run_builtin(rid, task, say, task["timeout_seconds"], launch,
                                                 lambda key_id: store.update_run(rid, key_id=key_id))
            except TimeoutError:
                status, error = "timed_out", f"timed out after {task['timeout_seconds']:g}s (timeout)"
            else:
                status = "succeeded"
        except asyncio.CancelledError:
            status, error = self._cancelled(rid)
        except TaskFailed as exc:
            error = process_run.failure(lines, args, str(exc))
        except Exception as exc:  # noqa: BLE001 - the run's status and log say why
            error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("listener run %s failed: %s", rid, error)
        finally:
            if error:
                say(f"stderr F [runtime] {status}: {error}")
            with contextlib.suppress(Exception):  # every line is written before the run is settled
                await asyncio.shield(asyncio.wrap_future(self._log_writer.submit(lambda: None)))
            await asyncio.shield(self._settle_process_run(rid, task, status, error, started))

    async def _settle_process_run(self, rid: str, task: dict[str, Any], status: str, error: str | None,
                                  started: float) -> None:
        """The claims a killed or failed process left are settled (scored if appended, else given back),
        the run's outcome recorded and counted as an in-process run's is."""
        with contextlib.suppress(Exception):
            await asyncio.to_thread(reconcile, self.store, self.logstore, set(), None, {rid})
        row = self.store.get_run(rid) or {}
        if self.store.finish_run(rid, status, error) and self.metrics is not None:
            self.metrics.listener_run(task["monitored_pipeline"], task["listener_model"]["name"], status,
                                      row.get("rows_scored") or 0, time.monotonic() - started)
        self._runs.pop(rid, None)
        self._run_task.pop(rid, None)
        self._kill_requested.discard(rid)
        self._lease_lost.discard(rid)

    async def _execute(self, rid: str, task: dict[str, Any]) -> None:
        store = self.store
        mode = self.executors.mode
        started = time.monotonic()

        def say(line: str) -> None:
            self._log_writer.submit(store.log, rid, line)

        key: Key | None = None
        broken = False
        status, error = "failed", None
        stats = RunStats()
        try:
            args = ListenerArgs.model_validate(task["args"])
            try:
                async with asyncio.timeout(task["timeout_seconds"]):
                    ref = await resolve_listener(self.resolver, task["workspace_id"], args)
                    say(f"starting listener model {ref.name} version {ref.version} ({mode} executor)")
                    t0 = time.perf_counter()
                    try:
                        key, executor = await self.executors.acquire(ref)
                    except Exception as exc:  # noqa: BLE001
                        raise ListenerModelError(
                            f"listener model {ref.name} failed to start: {type(exc).__name__}: {exc}"
                        ) from exc
                    say(f"listener model ready in {time.perf_counter() - t0:.2f}s")
                    try:
                        await run_listener(
                            run_id=rid, task=task, args=args, ref=ref, executor=executor,
                            logstore=self.logstore, store=store, log=say, stats=stats,
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
            status, error = self._cancelled(rid)
            say(error)
        except BadListenerRequest as exc:
            error = exc.message
            say(f"failed: {error}")
        except Exception as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ListenerModelError) else str(exc)
            say(f"failed: {error}")
            log.warning("listener run %s failed: %s", rid, error)
        finally:
            with contextlib.suppress(Exception):  # every line is written before the run is settled
                await asyncio.shield(asyncio.wrap_future(self._log_writer.submit(lambda: None)))
            retired = self.executors.release(key, executor, broken) if key is not None else None
            if stats.rows_read:
                store.update_run(rid, rows_read=stats.rows_read, rows_scored=stats.rows_scored,
                                 rows_skipped=stats.rows_skipped)
            if store.finish_run(rid, status, error) and self.metrics is not None:
                self.metrics.listener_run(task["monitored_pipeline"], task["listener_model"]["name"], status,
                                          stats.rows_scored, time.monotonic() - started)
            if retired is not None:  # a broken executor: stopped after the outcome is recorded (it may take a while)
                with contextlib.suppress(Exception):
                    await asyncio.shield(retired.stop())
            self._runs.pop(rid, None)
            self._run_task.pop(rid, None)
            self._kill_requested.discard(rid)
            self._lease_lost.discard(rid)
            with contextlib.suppress(Exception):  # what the run freed goes back to the system
                await asyncio.shield(asyncio.to_thread(trim))
