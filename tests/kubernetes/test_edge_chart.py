"""A publish's Helm chart (D55) installed by the real helm on the local control plane (kwok nodes: the
API server validates and stores every object, no container runs): the edge's Deployment becomes
ready with its /persist claim bound and its bundle in a Secret, an upgrade with another bundle (the
edge moved to a new publish) rolls the pod, and uninstall removes what the chart made."""

from __future__ import annotations

import base64
import secrets
import subprocess
from pathlib import Path

from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, PersistentVolumeClaim, Secret

from tests.publish.conftest import helm  # noqa: F401 - the fixture
from wallaroo_pulumi.deployment import DeploymentConfig, SidekickConfig
from wallaroo_pulumi.runtime.services.publish.chart import build_chart
from wallaroo_pulumi.runtime.store.oci import ImageRef
from wallaroo_pulumi.testing.kube_cluster import KubeCluster

DIGEST = "sha256:" + "ab" * 32


def run_helm(helm_bin: str, cluster: KubeCluster, home: Path, *args: str) -> str:  # noqa: F811
    env = {**cluster.env(), "HOME": str(home), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([helm_bin, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_chart_installs_upgrades_and_uninstalls_on_a_cluster(kube_cluster: KubeCluster, helm: str,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    image = ImageRef("registry.example.com", "team/pipelines/edge-double", "v1-7")
    config = DeploymentConfig(cpus=0.5, memory="256Mi",
                              sidekicks={"edge-double-model": SidekickConfig(cpus=0.25, memory="256Mi",
                                                                             env={"OPENAI_API_KEY": ""})})
    chart = build_chart("edge-double", "0f0e-version", 7, image, DIGEST, "team/charts/edge-double", config)
    tgz = tmp_path / "edge-double-0.1.7.tgz"
    tgz.write_bytes(chart.data)
    namespace = f"edge-chart-{secrets.token_hex(3)}"
    common = ["--namespace", namespace, "--wait", "--timeout", "180s"]

    run_helm(helm, kube_cluster, tmp_path, "install", "shop-7", str(tgz), "--create-namespace", *common,
             "--set", "edgeBundle=bundle-one", "--set", "env.OPENAI_API_KEY=sk-edge",
             "--set", "ociRegistry.username=puller", "--set", "ociRegistry.password=pull-pass")
    client = kube_cluster.client()
    deployment = client.get(Deployment, "shop-7", namespace=namespace)
    assert deployment.status.readyReplicas == 1
    pod = deployment.spec.template.spec
    assert pod.containers[0].image == f"registry.example.com/team/pipelines/edge-double@{DIGEST}"
    assert pod.containers[0].resources.limits == {"cpu": "750m", "memory": "512Mi"}  # the engine and its step
    bundle = client.get(Secret, "shop-7-bundle", namespace=namespace)
    assert {k: base64.b64decode(v).decode() for k, v in bundle.data.items()} == {
        "EDGE_BUNDLE": "bundle-one", "OPENAI_API_KEY": "sk-edge"}
    assert client.get(PersistentVolumeClaim, "shop-7-persist", namespace=namespace).status.phase == "Bound"
    pull = client.get(Secret, "shop-7-registry", namespace=namespace)
    assert pull.type == "kubernetes.io/dockerconfigjson"

    checksum = deployment.spec.template.metadata.annotations["checksum/bundle"]
    run_helm(helm, kube_cluster, tmp_path, "upgrade", "shop-7", str(tgz), *common, "--reuse-values",
             "--set", "edgeBundle=bundle-two")
    upgraded = client.get(Deployment, "shop-7", namespace=namespace)
    assert upgraded.spec.template.metadata.annotations["checksum/bundle"] != checksum  # the pod rolls
    assert upgraded.status.readyReplicas == 1 and upgraded.metadata.generation > deployment.metadata.generation
    assert base64.b64decode(client.get(Secret, "shop-7-bundle", namespace=namespace).data["EDGE_BUNDLE"]) == b"bundle-two"

    run_helm(helm, kube_cluster, tmp_path, "uninstall", "shop-7", "--namespace", namespace, "--wait")
    assert [d.metadata.name for d in client.list(Deployment, namespace=namespace)] == []
    assert [s.metadata.name for s in client.list(Secret, namespace=namespace) if s.metadata.name.startswith("shop-7")] == []
    client.delete(Namespace, namespace)
