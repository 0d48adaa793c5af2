"""Fields of listener request bodies, each checked; a bad one is a 400 that names it."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from wallaroo_pulumi.runtime.logstore.time_column import to_ms

from .engine import ORCHESTRATION
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
    orch = d.get("orch_id")
    if orch not in (None, "", ORCHESTRATION):
        raise BadListenerRequest(f"orch_id: only the built-in {ORCHESTRATION!r} orchestration runs here "
                                 f"(omit orch_id or pass {ORCHESTRATION!r}); got {orch!r}")
    return ORCHESTRATION
