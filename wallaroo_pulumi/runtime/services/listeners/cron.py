"""Cron schedules of listener tasks: validation and tick arithmetic."""

from __future__ import annotations

from typing import Any

from croniter import croniter

from .errors import BadListenerRequest

CRON_HELP = (
    "expected a cron expression with 5 fields (minute hour day-of-month month day-of-week), "
    "or 6 with seconds last, e.g. '0 * * * *' (hourly) or '* * * * * */10' (every 10 seconds)"
)


def validate_schedule(schedule: Any) -> str:
    """The schedule with its whitespace normalized; a 400 naming `schedule` if it is not a cron string."""
    if not isinstance(schedule, str) or not schedule.strip():
        raise BadListenerRequest(f"schedule: {schedule!r} is not a cron string; {CRON_HELP}")
    s = " ".join(schedule.split())
    if len(s.split(" ")) not in (5, 6) or not croniter.is_valid(s):
        raise BadListenerRequest(f"schedule: {schedule!r} is not a valid cron expression; {CRON_HELP}")
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
