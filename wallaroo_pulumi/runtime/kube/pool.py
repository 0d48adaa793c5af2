"""`KubeStepPool`: one model step as a Deployment of sidekick pods, the runtime as its controller.

It applies the step's objects (adopting them when they exist), watches its pods, links to each
Ready one (`RemoteSidekick`), sends each request to the least busy linked replica and retries a
lost one on another, sets the Deployment's replicas from its replicas' busy time (scaling to
zero after an idle time when allowed, and back when a request comes, which waits with a bound),
and deletes its objects when stopped. A pod that cannot run says why (the scheduler's reason)
in the status rows. Its pods and their links are kept by `LinkedReplicas` (replicas.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator

import pyarrow as pa
from lightkube import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Secret, ServiceAccount
from lightkube.types import CascadeType

from wallaroo_pulumi.runtime.kube.client import KubeContext
from wallaroo_pulumi.runtime.kube.objects import TOKEN_KEY, StepObjects
from wallaroo_pulumi.runtime.kube.replicas import LinkedReplicas
from wallaroo_pulumi.runtime.kube.settings import KubeScale
from wallaroo_pulumi.runtime.sidekick.autoscale import Autoscaler
from wallaroo_pulumi.runtime.sidekick.errors import SidekickCrashedError, SidekickError, SidekickLoadError
from wallaroo_pulumi.runtime.sidekick.protocol import StreamPart
from wallaroo_pulumi.runtime.sidekick.remote import ModelBundle, RemoteSidekick

log = logging.getLogger("wallaroo.kube")
MAX_ATTEMPTS = 3  # replicas one request is tried on
DRAIN_S = 30.0  # the longest a stopping pool waits for the requests it is answering


def queue_depth(requests: int, live: list[RemoteSidekick]) -> float:
    """Requests queued or in flight per slot of the ready replicas (D46), each pod's worker
    answering its K batches at once (D61); all of them when none is ready."""
    slots = sum(r.concurrency for r in live)
    return requests / slots if slots else float(requests)


class KubeStepPool:
    def __init__(self, ctx: KubeContext, objects: StepObjects, bundle: ModelBundle, replicas: int,
                 scale: KubeScale | None) -> None:
        self.ctx = ctx
        self.objects = objects
        self.spec = objects.spec
        self.name = objects.name
        self.bundle = bundle
        self.scale = scale
        # sampled at the monitor's period, so a queue-depth window spans autoscaling_window seconds
        self.policy = dataclasses.replace(scale.policy(), interval_s=ctx.interval_s) if scale is not None else None
        self._desired = replicas if scale is None else min(max(replicas, scale.minimum, 1), scale.policy().maximum)
        self._changed = asyncio.Event()
        self._replicas = LinkedReplicas(ctx, objects, bundle, self._changed)
        self._tasks: list[asyncio.Task[None]] = []
        self._last_request = time.monotonic()
        self._requests = 0  # requests in this pool now, those waiting for a replica included
        self._started = False  # replicas are neither scaled nor idled before the first ones are up
        self._stopped = False

    # -- what the engine reads ---------------------------------------------------------
    @property
    def sidekicks(self) -> list[RemoteSidekick]:
        return list(self._replicas.remotes.values())

    @property
    def replicas(self) -> int:
        return self._desired

    @property
    def restarts(self) -> int:
        return self._replicas.restarts

    def why(self) -> str:
        """Why replicas are missing, from the pods (or that there are none yet)."""
        return self._replicas.why()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Apply the objects, then wait (up to the load timeout) for the replicas to load."""
        try:
            await self._apply()
        except ApiError as exc:
            raise SidekickLoadError(f"step {self.spec.step_name!r}: the API server refused its objects: "
                                    f"{exc.status.message}", step_name=self.spec.step_name) from None
        except ValueError as exc:
            raise SidekickLoadError(str(exc), step_name=self.spec.step_name) from None
        self._tasks.append(asyncio.create_task(self._watch(), name=f"kube-watch-{self.name}"))
        self._tasks.append(asyncio.create_task(self._monitor(), name=f"kube-monitor-{self.name}"))
        try:
            await self._wait_ready(self._desired, self.spec.load_timeout_s)
        except BaseException:
            await self.stop()
            raise
        self._started, self._last_request = True, time.monotonic()

    async def _apply(self) -> None:
        client, ns = self.ctx.client, self.ctx.namespace
        token = ""
        try:
            existing = await client.get(Secret, self.name, namespace=ns)
            token = base64.b64decode((existing.data or {}).get(TOKEN_KEY, "")).decode()
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        token = self._replicas.token = token or secrets.token_urlsafe(32)
        if self.scale is not None and self.policy is not None:  # adopted: keep the replicas it was scaled to
            try:
                current = await client.get(Deployment, self.name, namespace=ns)
                if current.spec is not None and current.spec.replicas is not None:
                    self._desired = min(max(current.spec.replicas, self.scale.minimum), self.policy.maximum)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
        owners = [self.ctx.owner.reference()] if self.ctx.owner is not None else []
        await client.apply(ServiceAccount.from_dict(self.objects.service_account(owners)), force=True)
        await client.apply(Secret.from_dict(self.objects.secret(token, owners)), force=True)
        dep = await client.apply(Deployment.from_dict(self.objects.deployment(self._desired, owners)), force=True)
        # the Secret and the ServiceAccount go with the Deployment
        mine = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": self.name, "uid": dep.metadata.uid,
                 "blockOwnerDeletion": True}]
        await client.apply(ServiceAccount.from_dict(self.objects.service_account(mine)), force=True)
        await client.apply(Secret.from_dict(self.objects.secret(token, mine)), force=True)
        log.info("step %s: Deployment %s/%s applied (%d replicas)", self.spec.step_name, self.ctx.namespace,
                 self.name, self._desired)

    @property
    def stopped(self) -> bool:
        return self._stopped

    async def stop(self) -> None:
        """Let the requests already here finish (a redeploy stops the old pool as soon as the new one
        serves), then unlink every replica and delete the step's objects (kept while the runtime itself stops)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_S
        while self._requests and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self._stopped = True
        tasks = self._tasks + list(self._replicas.connecting.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(r.stop() for r in self._replicas.remotes.values()), return_exceptions=True)
        if self.ctx.keep_objects:
            return
        client, ns = self.ctx.client, self.ctx.namespace
        for kind in (Deployment, Secret, ServiceAccount):
            try:
                await client.delete(kind, self.name, namespace=ns, cascade=CascadeType.BACKGROUND)
            except ApiError as exc:
                if exc.status.code != 404:
                    log.warning("deleting %s %s/%s: %s", kind.__name__, ns, self.name, exc.status.message)
        log.info("step %s: Deployment %s/%s deleted", self.spec.step_name, ns, self.name)

    async def _wait_ready(self, wanted: int, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            ready = len(self._replicas.ready())
            if ready >= wanted:
                return
            failed = next((r for r in self._replicas.remotes.values() if r.load_failed), None)
            if failed is not None:
                raise SidekickLoadError(failed.last_error or f"model {self.spec.step_name!r} failed to load",
                                        step_name=self.spec.step_name)
            left = deadline - loop.time()
            if left <= 0:
                if ready:
                    log.warning("step %s: %d of %d replicas ready after %gs: %s", self.spec.step_name, ready,
                                wanted, timeout_s, self.why())
                    return
                raise SidekickLoadError(f"model {self.spec.step_name!r}: no replica ready within {timeout_s:g}s: "
                                        f"{self.why()}", step_name=self.spec.step_name)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))

    # -- pods --------------------------------------------------------------------------
    async def _watch(self) -> None:
        client, ns = self.ctx.client, self.ctx.namespace
        while True:
            try:
                async for op, pod in client.watch(Pod, namespace=ns, labels=self.objects.selector):
                    self._replicas.on_pod(op, pod)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the API server restarted, a timeout: watch again
                log.info("step %s: watching pods: %s; watching again", self.spec.step_name, exc)
                await asyncio.sleep(1.0)

    async def _refresh_replicas(self) -> None:
        """The Deployment's replicas as they are (other serving replicas of the runtime set them too)."""
        dep = await self.ctx.client.get(Deployment, self.name, namespace=self.ctx.namespace)
        if dep.spec is not None and dep.spec.replicas is not None:
            self._desired = dep.spec.replicas

    async def _sync(self) -> None:
        """List the pods and read the replicas: what a watch may have missed, what others changed."""
        await self._refresh_replicas()
        pods = [p async for p in self.ctx.client.list(Pod, namespace=self.ctx.namespace, labels=self.objects.selector)]
        names = {p.metadata.name for p in pods}
        for name in [n for n in self._replicas.remotes if n not in names]:
            self._replicas.drop(name)
        for pod in pods:
            self._replicas.on_pod("MODIFIED", pod)

    # -- requests ----------------------------------------------------------------------
    async def _replica(self, tried: set[tuple[str, int]]) -> RemoteSidekick:
        """A linked replica not tried yet; one may have to start first (scaled to zero), or come
        back (replaced): wait for it up to the load timeout."""
        remote = self._replicas.choose(tried)
        if remote is not None:
            return remote
        try:
            await self._refresh_replicas()  # another serving replica may have scaled it to zero
        except Exception as exc:  # noqa: BLE001 - the API server away: go on with what this process knows
            log.warning("step %s: reading its replicas: %s", self.spec.step_name, exc)
        if self._desired == 0 and self.scale is not None:
            log.info("step %s: a request wakes it from zero replicas", self.spec.step_name)
            await self._scale_to(max(1, self.scale.minimum))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spec.load_timeout_s
        while (remote := self._replicas.choose(tried)) is None:
            left = deadline - loop.time()
            if left <= 0 or self._stopped:
                raise SidekickLoadError(f"step {self.spec.step_name!r}: no replica to answer within "
                                        f"{self.spec.load_timeout_s:g}s: {self.why()}", step_name=self.spec.step_name)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return remote

    @staticmethod
    def _retryable(exc: SidekickError) -> bool:
        """Lost with its replica (crashed, or unlinked while queued): another replica may answer."""
        return isinstance(exc, SidekickCrashedError) or type(exc) is SidekickError

    async def predict(self, table: pa.Table) -> pa.Table:
        self._requests += 1
        try:
            return await self._predict(table)
        finally:
            self._requests -= 1
            self._last_request = time.monotonic()

    async def _predict(self, table: pa.Table) -> pa.Table:
        tried: set[tuple[str, int]] = set()  # links tried: a pod restarted in place is linked anew
        while True:
            remote = await self._replica(tried)
            try:
                with self._replicas.request(remote):
                    return await remote.predict(table)
            except SidekickError as exc:
                if not self._retryable(exc) or len(tried) + 1 >= MAX_ATTEMPTS:
                    raise
                log.warning("step %s: %s; trying another replica", self.spec.step_name, exc)
                tried.add(remote.link_id)

    async def predict_stream(self, table: pa.Table) -> AsyncIterator[StreamPart]:
        """A streamed answer; retried on another replica only while nothing has been sent."""
        self._requests += 1
        try:
            async with contextlib.aclosing(self._predict_stream(table)) as parts:
                async for part in parts:
                    yield part
        finally:
            self._requests -= 1
            self._last_request = time.monotonic()

    async def _predict_stream(self, table: pa.Table) -> AsyncIterator[StreamPart]:
        tried: set[tuple[str, int]] = set()  # links tried: a pod restarted in place is linked anew
        while True:
            remote = await self._replica(tried)
            sent = False
            try:
                with self._replicas.request(remote):
                    async with contextlib.aclosing(remote.predict_stream(table)) as parts:
                        async for part in parts:
                            sent = True
                            yield part
                return
            except SidekickError as exc:
                if sent or not self._retryable(exc) or len(tried) + 1 >= MAX_ATTEMPTS:
                    raise
                tried.add(remote.link_id)

    # -- replicas ----------------------------------------------------------------------
    async def _scale_to(self, replicas: int) -> None:
        self._desired = replicas
        await self.ctx.client.patch(Deployment, self.name, {"spec": {"replicas": replicas}},
                                    namespace=self.ctx.namespace)
        self._changed.set()

    async def _monitor(self) -> None:
        """Every interval: relink replicas that lost their link, sample busy time for the
        autoscaler, scale to zero when idle; every few intervals, list the pods."""
        scaler = Autoscaler(self.policy) if self.policy is not None else None
        ticks = 0
        seen: dict[str, float] = {}
        since = time.monotonic()
        while True:
            await asyncio.sleep(self.ctx.interval_s)
            ticks += 1
            try:
                if ticks % 5 == 0:
                    await self._sync()
                for pod in list(self._replicas.pods.values()):
                    self._replicas.on_pod("MODIFIED", pod)  # relinks a failed replica whose pod is Ready
                now = time.monotonic()
                live = self._replicas.ready()
                busy = sum(r.busy_seconds - seen.get(r.name, r.busy_seconds) for r in live)
                utilization = min(1.0, busy / ((now - since) * len(live))) if live else 0.0
                seen, since = {r.name: r.busy_seconds for r in self._replicas.remotes.values()}, now
                depth = queue_depth(self._requests, live)
                await self._rescale(scaler, utilization, now, depth)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the API server briefly away: next interval
                log.exception("step %s: monitoring its pods", self.spec.step_name)

    async def _rescale(self, scaler: Autoscaler | None, utilization: float, now: float, depth: float = 0.0) -> None:
        if scaler is None or self.scale is None or self._desired == 0 or not self._started:
            return
        idle = not self._requests and now - self._last_request >= self.ctx.idle_s
        if self.scale.minimum == 0 and idle:
            log.info("step %s: idle for %gs: scaling to zero", self.spec.step_name, self.ctx.idle_s)
            await self._scale_to(0)
            return
        change = scaler.decide(self._desired, utilization, depth)
        if change:
            log.info("step %s: %d -> %d replicas (utilization %.0f%%)", self.spec.step_name, self._desired,
                     self._desired + change, utilization * 100)
            await self._scale_to(self._desired + change)
