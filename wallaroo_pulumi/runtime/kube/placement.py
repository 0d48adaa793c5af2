"""`KubernetesPlacement`: the engine's step placement on a cluster. Each step becomes a
`KubeStepPool` (a Deployment of sidekick pods); at start it resolves the owner of those
Deployments, and after the deployments are restored it deletes what no live step claims (the
objects a crashed runtime left behind)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from pathlib import Path

from lightkube import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Secret, ServiceAccount
from lightkube.types import CascadeType

from wallaroo_pulumi.runtime.kube.client import KubeContext, api_client, in_cluster_namespace
from wallaroo_pulumi.runtime.kube.objects import COMPONENT, RUNTIME, Owner, StepObjects
from wallaroo_pulumi.runtime.kube.pool import KubeStepPool
from wallaroo_pulumi.runtime.kube.settings import KubePlacementSettings, KubeScale
from wallaroo_pulumi.runtime.sidekick.autoscale import DEFAULT_TARGET_PCT, ScalePolicy
from wallaroo_pulumi.runtime.sidekick.remote import ModelBundle
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec
from wallaroo_pulumi.runtime.sidekick.steps import StepTarget

log = logging.getLogger("wallaroo.kube")
#: What may own the step Deployments: the runtime's Deployment, or its ServiceAccount (what KubernetesRuntime names).
OWNER_KINDS = {"Deployment": ("apps/v1", Deployment), "ServiceAccount": ("v1", ServiceAccount)}


class KubernetesPlacement:
    local = False

    def __init__(self, settings: KubePlacementSettings, artifact_path: Callable[[str], Path]) -> None:
        namespace = settings.namespace or in_cluster_namespace()
        if namespace is None:
            raise ValueError("kube namespace: not running in a pod, so name the namespace for sidekick pods")
        self.settings = settings
        self.ctx = KubeContext(client=api_client(settings.kubeconfig), namespace=namespace,
                               runtime=settings.runtime_name, image=settings.image,
                               request_timeout_s=settings.request_timeout_s, idle_s=settings.idle_s)
        self._artifact_path = artifact_path
        self._pools: weakref.WeakSet[KubeStepPool] = weakref.WeakSet()

    async def start(self) -> None:
        """Find the owner of the step Deployments (named by the settings)."""
        if self.settings.owner is None:
            return
        kind, name = self.settings.owner.split("/")
        api_version, resource = OWNER_KINDS[kind]
        try:
            owner = await self.ctx.client.get(resource, name, namespace=self.ctx.namespace)
        except ApiError as exc:
            raise RuntimeError(f"kube owner: cannot read {kind} {self.ctx.namespace}/{name}: {exc.status.message}") from None
        self.ctx.owner = Owner(api_version, kind, name, owner.metadata.uid)

    def pool(self, target: StepTarget, spec: SidekickSpec, replicas: int, policy: ScalePolicy | None) -> KubeStepPool:
        objects = StepObjects(target, spec, self.ctx.namespace, self.ctx.runtime, self.ctx.image)
        bundle = ModelBundle(target.sha, self._artifact_path(target.sha), list(target.requirements))
        scale = None
        if target.autoscale_max is not None and (target.autoscale_min == 0 or policy is not None):
            queue = {} if policy is None or policy.queue_up is None else {
                "queue_up": policy.queue_up, "queue_down": policy.queue_down, "window_s": policy.window_s}
            scale = KubeScale(minimum=target.autoscale_min or 0, maximum=target.autoscale_max,
                              target=(target.autoscale_target_pct or DEFAULT_TARGET_PCT) / 100, **queue)
        pool = KubeStepPool(self.ctx, objects, bundle, replicas, scale)
        self._pools.add(pool)
        return pool

    async def collect_orphans(self) -> list[str]:
        """Delete this runtime's step objects that no live pool claims; their Deployments' names.
        Called once the restored deployments have settled."""
        keep = {pool.name for pool in self._pools if not pool.stopped}
        client, ns = self.ctx.client, self.ctx.namespace
        labels = {RUNTIME: self.ctx.runtime, COMPONENT: "sidekick"}
        gone: list[str] = []
        for kind in (Deployment, Secret, ServiceAccount):
            async for obj in client.list(kind, namespace=ns, labels=labels):
                name = obj.metadata.name
                if name in keep:
                    continue
                try:
                    await client.delete(kind, name, namespace=ns, cascade=CascadeType.BACKGROUND)
                except ApiError as exc:
                    if exc.status.code != 404:
                        raise
                if kind is Deployment:
                    gone.append(name)
        if gone:
            log.info("deleted %d orphaned sidekick Deployment(s): %s", len(gone), ", ".join(gone))
        return gone

    def detach(self) -> None:
        """While the runtime stops: pools stopping now leave their objects serving (the next start adopts them)."""
        self.ctx.keep_objects = True

    async def close(self) -> None:
        await self.ctx.client.close()
