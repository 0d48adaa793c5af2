"""A rollout to edge boxes: one stack declares the centre (a runtime that publishes to a registry:
a local process, or with `centre_image` a KubernetesRuntime), the pipeline, its publish and the
edges; a version bump upgrades them all in one `up`.

Config:
  data_dir                    where a local centre keeps its data
  registry                    HOST[:PORT]/PREFIX the centre publishes to
  base_image                  the runtime image in a registry (scripts/runtime-image, then push it)
  registry_username           registry login
  registry_password  secret   registry password
  registry_insecure           true: plain HTTP (a loopback registry)
  model_path                  the model folder (default: model/ beside this file); a new one is a new version
  edges                       comma-separated edge names (default shop-1,shop-2)
  centre_image                the runtime image the cluster pulls: the centre is a KubernetesRuntime on the
                              current kubeconfig's cluster (else a LocalRuntime); with it:
  public_url                  where edges (and this stack's resources) reach it: its Ingress or LoadBalancer
  admin_token        secret   the centre's admin token
  namespace, centre_cpus, centre_memory, storage_size   (defaults: wallaroo, 2, 4Gi, 20Gi)
  step_cpus                   the pipeline step's CPU on the centre (default 1; a version bump runs two a while)
  kubernetes                  true: also run the published image as a site on the current kubeconfig's cluster
                              (not run by the test suite)
"""

import hashlib
from pathlib import Path

import pulumi
import pyarrow as pa

from wallaroo_pulumi import (
    DeploymentConfigBuilder,
    KubernetesRuntime,
    LocalRuntime,
    WallarooEdge,
    WallarooModel,
    WallarooPipeline,
    WallarooPublish,
)

cfg = pulumi.Config()
registry = dict(publish_registry=cfg.require("registry"), publish_base_image=cfg.require("base_image"),
                publish_username=cfg.get("registry_username"), publish_password=cfg.get_secret("registry_password"),
                publish_insecure=cfg.get_bool("registry_insecure") or False)
if cfg.get("centre_image"):
    centre = KubernetesRuntime("centre", image=cfg.require("centre_image"), admin_token=cfg.require_secret("admin_token"),
                               public_url=cfg.require("public_url"), namespace=cfg.get("namespace") or "wallaroo",
                               cpus=cfg.get_float("centre_cpus") or 2, memory=cfg.get("centre_memory") or "4Gi",
                               storage_size=cfg.get("storage_size") or "20Gi", **registry)
else:
    centre = LocalRuntime("centre", data_dir=cfg.get("data_dir") or ".state/edge-rollout/centre", **registry)
conn = centre.connection

model = WallarooModel("scorer", path=cfg.get("model_path") or str(Path(__file__).parent / "model"),
                      input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]),
                      connection=conn)
step_cpus = cfg.get_float("step_cpus")  # the step's CPU on the centre (default 1)
deployment = DeploymentConfigBuilder().sidekick_cpus(model, step_cpus).build() if step_cpus else None
pipeline = WallarooPipeline("rollout", steps=[model], deployment=deployment, connection=conn)
release = WallarooPublish("rollout-release", pipeline=pipeline, connection=conn)
names = (cfg.get("edges") or "shop-1,shop-2").split(",")
edges = {name: WallarooEdge(name, publish=release, tags=["shop"], connection=conn) for name in names}

if cfg.get_bool("kubernetes"):
    import pulumi_kubernetes as k8s

    site = WallarooEdge("k8s-site", publish=release, connection=conn)
    secret = k8s.core.v1.Secret("k8s-site-bundle", string_data={"EDGE_BUNDLE": site.bundle})
    claim = k8s.core.v1.PersistentVolumeClaim("k8s-site", spec={
        "access_modes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}})
    k8s.apps.v1.Deployment("k8s-site", spec={
        "replicas": 1, "strategy": {"type": "Recreate"},  # one box: one /persist, one edge key
        "selector": {"match_labels": {"app": "k8s-site"}},
        "template": {
            "metadata": {"labels": {"app": "k8s-site"},  # a new bundle rolls the pod
                         "annotations": {"bundle": site.bundle.apply(lambda b: hashlib.sha256(b.encode()).hexdigest()[:12])}},
            "spec": {"security_context": {"fs_group": 10001},
                     "containers": [{"name": "edge", "image": release.image,
                                     "env_from": [{"secret_ref": {"name": secret.metadata.name}}],
                                     "ports": [{"container_port": 8080}],
                                     "volume_mounts": [{"name": "persist", "mount_path": "/persist"}]}],
                     "volumes": [{"name": "persist", "persistent_volume_claim": {"claim_name": claim.metadata.name}}]}}})

pulumi.export("image", release.image)
pulumi.export("token", centre.token)
pulumi.export("url", centre.connection.url)
for name, edge in edges.items():
    pulumi.export(f"{name}_bundle", edge.bundle)
