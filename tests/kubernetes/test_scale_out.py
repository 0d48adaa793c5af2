"""KubernetesRuntime scaled out (issue 15) on the local control plane: with backing_services the
stack declares a PostgreSQL StatefulSet and a MinIO Deployment, and the runtime's pods run with
--object-store, take the database URL and bucket credentials from the Secret, and carry neither
the one-node affinity nor the shared volume."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import PersistentVolumeClaim

from tests.kubernetes.k8s_helpers import Target, new_namespace
from wallaroo_pulumi.testing.kube_cluster import KubeCluster
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

SECRETS_KEY = "scale-out-sealing-key-0123456789"
PROGRAM = """
import pulumi
from wallaroo_pulumi import KubernetesRuntime

cfg = pulumi.Config()
rt = KubernetesRuntime("rt", image=cfg.require("image"), admin_token=cfg.require_secret("admin_token"),
                       secrets_key=cfg.require_secret("secrets_key"), namespace=cfg.require("namespace"),
                       replicas=2, cpus=1, memory="1Gi", sidekick_placement="local", backing_services=True)
pulumi.export("url", rt.url)
"""


@pytest.fixture(scope="module")
def stack(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PulumiStack, str]]:
    stack = PulumiStack(tmp_path_factory.mktemp("k8s-scale-out") / "project", env=kube_cluster.env(), timeout_s=600)
    stack.write_program(PROGRAM)
    namespace = new_namespace()
    stack.config_set("admin_token", "scale-out-admin-token-0123456789abcdef", secret=True)
    stack.config_set("secrets_key", SECRETS_KEY, secret=True)
    stack.config_set("image", Target.for_cluster(kube_cluster).image)
    stack.config_set("namespace", namespace)
    yield stack, namespace
    stack.destroy(check=False)


def test_backing_services_and_pods_free_to_spread(stack: tuple[PulumiStack, str], kube_cluster: KubeCluster) -> None:
    pulumi_stack, namespace = stack
    pulumi_stack.up()
    client = kube_cluster.client()
    serving = next(d for d in client.list(Deployment, namespace=namespace) if d.metadata.name.startswith("rt-serve"))
    scheduler = next(d for d in client.list(Deployment, namespace=namespace) if d.metadata.name.startswith("rt-scheduler"))
    assert any(d.metadata.name.startswith("rt-minio") for d in client.list(Deployment, namespace=namespace))
    assert [s.metadata.name for s in client.list(StatefulSet, namespace=namespace) if s.metadata.name.startswith("rt-postgres")]
    for deployment in (serving, scheduler):
        pod = deployment.spec.template.spec
        assert pod.affinity is None  # no one-node affinity: pods go wherever the scheduler puts them
        # each pod's data dir is its own (and /tmp, as every runtime pod's: its root is read-only)
        assert {v.name: v.emptyDir is not None for v in pod.volumes} == {"data": True, "tmp": True}
        container = pod.containers[0]
        assert "--object-store" in container.args and "s3://wallaroo" in container.args
        env = {e.name: e for e in container.env}
        assert {"WALLAROO_DATABASE_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "WALLAROO_SECRETS_KEY"} <= set(env)
        assert env["WALLAROO_DATABASE_URL"].valueFrom.secretKeyRef is not None and env["WALLAROO_DATABASE_URL"].value is None
    claims = [c.metadata.name for c in client.list(PersistentVolumeClaim, namespace=namespace)]
    assert not any(c.startswith("rt-data") for c in claims), claims  # no shared runtime volume
    state = pulumi_stack.run("stack", "export", "--show-secrets=false").stdout
    assert SECRETS_KEY not in state and "postgresql://wallaroo:" not in state
