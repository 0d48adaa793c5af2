"""Waiting in tests for something that happens in another process: the one poll loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1,
               detail: Callable[[], str] | None = None) -> T:
    """Call `predicate` until it returns something truthy, and return that; fail naming `what`,
    the last value and `detail()` (a log's tail, the cluster's events)."""
    deadline = time.monotonic() + timeout
    value: T | None = None
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} ({timeout:.0f}s; last: {value!r})"
                         + (f"\n{detail()}" if detail else ""))
