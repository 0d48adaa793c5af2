"""The Kubernetes objects of one task run: a Job of one pod (never restarted, killed by the cluster
at the run's deadline) and a Secret holding the run's key, its arguments, the orchestration's zip
and the start script, mounted into that pod alone (D54). The pod is held as a sidekick's is: its
own non-root uid, no privilege escalation, no capabilities, a read-only root, no API token, no
Service links, cpu and memory limits equal to its requests."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wallaroo_pulumi.runtime.kube.objects import (
    COMPONENT,
    MANAGED_BY,
    RUNTIME,
    SIDEKICK_UID,
    container_confinement,
    pod_confinement,
)

TASK = "wallaroo.ai/task"
TASK_RUN = "wallaroo.ai/task-run"
#: Where the pod reads the Secret's files; where the SDK's `task_args()` reads the arguments.
RUN_DIR = "/var/run/wallaroo-task"
ARGS_PATH = "/home/jovyan/arguments.json"
START = Path(__file__).with_name("task_start.py")
#: A Secret holds at most 1 MiB; base64 and the other files leave the zip this much.
MAX_ZIP_BYTES = 700 * 1024


@dataclass(frozen=True)
class TaskBounds:
    cpus: float
    memory_bytes: int


@dataclass(frozen=True)
class TaskRunObjects:
    """Builds the manifests of one run of a task."""

    run_id: str
    task: dict[str, Any]
    namespace: str
    runtime: str  # this runtime's name: its label on every object it owns
    image: str
    url: str  # where the pod's SDK reaches the runtime
    bounds: TaskBounds
    deadline_s: float | None
    entry: str  # the folder in the zip holding main.py
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9-]+", "-", str(self.task["name"]).lower()).strip("-")[:30].strip("-") or "task"
        return f"task-{slug}-{self.run_id[:8]}"

    @property
    def labels(self) -> dict[str, str]:
        return {MANAGED_BY: "wallaroo-runtime", COMPONENT: "task", RUNTIME: self.runtime,
                TASK: self.task["id"], TASK_RUN: self.run_id}

    def _meta(self, owners: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "labels": self.labels,
                **({"ownerReferences": owners} if owners else {})}

    def secret(self, token: dict[str, Any], zip_bytes: bytes, owners: list[dict[str, Any]]) -> dict[str, Any]:
        """The run's key (as the SDK's cached token), arguments, orchestration and start script."""
        if len(zip_bytes) > MAX_ZIP_BYTES:
            raise ValueError(f"orchestration: {len(zip_bytes)} bytes; a task pod takes at most {MAX_ZIP_BYTES} bytes "
                             "(a Secret's limit): ship large files from object storage instead")
        files = {"keycloak.json": json.dumps(token).encode(), "arguments.json": json.dumps(self.task["args"]).encode(),
                 "orchestration.zip": zip_bytes, "start.py": START.read_bytes()}
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": self._meta(owners),
                "data": {k: base64.b64encode(v).decode() for k, v in files.items()}}

    def resources(self) -> dict[str, Any]:
        amounts = {"cpu": f"{self.bounds.cpus:g}", "memory": str(self.bounds.memory_bytes)}
        return {"requests": amounts, "limits": amounts}

    def job(self, owners: list[dict[str, Any]]) -> dict[str, Any]:
        env = {"HOME": "/tmp", "TMPDIR": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache", "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", "WALLAROO_URL": self.url, "WALLAROO_TASK_ID": self.task["id"],
               "WALLAROO_TASK_RUN_ID": self.run_id, "WALLAROO_TASK_ARGS": ARGS_PATH, **self.env}
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,  # no API credentials in the user's code
            "enableServiceLinks": False,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "securityContext": pod_confinement(fsGroup=SIDEKICK_UID),
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "task",
                "image": self.image,
                "command": ["python", f"{RUN_DIR}/start.py", RUN_DIR, self.entry],
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "resources": self.resources(),
                "securityContext": container_confinement(),
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/tmp"},
                    {"name": "run", "mountPath": RUN_DIR, "readOnly": True},
                    {"name": "run", "mountPath": ARGS_PATH, "subPath": "arguments.json", "readOnly": True},
                ],
            }],
            "volumes": [{"name": "scratch", "emptyDir": {}},
                        {"name": "run", "secret": {"secretName": self.name, "defaultMode": 0o440}}],
        }
        spec: dict[str, Any] = {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600,
                                "template": {"metadata": {"labels": self.labels}, "spec": pod_spec}}
        if self.deadline_s:
            spec["activeDeadlineSeconds"] = max(1, int(self.deadline_s) + 30)  # the runtime kills it first
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": self._meta(owners), "spec": spec}
