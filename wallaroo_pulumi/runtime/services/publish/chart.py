"""A publish's Helm chart: Chart.yaml and values.yaml written for the published image, the templates
in `chart_templates/` (a Deployment and Service of the image, its bundle and credentials from a
Secret, a volume for /persist), packaged as Helm packages it and pushed to the registry as Helm
pushes an OCI chart (its config and content media types), so `helm pull oci://…` and
`helm install` read it."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wallaroo_pulumi.deployment import DeploymentConfig, parse_memory_quantity
from wallaroo_pulumi.runtime.store.oci import HELM_CHART_LAYER, HELM_CONFIG, OCI_MANIFEST, ImageRef, OciRegistry

TEMPLATES = Path(__file__).with_name("chart_templates")
STARTUP_SECONDS = 600  # a step's requirements are installed at the first start (D49)


@dataclass
class Chart:
    """A packaged chart: `chart` is where it lives (registry/repository, no scheme), `version` its tag."""

    chart: str
    version: str
    data: bytes
    metadata: dict[str, Any]


def chart_version(publish_id: int) -> str:
    """SemVer, growing with each publish of this centre: the chart's version and its OCI tag."""
    return f"0.1.{publish_id}"


def _resources(config: DeploymentConfig) -> dict[str, Any]:
    """The pod's share: the engine's and every step's cpus and memory together (the edge runs them all)."""
    cpus = config.cpus + sum(s.cpus for s in config.sidekicks.values())
    memory = parse_memory_quantity(config.memory) + sum(
        parse_memory_quantity(s.memory) for s in config.sidekicks.values() if s.memory)
    amount = {"cpu": f"{round(cpus * 1000)}m", "memory": f"{-(-memory // 2**20)}Mi"}
    return {"requests": dict(amount), "limits": dict(amount)}


def build_chart(name: str, pipeline_version: str, publish_id: int, image: ImageRef, digest: str,
                chart_repository: str, config: DeploymentConfig) -> Chart:
    """The chart of one publish, as a .tgz in memory (a few KiB)."""
    version = chart_version(publish_id)
    metadata = {"apiVersion": "v2", "name": name, "version": version, "appVersion": pipeline_version,
                "type": "application",
                "description": f"Wallaroo pipeline {name}, version {pipeline_version}, published as an edge image",
                "annotations": {"wallaroo.publish_id": str(publish_id)}}
    env_names = sorted({n for s in config.sidekicks.values() for n in s.env})
    values = {
        "image": {"repository": f"{image.registry}/{image.repository}", "tag": image.tag, "digest": digest,
                  "pullPolicy": "IfNotPresent"},
        "ociRegistry": {"registry": image.registry, "username": "", "password": ""},
        "edgeBundle": "",
        "env": {n: "" for n in env_names},
        "persistence": {"enabled": True, "size": "10Gi", "storageClass": ""},
        "service": {"type": "ClusterIP", "port": 8080},
        "resources": _resources(config),
        "startupSeconds": STARTUP_SECONDS,
        "nodeSelector": {},
        "tolerations": [],
    }
    files = {"Chart.yaml": yaml.safe_dump(metadata, sort_keys=False).encode(),
             "values.yaml": (b"# edgeBundle, ociRegistry.username/password and each env value are given at install\n"
                             + yaml.safe_dump(values, sort_keys=False).encode())}
    files.update({f"templates/{p.name}": p.read_bytes() for p in sorted(TEMPLATES.iterdir()) if p.is_file()})
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return Chart(f"{image.registry}/{chart_repository}", version, raw.getvalue(), metadata)


def push_chart(registry: OciRegistry, chart: Chart) -> str:
    """The chart as Helm pushes one: config = Chart.yaml as JSON, one content layer; its manifest's digest."""
    ref = ImageRef.parse(f"{chart.chart}:{chart.version}", "chart")
    config = json.dumps(chart.metadata, separators=(",", ":")).encode()
    config_digest = registry.push_bytes(ref.repository, config)
    layer_digest = registry.push_bytes(ref.repository, chart.data)
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": HELM_CHART_LAYER, "digest": layer_digest, "size": len(chart.data)}],
        "annotations": {"org.opencontainers.image.title": chart.metadata["name"],
                        "org.opencontainers.image.version": chart.version,
                        "org.opencontainers.image.description": chart.metadata["description"],
                        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    return registry.put_manifest(ref.repository, chart.version, manifest)
