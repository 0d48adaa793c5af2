"""The Kubernetes objects of one model step, as the API takes them: a Deployment of sidekick
pods, a Secret holding the step's env (and its link token) mounted only into those pods, and a
ServiceAccount with no rights and no token. Names are derived from everything the pods run, so
a changed step gets new objects beside the old ones, and the same step after a restart the same
ones (D35). The pods' limits: cpu and memory as asked, ephemeral-storage from the step's
scratch_size (its scratch emptyDir's sizeLimit plus room for logs); a pod's process count is the
node's (the kubelet's podPidsLimit), not the step's (issue 28)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from wallaroo_pulumi.deployment import parse_memory_quantity
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec
from wallaroo_pulumi.runtime.sidekick.steps import StepTarget

SERVE_MODULE = "wallaroo_pulumi.runtime.sidekick.serve"
LINK_PORT = 9000
SIDEKICK_UID = 10001  # the runtime image's user


def pod_confinement(**extra: Any) -> dict[str, Any]:
    """The pod securityContext every pod running a user's code gets (a model step's, a task run's)."""
    return {"runAsNonRoot": True, "runAsUser": SIDEKICK_UID, "runAsGroup": SIDEKICK_UID, **extra,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_confinement() -> dict[str, Any]:
    """The container securityContext beside it: no privilege escalation, no capabilities, read-only root."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
GPU_RESOURCE = "nvidia.com/gpu"
#: What a sidekick container writes outside its scratch (its logs; its root file system is read-only).
EPHEMERAL_OVERHEAD = 64 * 2**20
ARCH = {"x86": "amd64", "arm": "arm64"}
TOKEN_KEY = "WALLAROO_SIDEKICK_TOKEN"
#: The node label a step's accel is matched against, as a preference: a cluster without it still schedules.
ACCEL_LABEL = "wallaroo.ai/accel"

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
RUNTIME = "wallaroo.ai/runtime"
SIDEKICK = "wallaroo.ai/sidekick"
PIPELINE = "wallaroo.ai/pipeline"
PIPELINE_VERSION = "wallaroo.ai/pipeline-version"
DEPLOYMENT_ID = "wallaroo.ai/deployment-id"
STEP = "wallaroo.ai/step"
MODEL_SHA = "wallaroo.ai/model-sha"


def _slug(text: str, limit: int) -> str:
    """A DNS-1123 label fragment (also a valid label value)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "x"


def parse_selector(label: str) -> dict[str, str]:
    """Wallaroo's ``deployment_label`` ('key:value' or 'key=value') as a node selector."""
    match = re.fullmatch(r"([^:=]+)[:=](.*)", label.strip())
    if match is None or not match.group(1).strip():
        raise ValueError(f"deployment_label: expected 'key:value' (a node label), got {label!r}")
    return {match.group(1).strip(): match.group(2).strip()}


@dataclass(frozen=True)
class Owner:
    """An object every sidekick Deployment is owned by (the runtime's own Deployment), so
    deleting the runtime deletes its sidekicks too."""

    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class StepObjects:
    """Builds the manifests of one step."""

    target: StepTarget
    spec: SidekickSpec
    namespace: str
    runtime: str  # this runtime's name: its label on every object it owns
    image: str

    @property
    def name(self) -> str:
        t = self.target
        digest = hashlib.sha256(json.dumps({
            "runtime": self.runtime, "deployment": t.deployment_id, "version": t.pipeline_version_id,
            "step": self.spec.step_name, "sha": t.sha, "requirements": t.requirements, "env": self.spec.env,
            "cpus": self.spec.cpus, "memory": self.spec.memory, "gpus": self.spec.gpus, "arch": t.arch,
            **({"scratch": self.spec.scratch_size} if self.spec.scratch_size else {}),
            "accel": t.accel, "label": t.deployment_label, "image": self.image,
        }, sort_keys=True).encode()).hexdigest()[:10]
        return f"sk-{_slug(t.pipeline_name, 20)}-{_slug(self.spec.step_name, 20)}-{digest}"

    @property
    def selector(self) -> dict[str, str]:
        return {SIDEKICK: self.name}

    @property
    def labels(self) -> dict[str, str]:
        t = self.target
        return {
            MANAGED_BY: "wallaroo-runtime", COMPONENT: "sidekick", RUNTIME: self.runtime, SIDEKICK: self.name,
            PIPELINE: _slug(t.pipeline_name, 63), PIPELINE_VERSION: t.pipeline_version,
            DEPLOYMENT_ID: str(t.deployment_id), STEP: _slug(self.spec.step_name, 63), MODEL_SHA: t.sha[:63],
        }

    def _meta(self, owners: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "labels": self.labels,
                **({"ownerReferences": owners} if owners else {})}

    def service_account(self, owners: list[dict[str, Any]]) -> dict[str, Any]:
        """The pods' identity: bound to no role, and no token mounted."""
        return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self._meta(owners),
                "automountServiceAccountToken": False}

    def secret(self, token: str, owners: list[dict[str, Any]]) -> dict[str, Any]:
        """The step's env and its link token: what only this step's pods read."""
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": self._meta(owners),
                "stringData": {**self.spec.env, TOKEN_KEY: token}}

    def resources(self) -> dict[str, Any]:
        spec = self.spec
        amounts: dict[str, str] = {"cpu": f"{spec.cpus:g}"}
        if spec.memory is not None:
            amounts["memory"] = str(parse_memory_quantity(spec.memory))
        if spec.gpus:
            amounts[GPU_RESOURCE] = str(spec.gpus)
        if spec.scratch_bytes is not None:
            # the scratch emptyDir plus the container's logs: past it the kubelet evicts the pod
            amounts["ephemeral-storage"] = str(spec.scratch_bytes + EPHEMERAL_OVERHEAD)
        return {"requests": amounts, "limits": amounts}

    def scratch_volume(self) -> dict[str, Any]:
        """The pod's scratch (HOME, TMPDIR): an emptyDir on the node's disk, no larger than scratch_size."""
        size = self.spec.scratch_bytes
        return {"name": "scratch", "emptyDir": {"sizeLimit": str(size)} if size is not None else {}}

    def deployment(self, replicas: int, owners: list[dict[str, Any]]) -> dict[str, Any]:
        t, spec = self.target, self.spec
        node_selector = {"kubernetes.io/arch": ARCH.get(t.arch, t.arch), "kubernetes.io/os": "linux"}
        if t.deployment_label:
            node_selector.update(parse_selector(t.deployment_label))
        pod_spec: dict[str, Any] = {
            "serviceAccountName": self.name,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,  # no other Services' addresses in the model's env
            "nodeSelector": node_selector,
            # a CPU step keeps off accelerator nodes, an accelerated one goes to its kind, where nodes say so
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "preference": {"matchExpressions": [{"key": ACCEL_LABEL, "operator": "In", "values": [t.accel]}]},
            }]}},
            "securityContext": pod_confinement(),
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "sidekick",
                "image": self.image,
                "command": ["python", "-m", SERVE_MODULE],
                "args": ["--host", "$(POD_IP)", "--port", str(LINK_PORT), "--name", spec.step_name,
                         "--env-names", ",".join(sorted(spec.env)), "--workdir", "/tmp/sidekick",
                         *(["--scratch-size", spec.scratch_size] if spec.scratch_size else []),
                         *(["--concurrency", str(spec.concurrency)] if spec.concurrency else [])],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "TMPDIR", "value": "/tmp"}, {"name": "HOME", "value": "/tmp"}],
                "envFrom": [{"secretRef": {"name": self.name}}],
                "ports": [{"name": "link", "containerPort": LINK_PORT}],
                # Ready once it listens; the runtime sends the model and waits for READY itself
                "readinessProbe": {"tcpSocket": {"port": "link"}, "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": "link"}, "periodSeconds": 20, "failureThreshold": 3},
                "resources": self.resources(),
                "securityContext": container_confinement(),
                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
            }],
            "volumes": [self.scratch_volume()],
        }
        if spec.gpus:  # GPU nodes are commonly tainted for GPU pods only
            pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        return {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": self._meta(owners),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": self.selector},
                "template": {"metadata": {"labels": self.labels}, "spec": pod_spec},
            },
        }
