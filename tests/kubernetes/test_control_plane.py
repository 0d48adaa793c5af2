"""The local control plane harness itself: what it serves (TLS, token auth, RBAC, kwok nodes
with GPUs and labels), and that it leaves no process behind, also when a test fails or a part
does not start."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node

from tests.kubernetes.k8s_helpers import wait_for
from wallaroo_pulumi.testing.control_plane import BINARIES, ControlPlaneError, FakeNode, LocalControlPlane
from wallaroo_pulumi.testing.kube_cluster import KubeCluster


@pytest.fixture
def local_plane(kube_cluster: KubeCluster) -> LocalControlPlane:
    if not isinstance(kube_cluster, LocalControlPlane):
        pytest.skip("checks the local control plane; WALLAROO_TEST_KUBECONFIG names another cluster")
    return kube_cluster


def test_nodes_advertise_gpus_and_labels(local_plane: LocalControlPlane) -> None:
    nodes = {n.metadata.name: n for n in local_plane.client().list(Node)}
    assert set(nodes) == {n.name for n in local_plane.nodes}
    for fake in local_plane.nodes:
        node = nodes[fake.name]
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        assert node.metadata.labels["kubernetes.io/arch"] == fake.arch
        assert {k: node.metadata.labels[k] for k in fake.labels} == fake.labels
        assert node.status.allocatable.get("nvidia.com/gpu") == (str(fake.gpus) if fake.gpus else None)


def test_nodes_renew_their_leases(local_plane: LocalControlPlane) -> None:
    """Like kubelets: without renewals the node controller marks every node NotReady after its
    grace period, and the pods on them unready for good (kwok only readies Pending pods)."""
    client = local_plane.client()
    leases = {lease.metadata.name: lease for lease in client.list(Lease, namespace="kube-node-lease")}
    assert set(leases) == {n.name for n in local_plane.nodes}
    first = {name: lease.spec.renewTime for name, lease in leases.items()}
    wait_for("every lease renewed", lambda: all(
        client.get(Lease, name, namespace="kube-node-lease").spec.renewTime > renewed
        for name, renewed in first.items()), timeout_s=30)


def test_api_server_wants_tls_a_token_and_rbac(local_plane: LocalControlPlane) -> None:
    ca = local_plane.ssl_context()
    with pytest.raises(httpx.ConnectError):  # its certificate is not one of the system's CAs
        httpx.get(f"{local_plane.server}/version", timeout=5)
    assert httpx.get(f"{local_plane.server}/api/v1/nodes", verify=ca, timeout=5).status_code == 401
    bad = httpx.get(f"{local_plane.server}/api/v1/nodes", verify=ca, timeout=5,
                    headers={"Authorization": "Bearer not-the-token"})
    assert bad.status_code == 401
    review = local_plane.client().create(SubjectAccessReview(spec={
        "user": "system:serviceaccount:default:default",
        "resourceAttributes": {"namespace": "default", "verb": "list", "resource": "secrets"}}))
    assert review.status.allowed is False  # RBAC decides, and grants nothing by default
    version = httpx.get(f"{local_plane.server}/version", verify=ca, timeout=5,
                        headers={"Authorization": f"Bearer {local_plane.token}"}).json()
    assert version["gitVersion"] == "v1.37.2"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_nothing_is_left_when_the_test_fails(local_plane: LocalControlPlane, tmp_path: Path) -> None:
    bin_dir = Path(local_plane.bins["kube-apiserver"]).parent
    with pytest.raises(AssertionError, match="the test failed"):
        with LocalControlPlane(tmp_path, nodes=[FakeNode("n0", gpus=2)], bin_dir=bin_dir) as plane:
            assert len(plane.pids) == len(BINARIES) and all(_alive(p) for p in plane.pids)
            raise AssertionError("the test failed")
    assert not [p for p in plane.pids if _alive(p)]


def test_a_part_that_exits_is_named_and_the_rest_stopped(local_plane: LocalControlPlane, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, path in local_plane.bins.items():
        (bin_dir / name).symlink_to(path)
    (bin_dir / "kube-scheduler").unlink()
    (bin_dir / "kube-scheduler").write_text("#!/bin/sh\necho 'scheduler: bad flag' >&2\nexit 3\n")
    (bin_dir / "kube-scheduler").chmod(0o755)
    plane = LocalControlPlane(tmp_path / "plane", bin_dir=bin_dir)
    with pytest.raises(ControlPlaneError, match=r"kube-scheduler exited with status 3(.|\n)*scheduler: bad flag"):
        plane.start()
    assert len(plane.pids) == len(BINARIES) and not [p for p in plane.pids if _alive(p)]


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    with pytest.raises(ControlPlaneError, match="not found in bin_dir .*: etcd, kube-apiserver.*scripts/k8s-tools"):
        LocalControlPlane(tmp_path, bin_dir=tmp_path)
