"""Each publish's Helm chart, read by the real `helm` from the loopback registry (with its auth): it
pulls as an OCI chart, lints, and renders a Deployment of the published image (pinned by its digest)
whose bundle and credentials come from Secrets; the publish's `helm` field names it; delete removes
its tag with the image's."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.publish.publish_helpers import SECRET, make_pipeline, post, publish
from tests.runtime.conftest import Server
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer


def run_helm(helm: str, home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_DATA_HOME": str(home / "data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([helm, *args], capture_output=True, text=True, env=env, timeout=120)
    assert (done.returncode == 0) == ok, f"helm {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def pull(helm: str, tmp: Path, registry: RegistryServer, chart: str, version: str,
         ok: bool = True) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp / "pulled"
    out.mkdir(parents=True, exist_ok=True)
    done = run_helm(helm, tmp, "pull", f"oci://{chart}", "--version", version, "--plain-http", "--username",
                    registry.username, "--password", registry.password, "--destination", str(out), ok=ok)
    return out / f"{chart.rsplit('/', 1)[-1]}-{version}.tgz", done


def by_kind(rendered: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_a_publish_pushes_a_chart_helm_pulls_lints_and_renders(centre: Server, registry: RegistryServer, helm: str,
                                                               tmp_path: Path) -> None:
    version_id, model_id = make_pipeline(centre, tmp_path)
    done = publish(centre, version_id, model_id)
    info = post(centre, "/pipelines/get_publish_image", {"id": done["id"]})
    chart = done["helm"]
    assert chart["chart"] == f"{registry.host}/team/charts/edge-double"
    assert chart["version"] == info["chart_version"] and chart["values"] == {}
    assert chart["reference"] == f"{chart['chart']}@{info['chart_digest']}" and info["chart_seconds"] > 0

    tgz, _ = pull(helm, tmp_path, registry, chart["chart"], chart["version"])
    print(f"chart {chart['chart']}:{chart['version']}: {tgz.stat().st_size} bytes, built and pushed in "
          f"{info['chart_seconds'] * 1000:.0f} ms (the publish: {info['publish_seconds']:.2f} s)")
    with tarfile.open(tgz) as tar:
        names = sorted(tar.getnames())
        files = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    assert "edge-double/Chart.yaml" in names and "edge-double/templates/deployment.yaml" in names
    assert SECRET.encode() not in files  # the step's credential stays at the centre
    meta = yaml.safe_load(subprocess.run(["tar", "-xzOf", str(tgz), "edge-double/Chart.yaml"], capture_output=True,
                                         check=True).stdout)
    assert (meta["name"], meta["version"], meta["appVersion"]) == ("edge-double", chart["version"],
                                                                  done["pipeline_version_name"])
    lint = run_helm(helm, tmp_path, "lint", str(tgz))
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout

    rendered = by_kind(run_helm(
        helm, tmp_path, "template", "store-7", str(tgz), "--set", "edgeBundle=the-bundle", "--set",
        "ociRegistry.username=puller", "--set", "ociRegistry.password=pull-pass", "--set",
        "env.EDGE_TEST_CREDENTIAL=3").stdout)
    pod = rendered["Deployment/store-7"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    repository = done["pipeline_url"].rsplit(":", 1)[0]
    assert container["image"] == f"{repository}@{info['digest']}"  # the image the publish pushed, by digest
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {p: container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {
        "startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/health"}
    [env_from] = container["envFrom"]
    bundle = rendered[f"Secret/{env_from['secretRef']['name']}"]
    assert bundle["stringData"] == {"EDGE_BUNDLE": "the-bundle", "EDGE_TEST_CREDENTIAL": "3"}
    [pull_secret] = pod["imagePullSecrets"]
    auth = rendered[f"Secret/{pull_secret['name']}"]
    assert auth["type"] == "kubernetes.io/dockerconfigjson"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claim = {v["name"]: v for v in pod["volumes"]}[mounts["/persist"]]["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in rendered
    assert rendered["Service/store-7"]["spec"]["ports"][0]["port"] == 8080

    missing = run_helm(helm, tmp_path, "template", "store-7", str(tgz), ok=False)
    assert "edgeBundle: set it to the EDGE_BUNDLE add_edge returned" in missing.stderr


def test_deleting_a_publish_removes_its_chart_tag(centre: Server, registry: RegistryServer, helm: str,
                                                  tmp_path: Path) -> None:
    version_id, model_id = make_pipeline(centre, tmp_path)
    done = publish(centre, version_id, model_id)
    chart = done["helm"]
    pull(helm, tmp_path, registry, chart["chart"], chart["version"])
    answer = httpx.post(f"{centre.url}/v1/api/pipelines/delete_publish", json={"id": done["id"]},
                        headers=centre.headers, timeout=60)
    assert answer.status_code == 200, answer.text
    _, gone = pull(helm, tmp_path / "again", registry, chart["chart"], chart["version"], ok=False)
    assert "not found" in gone.stderr
