"""Task runs as Jobs (D54): create a run's Secret and Job, follow its pod's log, read how it ended
from the Job and its pod, delete both (a kill or a timeout deletes the pod with them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import CascadeType

from wallaroo_pulumi.runtime.kube.client import KubeContext
from wallaroo_pulumi.runtime.kube.objects import COMPONENT, RUNTIME
from wallaroo_pulumi.runtime.kube.task_objects import TASK_RUN, TaskBounds, TaskRunObjects

log = logging.getLogger("wallaroo.kube")
POLL_S = 0.5
LOG_DRAIN_S = 10.0  # after the Job ended: how long the rest of its pod's log may take to arrive


@dataclass(frozen=True)
class JobEnd:
    """How a run's Job ended: its container's exit code (None: it never ran) and Kubernetes' words."""

    exit_code: int | None
    reason: str


class TaskJobs:
    def __init__(self, ctx: KubeContext, image: str, url: str) -> None:
        self.ctx = ctx
        self.image = image  # the task pods' image: Python with the Wallaroo SDK
        self.url = url  # where task pods reach the runtime

    def objects(self, run_id: str, task: dict[str, Any], bounds: TaskBounds, deadline_s: float | None,
                entry: str) -> TaskRunObjects:
        return TaskRunObjects(run_id=run_id, task=task, namespace=self.ctx.namespace, runtime=self.ctx.runtime,
                              image=self.image, url=self.url, bounds=bounds, deadline_s=deadline_s, entry=entry)

    def _owners(self) -> list[dict[str, Any]]:
        return [self.ctx.owner.reference()] if self.ctx.owner is not None else []

    async def run(self, objects: TaskRunObjects, token: dict[str, Any], zip_bytes: bytes,
                  say: Callable[[str], None]) -> JobEnd:
        """Create the run's Secret and Job, pass each line of its pod's log to `say`, return how it
        ended. The caller deletes the objects (:meth:`delete`), however the run ends."""
        client, ns = self.ctx.client, self.ctx.namespace
        await client.create(Secret.from_dict(objects.secret(token, zip_bytes, self._owners())), namespace=ns)
        await client.create(Job.from_dict(objects.job(self._owners())), namespace=ns)
        follow = asyncio.ensure_future(self._follow(objects, say))
        try:
            end = await self._ended(objects.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(follow), LOG_DRAIN_S)
            return end
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)

    async def _pod(self, run_id: str) -> Any:
        pods = [p async for p in self.ctx.client.list(Pod, namespace=self.ctx.namespace, labels={TASK_RUN: run_id})]
        return pods[0] if pods else None

    async def _follow(self, objects: TaskRunObjects, say: Callable[[str], None]) -> None:
        """The pod's log, once its container has started (the log API merges stdout and stderr)."""
        waiting_said, said = "", [0]
        while True:
            pod = await self._pod(objects.run_id)
            if pod is not None and pod.status is not None and pod.status.phase in ("Running", "Succeeded", "Failed"):
                try:
                    await self._stream(pod.metadata.name, say, said)
                    return
                except (ApiError, RuntimeError) as exc:  # not started yet (lightkube raises RuntimeError then)
                    error = exc.status.message if isinstance(exc, ApiError) else str(exc)
                    if pod.status.phase != "Running":
                        say(f"stderr F [runtime] the pod's log could not be read: {error}")
                        return
            why = _pending_reason(pod)
            if why and why != waiting_said:
                say(f"stdout F [runtime] pod pending: {why}")
                waiting_said = why
            await asyncio.sleep(POLL_S)

    async def _stream(self, pod: str, say: Callable[[str], None], said: list[int]) -> None:
        """Follow the pod's log; the first `said[0]` lines were passed on by a stream that broke."""
        seen = 0
        async for line in self.ctx.client.log(pod, namespace=self.ctx.namespace, container="task", follow=True):
            seen += 1
            if seen > said[0]:
                said[0] = seen
                say(f"stdout F {line.rstrip(chr(10))}")

    async def _ended(self, name: str) -> JobEnd:
        client, ns = self.ctx.client, self.ctx.namespace
        while True:
            job = await client.get(Job, name, namespace=ns)
            done = {c.type: c for c in (job.status.conditions or []) if c.status == "True"} if job.status else {}
            if "Complete" in done or "Failed" in done:
                pod = await self._pod(job.metadata.labels[TASK_RUN])
                code, reason = _terminated(pod)
                failed = done.get("Failed")
                if failed is not None and code is None:
                    reason = f"{failed.reason}: {failed.message}"
                return JobEnd(code, reason)
            await asyncio.sleep(POLL_S)

    async def delete(self, name: str) -> None:
        """The run's Job (the garbage collector deletes its pod) and Secret; gone already is fine."""
        client, ns = self.ctx.client, self.ctx.namespace
        for kind in (Job, Secret):
            try:
                await client.delete(kind, name, namespace=ns, grace_period=0, cascade=CascadeType.BACKGROUND)
            except ApiError as exc:
                if exc.status.code != 404:
                    log.warning("could not delete %s %s/%s: %s", kind.__name__, ns, name, exc.status.message)

    async def collect_orphans(self, live_runs: set[str]) -> int:
        """Delete this runtime's task Jobs and Secrets whose run no longer runs (a runtime killed mid-run)."""
        labels = {RUNTIME: self.ctx.runtime, COMPONENT: "task"}
        names: set[str] = set()
        for kind in (Job, Secret):
            async for obj in self.ctx.client.list(kind, namespace=self.ctx.namespace, labels=labels):
                if obj.metadata.labels.get(TASK_RUN) not in live_runs:
                    names.add(obj.metadata.name)
        for name in names:
            await self.delete(name)
        return len(names)


def _terminated(pod: Any) -> tuple[int | None, str]:
    statuses = (pod.status.containerStatuses or []) if pod is not None and pod.status is not None else []
    for status in statuses:
        term = status.state.terminated if status.state is not None else None
        if term is not None:
            return term.exitCode, term.reason or ""
    return None, "the pod never ran"


def _pending_reason(pod: Any) -> str:
    """Why a pod waits: the scheduler's words (no node fits) or its container's (image pull)."""
    if pod is None or pod.status is None:
        return ""
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.message:
            return cond.message
    for status in pod.status.containerStatuses or []:
        waiting = status.state.waiting if status.state is not None else None
        if waiting is not None and waiting.reason not in (None, "ContainerCreating"):
            return f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
    return ""
