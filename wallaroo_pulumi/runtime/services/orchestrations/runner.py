"""One run of a user orchestration's task: `python main.py` in a box of its own (its own uid,
Landlock, a private root without the data directory), with a key of its own scoped to the task's
workspace that expires at the run's deadline and is revoked when the run ends. The Wallaroo SDK in
the task finds it the way Wallaroo's task images give it: `WALLAROO_TASK_ID` set, the key as the
"orch" auth's cached token, the arguments at /home/jovyan/arguments.json. Its stdout and stderr
lines are the run's log, in the container log format the SDK shows (`<time> stdout F <line>`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from wallaroo_pulumi.runtime.sandbox.sandbox import Bounds, Box, Sandbox

from .service import OrchestrationService

#: Where the Wallaroo SDK's `task_args()` reads a task's arguments.
ARGS_PATH = "/home/jovyan/arguments.json"
#: How long a run's key lives when the run has no deadline (a continuous task): it is revoked when the run ends.
OPEN_KEY_S = 7 * 86400
MAX_LINE = 16_384
#: What one run may take (no task API sets it): a core, 2 GiB, 512 processes; held by the kernel as root.
RUN_BOUNDS = Bounds(cpus=1.0, memory_bytes=2 * 2**30, max_processes=512)


@dataclass(frozen=True)
class Launch:
    """What one run's process is: its command, directory, environment (beside the task's own), the
    folders it reads, files for its scratch and what the kernel bounds it to."""

    argv: list[str]
    what: str  # what runs, in its errors: "main.py"
    of: str  # whose it is, in its log: "of orchestration <id>"
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    read: list[Path] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    bounds: Bounds = RUN_BOUNDS
    local_only: bool = False  # it reads folders of this runtime (`read`): never a Job's pod


class TaskFailed(Exception):
    """The task's process ended with a non-zero status."""


class TaskKeys(Protocol):
    """Where a run's key comes from (the runtime's key store)."""

    def mint(self, name: str, workspace_id: int, expires_at: float) -> tuple[int, str]:
        """A deployer key scoped to `workspace_id`: (its id, its secret)."""

    def revoke(self, key_id: int) -> None: ...

    def revoke_stale(self, live_runs: Callable[[], set[str]]) -> int:
        """Revoke the keys of the runs not among `live_runs()` (those a dead runtime left)."""


