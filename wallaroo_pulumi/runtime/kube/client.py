"""The runtime's Kubernetes API client and what every step pool shares: the namespace, the
runtime's name on its objects, the sidekick image, the owner of the step Deployments, and the
link's timeouts."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lightkube import AsyncClient, KubeConfig

from wallaroo_pulumi.runtime.kube.objects import Owner

FIELD_MANAGER = "wallaroo-runtime"
HTTP_LOGGER = "httpx2"  # the HTTP client lightkube uses
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def api_client(kubeconfig: Path | None = None) -> AsyncClient:
    """In a pod: its ServiceAccount; else ``kubeconfig``, $KUBECONFIG or ~/.kube/config."""
    # one INFO line per API request (a pod list every few seconds per step) would drown the runtime's log
    logging.getLogger(HTTP_LOGGER).setLevel(logging.WARNING)
    if kubeconfig is not None:
        config = KubeConfig.from_file(kubeconfig)
    elif os.environ.get("KUBECONFIG") and not (SERVICE_ACCOUNT_DIR / "token").exists():
        config = KubeConfig.from_file(os.environ["KUBECONFIG"])
    else:
        config = KubeConfig.from_env()
    return AsyncClient(config=config, field_manager=FIELD_MANAGER)


def in_cluster_namespace() -> str | None:
    """The namespace of this pod, when running in one with a ServiceAccount token."""
    path = SERVICE_ACCOUNT_DIR / "namespace"
    return path.read_text().strip() if path.is_file() else None


@dataclass
class KubeContext:
    client: AsyncClient
    namespace: str
    runtime: str  # label value naming this runtime on its objects
    image: str
    owner: Owner | None = None
    request_timeout_s: float = 300.0
    idle_s: float = 300.0  # a step with autoscale_min 0 scales to zero after this long without requests
    interval_s: float = 1.0  # the monitor's period: autoscaling samples, reconnects
    keep_objects: bool = False  # set while the runtime stops: its pods keep serving, the next start adopts them
