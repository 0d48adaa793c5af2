"""Server processes the tests start: launch one, wait until it answers, read its log, stop it
(SIGTERM, then SIGKILL after a grace period)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def launch(cmd: list[str], *, log_path: Path, env: dict[str, str], cwd: str, info: Path) -> subprocess.Popen:
    """Start a server that writes {"pid", "url"} to `info` once it listens, its output appended to
    `log_path` (a stale `info` is removed first)."""
    info.unlink(missing_ok=True)
    log = open(log_path, "ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd)


def wait_ready(proc: subprocess.Popen, info: Path, ready: Callable[[str], bool], *, timeout: float, what: str,
               log_path: Path) -> str:
    """Poll until `proc` has written its URL to `info` and `ready(url)` holds; its URL. Fails with
    the log's tail when it exits first or does not get ready in `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{log_tail(log_path)}")
        if info.exists():
            try:
                data = json.loads(info.read_text())
                if data["pid"] == proc.pid and ready(data["url"]):
                    return data["url"]
            except (ValueError, KeyError, OSError, httpx.HTTPError):
                pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start:\n{log_tail(log_path)}")


def log_tail(path: Path, n: int = 4000) -> str:
    """The last `n` characters of a server's log ('' when it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


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


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it, as the host's /proc shows them (those gone meanwhile left out)."""
    children: dict[int, list[int]] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(p))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree
