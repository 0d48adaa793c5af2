"""What the Kubernetes tests share: the stack program, the target's settings, and reading back
the objects one runtime owns as the API server holds them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lightkube import Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Event, Namespace, Pod, ServiceAccount

from wallaroo_pulumi.testing.control_plane import LocalControlPlane
from wallaroo_pulumi.testing.kube_cluster import KubeCluster
from wallaroo_pulumi.testing.pod_runner import PodRunner
from wallaroo_pulumi.testing.waiting import wait_until

T = TypeVar("T")

#: A stack with one KubernetesRuntime, every setting from `pulumi config` so updates are `config set`.
PROGRAM = """
import pulumi
from wallaroo_pulumi import KubernetesRuntime

cfg = pulumi.Config()
timeout = cfg.get("ready_timeout")


def ready_timeout(args):  # a short wait where a test expects the rollout to fail
    if timeout:
        args.opts.custom_timeouts = pulumi.CustomTimeouts(create=timeout, update=timeout)
    return pulumi.ResourceTransformationResult(args.props, args.opts)


rt = KubernetesRuntime(
    "rt",
    image=cfg.require("image"),
    admin_token=cfg.require_secret("admin_token"),
    secrets_key=cfg.require_secret("secrets_key"),
    namespace=cfg.require("namespace"),
    replicas=cfg.get_int("replicas") or 1,
    autoscale_min=cfg.get_int("autoscale_min"),
    autoscale_max=cfg.get_int("autoscale_max"),
    gpus=cfg.get_int("gpus") or 0,
    cpus=2,
    memory="8Gi",
    node_selector=cfg.get_object("node_selector"),
    log_retention="30d",
    sidekick_placement=cfg.get("sidekick_placement") or "pods",
    opts=pulumi.ResourceOptions(transformations=[ready_timeout]),
)
pulumi.export("url", rt.url)
pulumi.export("namespace", rt.namespace)
"""


@dataclass(frozen=True)
class Target:
    """Images and GPU placement for the cluster under test. On the local plane no image is pulled
    (kwok runs no containers); on a real cluster the images must exist and serve /health."""

    image: str
    image_next: str
    gpus: int
    gpu_selector: dict[str, str] | None

    @classmethod
    def for_cluster(cls, cluster: KubeCluster) -> Target:
        if cluster.local:
            return cls("registry.local/wallaroo-runtime:1", "registry.local/wallaroo-runtime:2", 1,
                       {"wallaroo.ai/accel": "cuda"})
        image = os.environ.get("WALLAROO_TEST_IMAGE")
        if not image:
            raise RuntimeError("WALLAROO_TEST_IMAGE: set it to the runtime image your cluster can pull "
                               "(scripts/runtime-image builds one) to run these tests on your cluster")
        selector = os.environ.get("WALLAROO_TEST_GPU_SELECTOR")  # e.g. nvidia.com/gpu.present=true
        key, _, value = (selector or "").partition("=")
        return cls(image, os.environ.get("WALLAROO_TEST_IMAGE_NEXT", image), 1 if selector else 0,
                   {key: value} if selector else None)


def new_namespace() -> str:
    return f"wallaroo-test-{secrets.token_hex(3)}"


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 120,
             detail: Callable[[], str] | None = None) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what`, the last value and
    `detail()` (e.g. `events(client, ns)`)."""
    return wait_until(probe, timeout_s, what, interval=0.25, detail=detail)  # type: ignore[arg-type]


def events(client: Client, namespace: str) -> str:
    """The namespace's pods and events, oldest first: what a failed wait should show."""
    lines = [f"pod {p.metadata.name}: {p.status.phase} on {p.spec.nodeName} "
             f"{[(c.type, c.status, c.reason) for c in p.status.conditions or []]}"
             for p in client.list(Pod, namespace=namespace)]
    evs = sorted(client.list(Event, namespace=namespace), key=lambda e: str(e.lastTimestamp or e.eventTime))
    lines += [f"event {e.involvedObject.kind}/{e.involvedObject.name}: {e.reason}: {e.message}" for e in evs]
    return "\n".join(lines)


def instance_labels(name: str = "rt") -> dict[str, str]:
    return {"app.kubernetes.io/name": "wallaroo-runtime", "app.kubernetes.io/instance": name}


def deployments(client: Client, namespace: str) -> dict[str, Deployment]:
    """The runtime's Deployments by role (`serve`, `scheduler` or `all`)."""
    return {d.spec.template.metadata.labels["wallaroo.ai/role"]: d
            for d in client.list(Deployment, namespace=namespace, labels=instance_labels())}


def pods(client: Client, namespace: str, role: str | None = None) -> list[Pod]:
    labels = {**instance_labels(), **({"wallaroo.ai/role": role} if role else {})}
    return [p for p in client.list(Pod, namespace=namespace, labels=labels) if not p.metadata.deletionTimestamp]


def ready(pod: Pod) -> bool:
    return pod.status is not None and pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def as_dict(obj: Any) -> dict[str, Any]:
    """A lightkube model as the plain JSON the API server sent."""
    return obj.to_dict()


@contextmanager
def owned_namespace(client: Client, owner: str) -> Iterator[str]:
    """A new namespace with a ServiceAccount `owner` (the runtime's stand-in owner), deleted after."""
    name = new_namespace()
    client.create(Namespace.from_dict({"metadata": {"name": name}}))
    wait_for("the namespace's default ServiceAccount", lambda: list(client.list(ServiceAccount, namespace=name)))
    client.create(ServiceAccount.from_dict({"metadata": {"name": owner, "namespace": name}}))
    try:
        yield name
    finally:
        client.delete(Namespace, name)


@contextmanager
def task_pods(plane: LocalControlPlane, namespace: str, workdir: Path, python: str | None = None) -> Iterator[PodRunner]:
    """Task-run pods of `namespace` run on this machine (PodRunner as their kubelet), their logs served
    to the API server as a kubelet's are."""
    with PodRunner(plane, namespace, labels={"app.kubernetes.io/component": "task"}, workdir=workdir,
                   python=python) as pods:
        pki = plane.workdir / "pki"
        pods.serve_logs(pki / "apiserver.crt", pki / "apiserver.key")
        yield pods