class TaskRunner:
    def __init__(self, orchestrations: OrchestrationService, sandbox: Sandbox, keys: TaskKeys,
                 url: Callable[[], str]) -> None:
        self.orchestrations = orchestrations
        self.sandbox = sandbox
        self.keys = keys
        self.url = url

    async def settle_stale(self, live_runs: Callable[[], set[str]]) -> int:
        """At start: revoke the keys of the runs a stopped runtime left (not among `live_runs()`); how many."""
        return await asyncio.to_thread(self.keys.revoke_stale, live_runs)

    async def run(self, run_id: str, task: dict[str, Any], say: Callable[[str], None],
                  deadline_s: float | None) -> None:
        """Run the task's main.py to its end; TaskFailed unless it exits 0. Cancelled (kill,
        timeout, stop): the process and all it started are killed and its key revoked."""
        packaged = await self.orchestrations.packaged(task["orch_id"])
        python = self.orchestrations.python
        probe = await asyncio.to_thread(lambda: python.probe)
        launch = Launch(argv=[python.executable, "-u", "main.py"], cwd=packaged.folder,
                        env={"PYTHONPATH": os.pathsep.join(str(p) for p in packaged.deps)},
                        read=[packaged.folder, *packaged.deps, *map(Path, probe.paths)],
                        what="main.py", of=f"of orchestration {task['orch_id']}")
        await self._boxed(run_id, task, say, deadline_s, launch, lambda _key_id: None)

    async def run_builtin(self, run_id: str, task: dict[str, Any], say: Callable[[str], None],
                          deadline_s: float | None, launch: Launch, bind_key: Callable[[int], None]) -> None:
        """Run a built-in orchestration's `launch` (on the runtime's own Python) as a user's main.py
        runs: boxed, bounded, a key of its own (`bind_key` records its id before the process starts)."""
        await self._boxed(run_id, task, say, deadline_s, launch, bind_key)

    async def _boxed(self, run_id: str, task: dict[str, Any], say: Callable[[str], None], deadline_s: float | None,
                     launch: Launch, bind_key: Callable[[int], None]) -> None:
        box = await asyncio.to_thread(self.sandbox.open, launch.bounds, f"task-{run_id[:8]}")
        expires = time.time() + (deadline_s if deadline_s else OPEN_KEY_S) + 30
        key_id, secret = await asyncio.to_thread(
            self.keys.mint, f"task {task['id']} run {run_id}", task["workspace_id"], expires)
        proc: asyncio.subprocess.Process | None = None
        try:
            await asyncio.to_thread(bind_key, key_id)
            env, placed = _task_files(box, task, run_id, secret, expires, self.url())
            for name, text in launch.files.items():
                (box.scratch / name).write_text(text)
                box.give(box.scratch / name)
            env.update(launch.env)
            argv, env, cwd = box.command(launch.argv, env, cwd=str(launch.cwd or box.scratch), read=launch.read,
                                         placed=placed, die_with_parent=True)
            say(f"stdout F [runtime] running {launch.what} {launch.of} as run {run_id}")
            proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                        start_new_session=True)
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(_pump(proc.stdout, "stdout", say), _pump(proc.stderr, "stderr", say))
            code = await proc.wait()
            if code != 0:
                raise TaskFailed(_ended(launch, code))
        finally:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.shield(proc.wait())
            await asyncio.shield(asyncio.to_thread(box.close))
            await asyncio.shield(asyncio.to_thread(self.keys.revoke, key_id))


def _ended(launch: Launch, code: int) -> str:
    """How a run's process ended, when not with status 0."""
    what = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    mib = (launch.bounds.memory_bytes or 0) // 2**20
    if code == -signal.SIGKILL:
        what += f" (SIGKILL: e.g. past its memory bound of {mib} MiB)"
    return f"{launch.what} {what}" + (" (126: the sandbox could not confine it)" if code == 126 else "")


def sdk_token(task: dict[str, Any], secret: str, expires: float) -> dict[str, Any]:
    """The run's key as the SDK's "orch" auth caches a token."""
    return {"access_token": secret, "expiry": expires, "refresh_token": "", "refresh_token_expiry": expires,
            "user_id": f"task-{task['id']}", "user_email": f"task-{task['id']}@tasks.local"}


def _task_files(box: Box, task: dict[str, Any], run_id: str, secret: str, expires: float,
                url: str) -> tuple[dict[str, str], list[tuple[Path, str]]]:
    """The task's environment and files in its scratch (readable by its uid alone): its arguments
    and the SDK's cached "orch" token holding the run's key."""
    home = box.scratch
    args = home / "arguments.json"
    args.write_text(json.dumps(task["args"]))
    auth = home / ".cache" / "wallaroo_sdk" / "auth"
    auth.mkdir(parents=True)
    token = auth / "keycloak.json"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(sdk_token(task, secret, expires), out)
    for path in (args, home / ".cache", home / ".cache" / "wallaroo_sdk", auth, token):
        box.give(path)
    env = {
        "PATH": os.defpath, "HOME": str(home), "TMPDIR": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "WALLAROO_URL": url, "WALLAROO_TASK_ID": task["id"],
        "WALLAROO_TASK_RUN_ID": run_id, "WALLAROO_TASK_ARGS": str(args),
    }
    return env, [(args, ARGS_PATH)]


async def _pump(stream: asyncio.StreamReader, name: str, say: Callable[[str], None]) -> None:
    while True:
        try:
            raw = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            raw = end.partial
            if not raw:
                return
        except asyncio.LimitOverrunError as over:
            raw = await stream.readexactly(over.consumed)
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        say(f"{name} F {line[:MAX_LINE]}")
