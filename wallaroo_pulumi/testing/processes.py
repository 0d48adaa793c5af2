"""Server processes the tests start: launch one, wait until it answers, read its log, stop it
(SIGTERM, then SIGKILL after a grace period).

`Harness` is the one way a test harness starts servers of its own (PostgreSQL, S3, a registry, the
control plane, a real node): `spawn()` each, `wait()` until it answers, `stop()` them newest first,
also when starting failed. `launch()`/`wait_ready()` start a runtime that announces its URL in a file."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from wallaroo_pulumi.testing.waiting import wait_until

T = TypeVar("T")
H = TypeVar("H", bound="Harness")

#: what a readiness probe may raise while a server is still coming up
NOT_YET = (httpx.HTTPError, OSError, ValueError, KeyError)


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

    def url() -> str | None:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{log_tail(log_path)}")
        try:
            data = json.loads(info.read_text())
            return data["url"] if data["pid"] == proc.pid and ready(data["url"]) else None
        except NOT_YET:
            return None

    try:
        return wait_until(url, timeout, what, interval=0.05)
    except AssertionError:
        raise RuntimeError(f"{what} did not start:\n{log_tail(log_path)}") from None


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


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the process that started it dies (PR_SET_PDEATHSIG),
    so a killed test run leaves nothing behind either."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class ServerProcess:
    """One server a harness started: in its own process group, its output appended to `log`."""

    def __init__(self, name: str, argv: list[str], log: Path, error: type[Exception] = RuntimeError,
                 **popen: Any) -> None:
        self.name = name
        self.log = log
        self.error = error
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, **popen)

    def check(self) -> None:
        """Fail with the log's last lines if the server has exited."""
        if self.proc.poll() is not None:
            raise self.error(f"{self.name} exited with status {self.proc.returncode}; "
                             f"last lines of {self.log}:\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10, sig: int = signal.SIGTERM) -> None:
        """`sig` to the whole group, SIGKILL after `grace_s`; returns once the group is empty."""
        for send, wait_s in ((sig, grace_s), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, send)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self.proc.poll()
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)
        self.proc.poll()


class Harness:
    """Servers started together: `start()` or `with`; `stop()` ends every one, newest first, also
    when starting failed (safe to call twice). A subclass writes `_start()` with `spawn` and `wait`."""

    error: type[Exception] = RuntimeError  # what a failed start raises

    def __init__(self, logs: Path, **popen: Any) -> None:
        self.logs = Path(logs)
        self.popen = popen  # for every server spawned (run as a user, die with the parent, ...)
        self.servers: list[ServerProcess] = []

    def __enter__(self: H) -> H:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self: H) -> H:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> Any:
        while self.servers:
            self.servers.pop().stop()

    def spawn(self, name: str, argv: list[str]) -> ServerProcess:
        """Start `argv` as the server `name`, logging to `logs/<name>.log`."""
        self.logs.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(name, argv, self.logs / f"{name}.log", self.error, **self.popen)
        self.servers.append(server)
        return server

    def wait(self, what: str, servers: list[ServerProcess], ready: Callable[[], T], timeout_s: float,
             *, not_yet: tuple[type[Exception], ...] = NOT_YET, interval: float = 0.1, tail: int = 25) -> T:
        """`ready()`'s first truthy value, polling while `servers` run (one exiting fails at once);
        errors in `not_yet` mean "not yet". Fails naming `what`, with the last error and the logs."""
        last: list[Exception] = []

        def attempt() -> T | None:
            for server in servers:
                server.check()
            try:
                return ready()
            except not_yet as exc:
                last[:] = [exc]
                return None

        try:
            return wait_until(attempt, timeout_s, what, interval)
        except AssertionError:
            logs = "\n".join(f"--- {s.name} ({s.log}) ---\n{s.tail(tail)}" for s in servers)
            raise self.error(f"{what} not ready within {timeout_s:.0f}s"
                             f"{f' (last error: {last[0]})' if last else ''}\n{logs}") from None
