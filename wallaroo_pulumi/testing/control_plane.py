"""A throwaway Kubernetes control plane on loopback for tests: etcd, kube-apiserver (TLS, token
auth, RBAC), kube-controller-manager, kube-scheduler and kwok with fake nodes (D34).

    with LocalControlPlane(tmp_path, nodes=[FakeNode("gpu-0", gpus=4)]) as cluster:
        env = {"KUBECONFIG": str(cluster.kubeconfig)}   # for `pulumi up`, kubectl, ...
        pods = list(cluster.client().list(Pod, namespace="default"))
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.testing.kube_cluster import KubeCluster
from wallaroo_pulumi.testing.kube_pki import write_pki
from wallaroo_pulumi.testing.processes import Harness, ServerProcess, die_with_parent

KWOK_STAGES = Path(__file__).with_name("kwok_stages.yaml")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
STORAGE_CLASS = "standard"


class ControlPlaneError(RuntimeError):
    """A part of the control plane is missing, exited, or did not become ready in time."""


@dataclass(frozen=True)
class FakeNode:
    """A kwok node: Ready, schedulable, advertising the capacity given (ephemeral storage too, as
    every kubelet does: sidekick pods request their scratch from it); it runs no containers."""

    name: str
    cpu: str = "16"
    memory: str = "64Gi"
    gpus: int = 0
    arch: str = "amd64"
    labels: dict[str, str] = field(default_factory=dict)
    pods: int = 110
    ephemeral_storage: str = "100Gi"

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods), "ephemeral-storage": self.ephemeral_storage,
                    **({"nvidia.com/gpu": str(self.gpus)} if self.gpus else {})}
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": self.arch, "type": "kwok", **self.labels},
            },
            "status": {"capacity": capacity, "allocatable": capacity,
                       "nodeInfo": {"architecture": self.arch, "operatingSystem": "linux"}},
        }


#: Two CPU nodes, an arm64 one and two GPU nodes (4 A100 and 8 H100), labelled as GPU clusters often are.
DEFAULT_NODES: tuple[FakeNode, ...] = (
    FakeNode("cpu-0", labels={"wallaroo.ai/accel": "none"}),
    FakeNode("cpu-1", labels={"wallaroo.ai/accel": "none"}),
    FakeNode("arm-0", arch="arm64", labels={"wallaroo.ai/accel": "none"}),
    FakeNode("gpu-a100-0", cpu="32", memory="256Gi", gpus=4,
             labels={"wallaroo.ai/accel": "cuda", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}),
    FakeNode("gpu-h100-0", cpu="64", memory="512Gi", gpus=8,
             labels={"wallaroo.ai/accel": "cuda", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
)


class LocalControlPlane(KubeCluster, Harness):
    """Start with `start()` or `with`; `stop()` ends every process, also when starting failed.

    `bin_dir`: where the binaries are (default: PATH). `workdir` keeps the data, certificates,
    kubeconfig and one log per part (`logs/<part>.log`). `real_nodes`: names of kubelets that will
    register (testing.real_node.RealNode), each given a token as `system:node:<name>` (`node_tokens`).
    `storage_class`: the default StorageClass (hostPath volumes the controller manager provisions);
    without it, the real node offers local volumes of its own.
    """

    local = True
    error = ControlPlaneError

    def __init__(self, workdir: Path, *, nodes: Iterable[FakeNode] = DEFAULT_NODES, bin_dir: Path | None = None,
                 ready_timeout_s: float = 90, real_nodes: Iterable[str] = (), storage_class: bool = True) -> None:
        self.workdir = Path(workdir)
        self.nodes = tuple(nodes)
        self.ready_timeout_s = ready_timeout_s
        # kwok only where it has fake nodes to run (a plane for a real node has none)
        self.bins = self._find_binaries(bin_dir, BINARIES if self.nodes else BINARIES[:-1])
        self.token = secrets.token_urlsafe(24)
        self.node_tokens = {name: secrets.token_urlsafe(24) for name in real_nodes}
        self.storage_class = storage_class
        self.server = ""
        self.pids: list[int] = []  # every process started, running or not
        KubeCluster.__init__(self, self.workdir / "kubeconfig")
        Harness.__init__(self, self.workdir / "logs", preexec_fn=die_with_parent)

    @staticmethod
    def _find_binaries(bin_dir: Path | None, names: tuple[str, ...] = BINARIES) -> dict[str, str]:
        path = str(bin_dir) if bin_dir else os.environ.get("PATH", "")
        found = {b: shutil.which(b, path=path) for b in names}
        missing = [b for b, p in found.items() if not p]
        if missing:
            raise ControlPlaneError(
                f"LocalControlPlane: not found in {'bin_dir ' + str(bin_dir) if bin_dir else 'PATH'}: "
                f"{', '.join(missing)}. In a clone of wallaroo-pulumi, scripts/k8s-tools builds them into "
                f".tools/bin (etcd 3.7, Kubernetes 1.37, kwok 0.8)")
        return {b: str(p) for b, p in found.items()}

    # -- lifecycle (Harness: start(), stop(), with) -----------------------------------
    def _spawn(self, name: str, argv: list[str]) -> ServerProcess:
        server = self.spawn(name, argv)
        self.pids.append(server.proc.pid)
        return server

    def _start(self) -> None:
        pki = write_pki(self.workdir / "pki")
        tokens = self.workdir / "pki" / "tokens.csv"
        tokens.write_text(f"{self.token},wallaroo-test-admin,wallaroo-test-admin,system:masters\n" + "".join(
            f"{token},system:node:{name},system:node:{name},system:nodes\n" for name, token in self.node_tokens.items()))
        tokens.chmod(0o600)

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = self._spawn("etcd", [
            self.bins["etcd"], "--name", "default", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        self._wait("etcd", [etcd], lambda: httpx.get(f"{etcd_url}/health", timeout=2).json().get("health") == "true")

        self.server = f"https://127.0.0.1:{api_port}"
        apiserver = self._spawn("kube-apiserver", [
            self.bins["kube-apiserver"], f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={pki['apiserver.crt']}", f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}", f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
            f"--service-account-key-file={pki['sa.pub']}", f"--service-account-signing-key-file={pki['sa.key']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none",
            f"--cert-dir={self.workdir / 'pki'}", "--profiling=false",
            # kwok nodes' Hostname is their name, which resolves nowhere: pod logs go by InternalIP (as kubeadm's)
            "--kubelet-preferred-address-types=InternalIP,Hostname"])
        self._wait("kube-apiserver", [etcd, apiserver], self._api_ready)
        self._write_kubeconfig(pki["ca.crt"])

        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        controllers = self._spawn("kube-controller-manager", [
            self.bins["kube-controller-manager"], kubeconfig, "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={pki['sa.key']}", f"--root-ca-file={pki['ca.crt']}",
            "--use-service-account-credentials=false",
            # hostPath volumes under /tmp/hostpath_pv for claims of the default StorageClass
            "--enable-hostpath-provisioner=true"])
        scheduler = self._spawn("kube-scheduler", [
            self.bins["kube-scheduler"], kubeconfig, "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}"])
        parts = [etcd, apiserver, controllers, scheduler]
        if self.nodes:
            stages = self.workdir / "kwok-stages.yaml"
            shutil.copyfile(KWOK_STAGES, stages)
            kwok = self._spawn("kwok", [
                self.bins["kwok"], kubeconfig, f"--config={stages}", "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                "--cidr=10.244.0.0/16", "--node-ip=127.0.0.1",
                # kubelet-like Lease heartbeats; without the flag none are renewed and the node
                # controller marks every node NotReady (and its pods unready) after ~50 s
                "--node-lease-duration-seconds=40"])
            parts.append(kwok)

        if self.storage_class:
            self.apply(self._storage_class())
        for node in self.nodes:
            self.apply(node.manifest())
        self._wait("the fake nodes", parts, self._nodes_ready)
        # the controller-manager's ServiceAccount controller: no default ServiceAccount, no Pods
        self._wait("kube-controller-manager", parts,
                   lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200)

    # -- readiness ----------------------------------------------------------------
    def _wait(self, what: str, parts: list[ServerProcess], ready: Callable[[], bool]) -> None:
        self.wait(what, parts, ready, self.ready_timeout_s, interval=0.2)

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server, verify=self.ssl_context(),
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts this plane's CA only (the API server's certificate is ours)."""
        return ssl.create_default_context(cafile=self.workdir / "pki" / "ca.crt")

    def _get(self, path: str) -> httpx.Response:
        with self._http() as http:
            return http.get(path)

    def _api_ready(self) -> bool:
        return self._get("/readyz").status_code == 200

    def _nodes_ready(self) -> bool:
        nodes = self._get("/api/v1/nodes").json()["items"]
        ready = {n["metadata"]["name"] for n in nodes
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))}
        return ready >= {n.name for n in self.nodes}

    # -- objects ---------------------------------------------------------------------
    def apply(self, manifest: dict[str, Any]) -> None:
        """Create a cluster-scoped object (Node, StorageClass, PersistentVolume) as the admin."""
        kind = manifest["kind"]
        path = {"Node": "/api/v1/nodes", "StorageClass": "/apis/storage.k8s.io/v1/storageclasses",
                "PersistentVolume": "/api/v1/persistentvolumes"}[kind]
        with self._http() as http:
            resp = http.post(path, json=manifest)
        if resp.status_code != 201:
            raise ControlPlaneError(f"creating {kind} {manifest['metadata']['name']}: {resp.status_code} {resp.text}")

    @staticmethod
    def _storage_class() -> dict[str, Any]:
        return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS,
                             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate"}

    def _write_kubeconfig(self, ca: Path) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "wallaroo-test",
            "clusters": [{"name": "wallaroo-test", "cluster": {
                "server": self.server, "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}}],
            "users": [{"name": "wallaroo-test-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "wallaroo-test", "context": {"cluster": "wallaroo-test",
                                                               "user": "wallaroo-test-admin"}}],
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))  # JSON is YAML: every client reads it
        self.kubeconfig.chmod(0o600)
