"""`LinkedReplicas`: a step's pods and the link to each (`RemoteSidekick`). A pod is linked once
Ready, linked again when its address changes, unlinked when it goes; each replica's requests in
flight choose the least busy one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from lightkube.resources.core_v1 import Pod

from wallaroo_pulumi.runtime.kube.client import KubeContext
from wallaroo_pulumi.runtime.kube.objects import LINK_PORT, StepObjects
from wallaroo_pulumi.runtime.kube.pod_status import ENDED, pod_ended, pod_exit, pod_problem, pod_ready
from wallaroo_pulumi.runtime.sidekick.errors import SidekickError
from wallaroo_pulumi.runtime.sidekick.remote import ModelBundle, RemoteSidekick

log = logging.getLogger("wallaroo.kube")


class LinkedReplicas:
    def __init__(self, ctx: KubeContext, objects: StepObjects, bundle: ModelBundle, changed: asyncio.Event) -> None:
        self.ctx = ctx
        self.objects = objects
        self.spec = objects.spec
        self.bundle = bundle
        self.changed = changed  # set on every change a waiter for a replica may care about
        self.token = ""  # the link's shared secret, from the step's Secret
        self.remotes: dict[str, RemoteSidekick] = {}
        self.connecting: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()  # links being closed (unlinked pods)
        self.pods: dict[str, Pod] = {}
        self.inflight: dict[str, int] = {}
        self.lost = 0  # replicas whose pod went away while linked

    @property
    def restarts(self) -> int:
        return self.lost + sum(r.restarts for r in self.remotes.values())

    def ready(self) -> list[RemoteSidekick]:
        return [r for r in self.remotes.values() if r.state == "ready"]

    def why(self) -> str:
        """Why replicas are missing, from the pods (or that there are none yet)."""
        problems = [p for p in (pod_problem(pod) for pod in self.pods.values()) if p]
        problems += [r.last_error for r in self.remotes.values() if r.state == "failed" and r.last_error]
        if not problems:
            return f"no pod of Deployment {self.ctx.namespace}/{self.objects.name} is Ready and linked yet"
        return "; ".join(dict.fromkeys(problems))

    def choose(self, tried: set[tuple[str, int]]) -> RemoteSidekick | None:
        """The least busy linked replica whose link is not in `tried`."""
        ready = [r for r in self.ready() if r.link_id not in tried]
        return min(ready, key=lambda r: (self.inflight.get(r.name, 0) + r.waiting, r.busy)) if ready else None

    @contextlib.contextmanager
    def request(self, remote: RemoteSidekick) -> Iterator[None]:
        """Count a request in flight on `remote` while it lasts (not after its pod is dropped)."""
        self.inflight[remote.name] = self.inflight.get(remote.name, 0) + 1
        try:
            yield
        finally:
            if remote.name in self.inflight:
                self.inflight[remote.name] -= 1

    def on_pod(self, op: str, pod: Pod) -> None:
        name = pod.metadata.name
        if op == "DELETED" or pod.metadata.deletionTimestamp is not None:
            self.drop(name)
            return
        self.pods[name] = pod
        ip = pod.status.podIP if pod.status is not None else None
        remote = self.remotes.get(name)
        if remote is None or (ip and remote.host != ip):
            if remote is not None:  # the address came (or changed): link again
                self._unlink(name)
            remote = RemoteSidekick(name, self.spec.step_name, ip or "", LINK_PORT, self.token, self.bundle,
                                    max_batch_rows=self.spec.max_batch_rows, batching=self.spec.batching,
                                    load_timeout_s=self.spec.load_timeout_s,
                                    request_timeout_s=self.ctx.request_timeout_s)
            self.remotes[name] = remote
            self.inflight.setdefault(name, 0)
        remote.note_exit(pod_exit(pod, self.spec.memory))
        if pod.status is not None and pod.status.phase in ENDED:  # its ReplicaSet makes another
            remote.ended(pod_ended(pod, self.spec.scratch_size))
        elif not pod_ready(pod):
            remote.note(pod_problem(pod))
        elif remote.state in ("starting", "failed") and name not in self.connecting and not remote.load_failed:
            self.connecting[name] = asyncio.create_task(self._link(name, remote), name=f"kube-link-{name}")
        self.changed.set()

    def drop(self, name: str) -> None:
        self.pods.pop(name, None)
        self._unlink(name)
        self.inflight.pop(name, None)
        self.changed.set()

    async def _link(self, name: str, remote: RemoteSidekick) -> None:
        try:
            await remote.start()
            log.info("step %s: linked to pod %s at %s", self.spec.step_name, name, remote.host)
        except SidekickError as exc:
            log.warning("step %s: pod %s: %s", self.spec.step_name, name, exc)
        finally:
            if self.connecting.get(name) is asyncio.current_task():  # not a newer remote's link of that pod
                del self.connecting[name]
            self.changed.set()

    def _unlink(self, name: str) -> None:
        task = self.connecting.pop(name, None)
        if task is not None:
            task.cancel()
        remote = self.remotes.pop(name, None)
        if remote is not None:
            if remote.state == "ready":
                self.lost += 1
            stopping = asyncio.get_running_loop().create_task(remote.stop(), name=f"kube-unlink-{name}")
            self._stopping.add(stopping)  # the loop holds tasks weakly: kept until it has closed the link
            stopping.add_done_callback(self._stopping.discard)
