"""Stopping a server process the tests started: SIGTERM, then SIGKILL after a grace period."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen | None, grace_s: float = 20) -> None:
    """Ask `proc` to exit and wait `grace_s`, then kill it (no-op if it is not running)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
