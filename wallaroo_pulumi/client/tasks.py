"""The client's listener tasks API: create, list, update, kill, runs and their logs, listener results,
assays; mixed into `WallarooClient`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas costs ~0.25 s to import: only the methods that return frames load it,
    import pandas as pd  # not every Pulumi provider process and program that merely connects

from wallaroo_pulumi.client._shared import (
    ClientArea,
    iso,
    records_to_frame,
)
from wallaroo_pulumi.client.errors import WallarooError
from wallaroo_pulumi.client.models import (
    Task,
    TaskRun,
)
from wallaroo_pulumi.orchestration import ORCHESTRATION_ID


class TasksAPI(ClientArea):
    """Mixed into `WallarooClient`."""

    def create_task(
        self,
        name: str,
        json_args: dict[str, Any],
        schedule: str | None = None,
        timeout_s: float | None = None,
        workspace_id: int = 1,
        orch_id: str = ORCHESTRATION_ID,
        continuous: bool = False,
    ) -> Task:
        """Run an orchestration (default: the built-in `llm-listener`) once now, on a cron
        `schedule`, or `continuous`ly (restarted with backoff whenever it ends)."""
        payload: dict[str, Any] = {"name": name, "workspace_id": workspace_id, "json": json_args, "orch_id": orch_id}
        if timeout_s is not None:
            payload["timeout"] = timeout_s
        if continuous:
            return Task.model_validate(self._post("/v1/api/task/run_continuously", payload, f"run task {name!r}"))
        if schedule is not None:  # "" is a bad schedule (the runtime says why), not "run once"
            payload["schedule"] = schedule
            return Task.model_validate(self._post("/v1/api/task/run_scheduled", payload, f"schedule task {name!r}"))
        return Task.model_validate(self._post("/v1/api/task/run_once", payload, f"run task {name!r}"))

    def get_task(self, task_id: str) -> Task:
        return Task.model_validate(self._post("/v1/api/task/get_by_id", {"id": task_id}, f"task {task_id}"))

    def list_tasks(self, workspace_id: int | None = None) -> list[Task]:
        payload = {} if workspace_id is None else {"workspace_id": workspace_id}
        return [Task.model_validate(t) for t in self._post("/v1/api/task/list", payload, "list tasks")]

    def update_task(
        self,
        task_id: str,
        schedule: str | None = None,
        json_args: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Task:
        """Change a task in place: it keeps its id and its record of rows already scored."""
        payload: dict[str, Any] = {"id": task_id}
        for key, value in (("schedule", schedule), ("json", json_args), ("timeout", timeout_s)):
            if value is not None:
                payload[key] = value
        return Task.model_validate(self._post("/v1/api/task/update", payload, f"update task {task_id}"))

    def kill_task(self, task_id: str) -> Task:
        return Task.model_validate(self._post("/v1/api/task/kill", {"id": task_id}, f"kill task {task_id}"))

    def delete_task(self, task_id: str) -> None:
        """Kill a task's run in progress and remove the task (its scores stay)."""
        self._post("/v1/api/task/delete", {"id": task_id}, f"delete task {task_id}")

    def list_task_runs(self, task_id: str, limit: int | None = None) -> list[TaskRun]:
        payload: dict[str, Any] = {"task_id": task_id}
        if limit is not None:
            payload["limit"] = limit
        return [TaskRun.model_validate(r) for r in self._post("/v1/api/task/list_task_runs", payload, f"runs of task {task_id}")]

    def wait_for_run(
        self,
        task_id: str,
        timeout_s: float = 120.0,
        poll_s: float = 0.25,
        after: TaskRun | str | None = None,
    ) -> TaskRun:
        """The task's newest run once it has finished (success, failure, timed_out or killed).

        `after` (a run or run id, e.g. the last one this returned): wait for a newer run than that,
        so a scheduled task's next run is awaited instead of its last finished one."""
        after_id = after.id if isinstance(after, TaskRun) else after
        deadline = time.monotonic() + timeout_s
        while True:
            runs = self.list_task_runs(task_id, limit=1)
            newest = runs[0] if runs and runs[0].id != after_id else None
            if newest is not None and newest.status != "running":
                return newest
            if time.monotonic() > deadline:
                state = newest.status if newest else ("no run yet" if after_id is None else f"no run after {after_id}")
                raise WallarooError(f"task {task_id}: no finished run after {timeout_s:g}s ({state})")
            time.sleep(poll_s)

    def task_run_logs(self, run_id: str, lines: int | None = None) -> list[str]:
        payload: dict[str, Any] = {"id": run_id}
        if lines is not None:
            payload["lines"] = lines
        return self._post("/v1/api/task/get_logs_for_run", payload, f"logs of run {run_id}")["logs"]

    def listener_results(
        self,
        pipeline: str,
        listener: str | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        limit: int = 1000,
        run_id: str | None = None,
        newest_first: bool = True,
    ) -> pd.DataFrame:
        """Scores stored for `pipeline`'s logged inferences, one row per scored inference, newest
        first (``newest_first=False``: oldest first); with `run_id`, only what that listener run scored
        (e.g. ``wait_for_run(...).id``), however many older runs the window holds."""
        import pandas as pd
        payload: dict[str, Any] = {"pipeline": pipeline, "limit": limit, "order": "Desc" if newest_first else "Asc"}
        if listener:
            payload["listener"] = listener
        if run_id is not None:
            payload["run_id"] = run_id
        if start is not None:
            payload["start"] = iso(start)
        if end is not None:
            payload["end"] = iso(end)
        data = self._post("/v1/api/listeners/results", payload, f"listener results of {pipeline!r}")
        frames = []
        for result in data["results"]:
            frame = records_to_frame(result["records"])
            if not frame.empty:
                frame.insert(0, "score_pipeline", result["score_pipeline"])
                frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def assay(
        self,
        pipeline: str,
        score: str,
        baseline: tuple[datetime | str, datetime | str],
        window: tuple[datetime | str, datetime | str],
        listener: str | None = None,
        width_seconds: float | None = None,
        **options: Any,
    ) -> pd.DataFrame:
        """Drift of one score: each slice of `window` against `baseline`, one row per slice
        (start, end, score, status OK/Warning/Alert, ...). `options`: metric, bins, threshold, ..."""
        import pandas as pd
        payload: dict[str, Any] = {
            "pipeline": pipeline, "score": score,
            "baseline": {"start": iso(baseline[0]), "end": iso(baseline[1])},
            "window": {"start": iso(window[0]), "end": iso(window[1])},
            **options,
        }
        if listener:
            payload["listener"] = listener
        if width_seconds is not None:
            payload["width_seconds"] = width_seconds
        data = self._post("/v1/api/assays/run", payload, f"assay of {score!r} on {pipeline!r}")
        return pd.json_normalize(data["windows"])
