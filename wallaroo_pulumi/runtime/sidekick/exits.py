"""How a worker process ended, in words, and waiting for it to end without waiting on its pipes."""

from __future__ import annotations

import asyncio
import signal


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "an unknown exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


async def wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Wait up to ``timeout`` for the worker itself to exit; True if it did.

    Polls ``returncode`` rather than awaiting ``proc.wait()``, which (Python 3.11)
    also waits for every pipe to close — and a model's own child processes may
    hold the stderr pipe open long after the worker is gone.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.returncode is None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return proc.returncode is not None
