"""The Wallaroo task API's shapes of a listener task, a run and a run's log."""

from __future__ import annotations

from typing import Any

from .engine import ORCHESTRATION, iso, score_pipeline_name

RUN_STATUS_WALLAROO = {"running": "running", "succeeded": "success"}  # everything else: failure


def task_view(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": t["id"],
        "name": t["name"],
        "workspace_id": t["workspace_id"],
        "orch_id": t["orch_id"] or ORCHESTRATION,
        "orchestration": ORCHESTRATION,
        "type": t["type"],
        "status": t["status"],
        "schedule": t["schedule"],
        "timeout": t["timeout_seconds"],
        "json": t["args"],
        "monitored_pipeline": t["monitored_pipeline"],
        "listener_model": t["listener_model"],
        "score_pipeline": t["args"].get("output_pipeline")
        or score_pipeline_name(t["monitored_pipeline"], t["listener_model"]["name"]),
        "next_run": iso(t["next_run"] * 1000) if t["next_run"] else None,
        "last_tick": iso(t["last_tick"] * 1000) if t["last_tick"] else None,
        "last_run_status": t["last_run_status"],
        "created_at": iso(t["created_at"] * 1000),
        "updated_at": iso(t["updated_at"] * 1000),
    }


def run_view(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "run_id": r["id"],
        "task_id": r["task_id"],
        "status": r["status"],
        "run_status": RUN_STATUS_WALLAROO.get(r["status"], "failure"),
        "tick": iso(r["tick"] * 1000) if r["tick"] else None,
        "created_at": iso(r["started"] * 1000),
        "started_at": iso(r["started"] * 1000),
        "finished_at": iso(r["finished"] * 1000) if r["finished"] else None,
        "window_start": iso(r["window_start"] * 1000) if r["window_start"] else None,
        "window_end": iso(r["window_end"] * 1000) if r["window_end"] else None,
        "rows_read": r["rows_read"],
        "rows_scored": r["rows_scored"],
        "rows_skipped": r["rows_skipped"],
        "error": r["error"],
    }


def logs_view(rid: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": rid, "logs": [f"{iso(r['ts'] * 1000)} {r['line']}" for r in rows]}
