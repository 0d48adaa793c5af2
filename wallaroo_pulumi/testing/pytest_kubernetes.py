"""pytest fixtures for stacks that deploy to Kubernetes: `kube_cluster`, one per session.

In a `conftest.py`: `pytest_plugins = ["wallaroo_pulumi.testing.pytest_kubernetes"]`. By default
the cluster is a `LocalControlPlane` on loopback with `kube_fake_nodes` (override that fixture for
other nodes); with `WALLAROO_TEST_KUBECONFIG=/path/to/kubeconfig` the same tests run against that
cluster (its current context) instead, and nothing is started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from wallaroo_pulumi.testing.control_plane import DEFAULT_NODES, FakeNode, LocalControlPlane
from wallaroo_pulumi.testing.kube_cluster import KubeCluster

KUBECONFIG_ENV = "WALLAROO_TEST_KUBECONFIG"


def cluster_session(workdir: Path, nodes: Iterable[FakeNode] = DEFAULT_NODES,
                    bin_dir: Path | None = None) -> Iterator[KubeCluster]:
    """Yield the user's cluster if `WALLAROO_TEST_KUBECONFIG` names one, else a local control
    plane in `workdir` (binaries from `bin_dir`, default PATH), stopped (every process) when the
    generator closes."""
    existing = os.environ.get(KUBECONFIG_ENV)
    if existing:
        if not Path(existing).is_file():
            raise FileNotFoundError(f"{KUBECONFIG_ENV}: no kubeconfig at {existing}")
        yield KubeCluster(Path(existing))
        return
    with LocalControlPlane(workdir, nodes=nodes, bin_dir=bin_dir) as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_fake_nodes() -> Iterable[FakeNode]:
    """The kwok nodes of the local control plane (ignored on a real cluster)."""
    return DEFAULT_NODES


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory, kube_fake_nodes: Iterable[FakeNode]) -> Iterator[KubeCluster]:
    """The cluster for this session; pass `kube_cluster.env()` to `pulumi` (it sets KUBECONFIG)."""
    yield from cluster_session(tmp_path_factory.mktemp("control-plane"), kube_fake_nodes)
