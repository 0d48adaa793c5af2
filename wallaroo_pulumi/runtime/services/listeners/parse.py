"""Fields of listener request bodies, each checked; a bad one is a 400 that names it."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request

from wallaroo_pulumi.orchestration import ORCHESTRATION, ORCHESTRATION_ID
from wallaroo_pulumi.runtime.store.logs.time_column import to_ms

from .errors import BadListenerRequest

ASSAY_OPTIONS = ("metric", "bins", "bin_mode", "aggregation", "threshold", "warning_threshold")


async def body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except Exception:  # noqa: BLE001
        raise BadListenerRequest("body: expected a JSON object") from None
    if not isinstance(data, dict):
        raise BadListenerRequest("body: expected a JSON object")
    return data


def text(d: dict[str, Any], k: str) -> str:
    v = d.get(k)
    if not isinstance(v, str) or not v:
        raise BadListenerRequest(f"{k}: expected a non-empty string, got {v!r}")
    return v


def optional_text(d: dict[str, Any], k: str) -> str | None:
    return None if d.get(k) is None else text(d, k)


def integer(d: dict[str, Any], k: str, default: int | None = None) -> int | None:
    v = d.get(k, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadListenerRequest(f"{k}: expected an integer, got {v!r}")
    return v


def limit(d: dict[str, Any]) -> int | None:
    n = integer(d, "limit", 1000)
    if n is not None and n < 1:
        raise BadListenerRequest(f"limit: expected a positive integer, got {n}")
    return n


def epoch_ms(d: dict[str, Any], k: str) -> int | None:
    return to_ms(d.get(k)) if d.get(k) is not None else None


def time_range(d: Any, field: str) -> tuple[int, int]:
    if not isinstance(d, dict) or "start" not in d or "end" not in d:
        raise BadListenerRequest(f"{field}: expected {{start, end}} (RFC 3339 strings or epoch ms)")
    try:
        s, e = to_ms(d["start"]), to_ms(d["end"])
    except (ValueError, TypeError):
        raise BadListenerRequest(f"{field}: start/end must be RFC 3339 strings or epoch ms") from None
    if s is None or e is None or e <= s:
        raise BadListenerRequest(f"{field}: end must be after start")
    return s, e


def width_seconds(d: dict[str, Any]) -> float | None:
    """An assay's slice width: `width_seconds` at the top or in `window`."""
    width = d.get("width_seconds") or (d.get("window") or {}).get("width_seconds")
    if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0):
        raise BadListenerRequest(f"width_seconds: expected a positive number, got {width!r}")
    return width


def assay_options(d: dict[str, Any]) -> dict[str, Any]:
    """The drift options given (checked by the assay itself)."""
    return {k: d[k] for k in ASSAY_OPTIONS if d.get(k) is not None}


def orchestration(d: dict[str, Any]) -> str:
    """`orch_id`: the built-in orchestration (its UUID or name; none means it) as its name, or the
    id of an uploaded one (looked up by the service)."""
    orch = d.get("orch_id")
    if orch in (None, "", ORCHESTRATION, ORCHESTRATION_ID):
        return ORCHESTRATION
    try:
        return str(uuid.UUID(str(orch)))
    except ValueError:
        raise BadListenerRequest(f"orch_id: expected an orchestration id (a UUID from /v1/api/orchestration/upload) "
                                 f"or {ORCHESTRATION!r}; got {orch!r}") from None


def task_filter(d: dict[str, Any]) -> tuple[str | None, str | None]:
    """A task list's `orch_id` (as the stored orchestration: the built-in's name or an upload's id)
    and `orch_sha` filters."""
    orch = None if d.get("orch_id") in (None, "") else orchestration(d)
    sha = d.get("orch_sha")
    if sha is not None and not isinstance(sha, str):
        raise BadListenerRequest(f"orch_sha: expected a sha256 hex string, got {sha!r}")
    return orch, sha


def boolean(d: dict[str, Any], k: str) -> bool | None:
    v = d.get(k)
    if v is not None and not isinstance(v, bool):
        raise BadListenerRequest(f"{k}: expected true or false, got {v!r}")
    return v


RUN_STATUSES = {"all": None, "running": "running", "success": "succeeded", "failure": "failed", "timed_out": "timed_out"}


def run_status(d: dict[str, Any]) -> str | None:
    """`status` of list_task_runs (Wallaroo's spelling) as the store's; None for all."""
    v = d.get("status")
    if v is None:
        return None
    if v not in RUN_STATUSES:
        raise BadListenerRequest(f"status: expected one of {', '.join(RUN_STATUSES)}, got {v!r}")
    return RUN_STATUSES[v]


def run_time_range(d: dict[str, Any]) -> tuple[int, int] | None:
    """`time_range` of list_task_runs: [start, end] (RFC 3339 strings or epoch ms)."""
    v = d.get("time_range")
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2:
        raise BadListenerRequest(f"time_range: expected [start, end] (RFC 3339 strings or epoch ms), got {v!r}")
    return time_range({"start": v[0], "end": v[1]}, "time_range")
