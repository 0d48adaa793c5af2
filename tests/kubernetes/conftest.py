"""The Kubernetes group: the control plane and the provider plugin are built by the setup phase
(scripts/test-setup, which `make test` runs first); here they are only checked, then one control
plane serves the session (or the cluster named by WALLAROO_TEST_KUBECONFIG: README, "Running on
Kubernetes")."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from wallaroo_pulumi.testing.control_plane import FakeNode
from wallaroo_pulumi.testing.kube_cluster import KubeCluster
from wallaroo_pulumi.testing.pytest_kubernetes import KUBECONFIG_ENV, cluster_session, kube_fake_nodes  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


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
