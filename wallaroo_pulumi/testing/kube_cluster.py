"""A Kubernetes cluster the tests talk to, named by a kubeconfig (its current context): the local
control plane, or the user's own cluster."""

from __future__ import annotations

from pathlib import Path

from lightkube import Client, KubeConfig


class KubeCluster:
    """`kubeconfig`: the file every client reads; `local`: True for the throwaway control plane
    (kwok nodes: Pods get Ready, but no container runs)."""

    local = False

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = Path(kubeconfig)

    def env(self) -> dict[str, str]:
        """For subprocesses (`pulumi`, kubectl): the Kubernetes provider reads KUBECONFIG."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def client(self) -> Client:
        """A lightkube client on this cluster, authenticated as the kubeconfig's user."""
        return Client(config=KubeConfig.from_file(self.kubeconfig), field_manager="wallaroo-tests")
