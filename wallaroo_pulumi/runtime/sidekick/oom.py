"""Out-of-memory kills of a step's workers: the kernel's, where the placement gives a worker a
memory cgroup (the whole worker then goes, as a pod's container would), else a resident-memory
guard's; and the ``OOMKilled: ...`` reason a worker's failure then carries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

from wallaroo_pulumi.runtime.sidekick import memory
from wallaroo_pulumi.runtime.sidekick.placement import KernelLimits

log = logging.getLogger("wallaroo.sidekick")
_WATCH_INTERVAL_S = 0.1


class OomWatch:
    """The memory limit of one step's workers (`memory`, as given), one worker after another."""

    def __init__(self, step_name: str, memory_limit: str | None) -> None:
        self.step_name = step_name
        self.memory_limit = memory_limit
        self.kernel: KernelLimits | None = None
        self._kernel_ooms = 0  # the kernel's OOM kills in the worker's cgroup when it started
        self._killed: tuple[asyncio.subprocess.Process, str] | None = None

    def started(self, kernel: KernelLimits | None) -> None:
        """A worker started, its limits held by `kernel` (None: no cgroup of its own)."""
        self.kernel = kernel
        self._kernel_ooms = kernel.oom_kills() if kernel is not None else 0

    def watch(self, proc: asyncio.subprocess.Process, limit_bytes: int) -> Coroutine[Any, Any, None]:
        """What ends `proc` past its limit: the kernel's kills watched, or the resident-memory guard."""
        if self.kernel is not None and self.kernel.memory_limited:
            return self._watch_kernel(proc, self.kernel)
        return self._guard(proc, limit_bytes)

    async def _guard(self, proc: asyncio.subprocess.Process, limit: int) -> None:
        def killed(rss: int) -> None:
            self._killed = (proc, f"OOMKilled: its resident memory reached {memory.format_bytes(rss)}, over its "
                                  f"memory limit of {self.memory_limit}; raise the step's sidekick memory")
            log.warning("sidekick %s: pid %d %s", self.step_name, proc.pid, self._killed[1])

        await memory.guard(proc.pid, limit, killed, alive=lambda: proc.returncode is None)

    async def _watch_kernel(self, proc: asyncio.subprocess.Process, kernel: KernelLimits) -> None:
        """The kernel holds the memory limit; once it kills anything of the worker's (one process of
        many, under cgroup v1), the whole worker goes, as a pod's container would."""
        while proc.returncode is None:
            if self._kernel_killed(proc, kernel):
                log.warning("sidekick %s: pid %d %s", self.step_name, proc.pid, self._killed[1] if self._killed else "")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(kernel.kill, 2.0)  # and what left its process group
                return
            await asyncio.sleep(_WATCH_INTERVAL_S)

    def _kernel_killed(self, proc: asyncio.subprocess.Process, kernel: KernelLimits | None) -> bool:
        if kernel is None or not kernel.memory_limited or kernel.oom_kills() <= self._kernel_ooms:
            return False
        if self._killed is None or self._killed[0] is not proc:
            self._killed = (proc, f"OOMKilled: the kernel killed it at its memory limit of {self.memory_limit} "
                                  "(its cgroup); raise the step's sidekick memory")
        return True

    def note(self, proc: asyncio.subprocess.Process, current: bool) -> str:
        """``; OOMKilled: ...`` when the guard or the kernel killed `proc` (`current`: the worker
        now, whose cgroup is asked), else nothing."""
        if current:
            self._kernel_killed(proc, self.kernel)
        return f"; {self._killed[1]}" if self._killed is not None and self._killed[0] is proc else ""
