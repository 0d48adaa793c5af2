"""The Wallaroo task API's shapes (the SDK's generated `Task`, `TaskRun` and
`GetLogsForRunResponse200`) of a listener task, a run and a run's log, with our own fields beside
Wallaroo's (the generated models keep unknown fields as additional properties)."""

from __future__ import annotations

from typing import Any

from wallaroo_pulumi.orchestration import ORCHESTRATION, ORCHESTRATION_ID

from .engine import iso, score_pipeline_name

# a run's status as Wallaroo's TaskStatus spells it (the store's own words on the left)
TASK_STATUS = {"running": "running", "succeeded": "success", "failed": "failure", "timed_out": "timed_out",
               "killed": "killed"}
LAST_RUNS = 5  # Wallaroo's default `run_limit`
RUN_TYPE = {"run_once": "Oneshot", "scheduled": "CronJob", "continuous": "NetworkService"}


def task_status(run_status: str | None) -> str | None:
    return None if run_status is None else TASK_STATUS.get(run_status, "unknown")


def _at(seconds: float | None) -> str | None:
    return iso(seconds * 1000) if seconds else None


def task_view(t: dict[str, Any], last_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """`Task`: `status` is Wallaroo's ArbexStatus (pending, started, pending_kill, killed)."""
    view = {
        "id": t["id"],
        "name": t["name"],
        "workspace_id": t["workspace_id"],
        "status": t["status"],
        "killed": t["status"] == "killed",
        "input_data": t["args"],
        "last_runs": [run_view(r) for r in last_runs],
        "created_at": _at(t["created_at"]),
        "updated_at": _at(t["updated_at"]),
        "type": t["type"],
        # Wallaroo's run_type (the SDK's task_type()): which endpoint made the task
        "run_type": RUN_TYPE[t["type"]],
        "schedule": t["schedule"],
        "timeout": t["timeout_seconds"] or None,
        "next_run": _at(t["next_run"]),
        "last_tick": _at(t["last_tick"]),
        "last_run_status": task_status(t["last_run_status"]),
    }
    scored = {} if not t["monitored_pipeline"] else {
        "monitored_pipeline": t["monitored_pipeline"],
        "listener_model": t["listener_model"],
        "score_pipeline": t["args"].get("output_pipeline")
        or score_pipeline_name(t["monitored_pipeline"], t["listener_model"]["name"]),
    }
    if t["orch_id"] not in (None, ORCHESTRATION):  # a user task: a listener only if its json names a pipeline
        return {**view, "orch_id": t["orch_id"], "orchestration": t["orch_id"], **scored}
    return {**view, "orch_id": ORCHESTRATION_ID, "orchestration": ORCHESTRATION, **scored}


def run_view(r: dict[str, Any]) -> dict[str, Any]:
    """`TaskRun`: `status` is Wallaroo's TaskStatus (running, success, failure, timed_out, killed)."""
    return {
        "run_id": r["id"],
        "task": r["task_id"],
        "status": task_status(r["status"]),
        "created_at": _at(r["started"]),
        "updated_at": _at(r["finished"] or r["heartbeat"] or r["started"]),
        "tick": _at(r["tick"]),
        "started_at": _at(r["started"]),
        "finished_at": _at(r["finished"]),
        "window_start": _at(r["window_start"]),
        "window_end": _at(r["window_end"]),
        "rows_read": r["rows_read"],
        "rows_scored": r["rows_scored"],
        "rows_skipped": r["rows_skipped"],
        "error": r["error"],
    }


def logs_view(rid: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": rid, "logs": [f"{iso(r['ts'] * 1000)} {r['line']}" for r in rows]}
