"""Task runs on Kubernetes: each run a Job of its own (kube/jobs.py, D54) instead of a sandboxed
process in the runtime's pod; the same key per run, arguments, logs and ends as `TaskRunner`'s."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from wallaroo_pulumi.runtime.kube.jobs import TaskJobs
from wallaroo_pulumi.runtime.kube.task_objects import TaskBounds
from wallaroo_pulumi.runtime.sandbox.sandbox import Sandbox

from .runner import OPEN_KEY_S, RUN_BOUNDS, Launch, TaskFailed, TaskKeys, TaskRunner, sdk_token
from .service import OrchestrationService

log = logging.getLogger("wallaroo_pulumi.orchestrations")
BOUNDS = TaskBounds(cpus=RUN_BOUNDS.cpus or 1.0, memory_bytes=RUN_BOUNDS.memory_bytes or 2 * 2**30)


class KubeTaskRunner(TaskRunner):
    def __init__(self, orchestrations: OrchestrationService, sandbox: Sandbox, keys: TaskKeys,
                 url: Callable[[], str], jobs: TaskJobs, builtin_image: str) -> None:
        super().__init__(orchestrations, sandbox, keys, url)
        self.jobs = jobs
        self.builtin_image = builtin_image  # built-ins run our package: the sidekick image, not a user's task image

    async def settle_stale(self, live_runs: Callable[[], set[str]]) -> int:
        """Also delete the Jobs (and Secrets) of runs a stopped runtime left running."""
        revoked = await super().settle_stale(live_runs)
        deleted = await self.jobs.collect_orphans(live_runs())
        if deleted:
            log.info("deleted %d task Job(s) of runs that ended with a stopped runtime", deleted)
        return revoked

    async def run(self, run_id: str, task: dict[str, Any], say: Callable[[str], None],
                  deadline_s: float | None) -> None:
        """Run the task's main.py as a Job to its end; TaskFailed unless it exits 0. However it
        ends (kill, timeout, stop included) the Job, its pod and its Secret are deleted and the
        run's key revoked."""
        await self.orchestrations.packaged(task["orch_id"])  # ready, or why not
        row = self.orchestrations.get(task["orch_id"], "orch_id")
        zip_bytes = await asyncio.to_thread(self.orchestrations.artifacts.fetch(row["sha"]).read_bytes)
        await self._job(run_id, task, say, deadline_s, zip_bytes, row["entry"], BOUNDS,
                        f"main.py of orchestration {task['orch_id']}", lambda _key_id: None,
                        {"WALLAROO_ORCH_ID": task["orch_id"]})  # its pod fetches the installed requirements (D60)

    async def run_builtin(self, run_id: str, task: dict[str, Any], say: Callable[[str], None],
                          deadline_s: float | None, launch: Launch, bind_key: Callable[[int], None]) -> None:
        """A built-in's run as a Job too: its module run from a main.py of two lines, its files beside it, on
        the sidekick image (which has our package). A launch that needs folders of this runtime (an uploaded
        listener model's) runs here, boxed, as a Job's pod cannot read them."""
        if launch.local_only:
            return await super().run_builtin(run_id, task, say, deadline_s, launch, bind_key)
        module = launch.argv[launch.argv.index("-m") + 1]
        main = (f"import runpy, sys\nsys.argv = [{module!r}, *{launch.argv[launch.argv.index('-m') + 2:]!r}]\n"
                f"runpy.run_module({module!r}, run_name='__main__')\n")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("main.py", main)
            for name, text in launch.files.items():
                zf.writestr(name, text)
        bounds = TaskBounds(cpus=launch.bounds.cpus or 1.0, memory_bytes=launch.bounds.memory_bytes or BOUNDS.memory_bytes)
        await self._job(run_id, task, say, deadline_s, buf.getvalue(), ".", bounds, f"{launch.what} {launch.of}",
                        bind_key, image=self.builtin_image)

    async def _job(self, run_id: str, task: dict[str, Any], say: Callable[[str], None], deadline_s: float | None,
                   zip_bytes: bytes, entry: str, bounds: TaskBounds, what: str, bind_key: Callable[[int], None],
                   env: dict[str, str] | None = None, image: str | None = None) -> None:
        objects = self.jobs.objects(run_id, task, bounds, deadline_s, entry)
        objects = replace(objects, env=env or {}, image=image or objects.image)
        expires = time.time() + (deadline_s if deadline_s else OPEN_KEY_S) + 30
        key_id, secret = await asyncio.to_thread(
            self.keys.mint, f"task {task['id']} run {run_id}", task["workspace_id"], expires)
        try:
            await asyncio.to_thread(bind_key, key_id)
            say(f"stdout F [runtime] running {what} as run {run_id} in Job {self.jobs.ctx.namespace}/{objects.name}")
            end = await self.jobs.run(objects, sdk_token(task, secret, expires), zip_bytes, say)
        finally:
            await asyncio.shield(self.jobs.delete(objects.name))
            await asyncio.shield(asyncio.to_thread(self.keys.revoke, key_id))
        if end.exit_code is None:
            raise TaskFailed(f"main.py never ran: {end.reason}")
        if end.exit_code != 0:
            mib = bounds.memory_bytes // 2**20
            oom = f" (OOMKilled: past its memory bound of {mib} MiB)" if end.reason == "OOMKilled" else ""
            raise TaskFailed(f"main.py exited with status {end.exit_code}{oom}")
