"""The Kubernetes group: the control plane, the kubelet and the provider plugin are built by the
setup phase (scripts/test-setup, which `make test` runs first); here they are only checked, then
one control plane with kwok nodes serves the package (or the cluster named by
WALLAROO_TEST_KUBECONFIG: README, "Running on Kubernetes"), and a second one with a real node
(kubelet + containerd, `real_node`) serves the tests whose pods must really run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from wallaroo_pulumi.testing.control_plane import FakeNode, LocalControlPlane
from wallaroo_pulumi.testing.kube_cluster import KubeCluster
from wallaroo_pulumi.testing.pytest_kubernetes import KUBECONFIG_ENV, cluster_session, kube_fake_nodes  # noqa: F401
from wallaroo_pulumi.testing.real_node import RealNode

REPO = Path(__file__).resolve().parents[2]
#: The runtime image scripts/test-setup builds; the real node runs it (another, as current, with this variable).
RUNTIME_IMAGE = "localhost/wallaroo-pulumi-runtime:test"
NODE_IMAGE_ENV = "WALLAROO_TEST_NODE_IMAGE"


@pytest.fixture(scope="session")
def k8s_tools() -> Path:
    """The tools scripts/test-setup built, checked (seconds); against a cluster of the user's, only
    the provider plugin. Never a build: that belongs to the setup phase, not to a test's timeout."""
    only = ["--plugin-only"] if os.environ.get(KUBECONFIG_ENV) else []
    done = subprocess.run([str(REPO / "scripts" / "k8s-tools"), "--check", *only], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"the Kubernetes tools are not built ({done.stderr.strip()}): run scripts/test-setup "
                    f"(make test runs it first) or scripts/k8s-tools {' '.join(only)}".rstrip(), pytrace=False)
    return REPO / ".tools" / "bin"


@pytest.fixture(scope="package")  # stopped once this group is done, not at the end of the whole run
def kube_cluster(k8s_tools: Path, tmp_path_factory: pytest.TempPathFactory,
                 kube_fake_nodes: Iterable[FakeNode]) -> Iterator[KubeCluster]:  # noqa: F811
    yield from cluster_session(tmp_path_factory.mktemp("control-plane"), kube_fake_nodes, bin_dir=k8s_tools)


@pytest.fixture(scope="package")
def node_image() -> str:
    """The runtime image the real node runs, checked to be built from these sources (never built here)."""
    image = os.environ.get(NODE_IMAGE_ENV, RUNTIME_IMAGE)
    done = subprocess.run([str(REPO / "scripts" / "runtime-image"), "--check", image], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{done.stderr.strip()}: run scripts/test-setup (make test runs it first)", pytrace=False)
    return image


@pytest.fixture(scope="package")
def real_node(k8s_tools: Path, node_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A control plane of its own whose one node is real: a kubelet and containerd on this machine
    running the runtime image (no kwok node beside it, so every pod runs). Stopped, and everything
    it made removed, once the package is done, failed tests included."""
    if os.environ.get(KUBECONFIG_ENV):
        pytest.skip(f"{KUBECONFIG_ENV} names a cluster of yours: the real node is started on this machine only")
    with LocalControlPlane(tmp_path_factory.mktemp("node-plane"), nodes=(), real_nodes=("node-0",), bin_dir=k8s_tools,
                           storage_class=False) as plane, \
            RealNode(plane, tmp_path_factory.mktemp("real-node"), images=[node_image], bin_dir=k8s_tools) as node:
        yield node


@pytest.fixture(scope="module")
def plane(kube_cluster: KubeCluster) -> LocalControlPlane:
    """The local control plane, for tests that run pod processes on this machine (PodRunner)."""
    if not isinstance(kube_cluster, LocalControlPlane):
        pytest.skip("runs pod processes on this machine: needs the local control plane")
    return kube_cluster
