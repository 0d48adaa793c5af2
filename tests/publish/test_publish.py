"""`pipelines/publish` against a real distribution registry on loopback with htpasswd auth: the
image is the base's layers (mounted, the same digests) plus one holding the pipeline version and
no credential; edges get bundles whose join token works once; delete removes the tag and the edges."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.publish.conftest import BASE_REPOSITORY
from tests.publish.publish_helpers import SECRET, make_pipeline, post, publish, wait_published
from tests.runtime.conftest import Server
from wallaroo_pulumi.runtime.services.publish.bundle import decode_bundle
from wallaroo_pulumi.runtime.store.oci import ImageRef, OciRegistry
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer


def layer_files(registry: RegistryServer, image: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:
    """The image's manifest, config and last layer's files, read back from the registry."""
    ref = ImageRef.parse(image)
    with OciRegistry(ref.registry, *registry.auth, insecure=True) as client:
        manifest, _ = client.manifest(ref)
        config = json.loads(client.blob(ref.repository, manifest["config"]["digest"]))
        blob = client.blob(ref.repository, manifest["layers"][-1]["digest"])
    files = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member)
            files[member.name] = f.read() if f is not None else b""
    return manifest, config, files


def test_a_version_is_published_as_an_image_on_the_base_layers(centre: Server, registry: RegistryServer,
                                                                base_image: str, tmp_path: Path) -> None:
    version_id, model_id = make_pipeline(centre, tmp_path)
    done = publish(centre, version_id, model_id)

    image = done["pipeline_url"]
    assert image == done["engine_url"] and image.startswith(f"{registry.host}/team/pipelines/edge-double:")
    assert done["pipeline_version_name"] in image and done["pipeline_name"] == "edge-double"
    image_info = post(centre, "/pipelines/get_publish_image", {"id": done["id"]})
    assert image_info["image"] == image and image_info["digest"].startswith("sha256:")
    assert image_info["bytes"] > 0 and image_info["publish_seconds"] > 0
    env = done["engine_config"]["engineAux"]["images"][f"edge-double-model-{model_id}"]["env"]
    assert env == [{"name": "EDGE_TEST_CREDENTIAL", "value": "[secret]"}]

    manifest, config, files = layer_files(registry, image)
    with OciRegistry(registry.host, *registry.auth, insecure=True) as client:
        base_manifest, _ = client.manifest(ImageRef.parse(base_image))
    # the base's layer, the same blob (mounted from its repository), then the pipeline's
    assert [d["digest"] for d in manifest["layers"][:-1]] == [d["digest"] for d in base_manifest["layers"]]
    assert len(manifest["layers"]) == len(base_manifest["layers"]) + 1
    assert config["config"]["Entrypoint"] == ["wallaroo-pulumi"]  # kept from the base
    assert config["config"]["Cmd"][:2] == ["runtime", "edge"] and "/persist" in config["config"]["Volumes"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])
    published = json.loads(files["opt/wallaroo/publish/publish.json"])
    assert (published["pipeline"], published["pipeline_version"]) == ("edge-double", done["pipeline_version_name"])
    [model] = published["models"]
    assert files[f"opt/wallaroo/publish/models/{model['sha']}"] == (tmp_path / "edge-double-model.zip").read_bytes()
    assert published["engine_config"]["sidekicks"]["edge-double-model"]["env"] == {"EDGE_TEST_CREDENTIAL": ""}
    assert all(SECRET.encode() not in content for content in files.values())
    assert SECRET not in json.dumps(done) and SECRET not in centre.log_tail(10**6)
    assert BASE_REPOSITORY in base_image


def test_edges_get_a_bundle_whose_join_token_works_once(centre: Server, tmp_path: Path) -> None:
    version_id, model_id = make_pipeline(centre, tmp_path)
    done = publish(centre, version_id, model_id)
    added = post(centre, "/pipelines/add_edge_to_publish",
                 {"name": "shop-1", "pipeline_publish_id": done["id"], "tags": ["eu"]}, status=201)
    bundle = decode_bundle(added["edge_bundles"]["shop-1"])
    lines = base64.b64decode(added["edge_bundles"]["shop-1"]).decode().splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "export BUNDLE_VERSION", "export CONFIG_CPUS", "export EDGE_NAME", "export OPSCENTER_HOST",
        "export PIPELINE_URL", "export JOIN_TOKEN", "export OCI_REGISTRY"]
    assert (bundle.edge_name, bundle.pipeline_url, bundle.centre_url) == ("shop-1", done["pipeline_url"], centre.url)
    assert bundle.oci_registry == done["pipeline_url"].split("/")[0]

    taken = post(centre, "/pipelines/add_edge_to_publish", {"name": "shop-1", "pipeline_publish_id": done["id"]},
                 status=409)
    assert "already exists" in taken["msg"]
    bad = post(centre, "/pipelines/add_edge_to_publish", {"name": "Shop 1", "pipeline_publish_id": done["id"]},
               status=400)
    assert bad["msg"].startswith("name: must be")

    def join(token: str, status: int) -> dict[str, Any]:
        answer = httpx.post(f"{centre.url}/v1/api/edge/join", json={"name": "shop-1", "join_token": token}, timeout=30)
        assert answer.status_code == status, answer.text
        return answer.json()

    joined = join(bundle.join_token, 200)
    assert joined["edge_key"] and joined["publish_id"] == done["id"]
    again = join(bundle.join_token, 409)
    assert "already used" in again["msg"] and "works once" in again["msg"]
    lost = join(bundle.join_token[::-1], 401)
    assert "belongs to no edge" in lost["msg"]

    [edge] = post(centre, "/pipelines/list_edges_by_publish_id", {"publish_id": done["id"]})["edges"]
    assert (edge["name"], edge["tags"], edge["should_run_publish"]) == ("shop-1", ["eu"], done["id"])
    assert edge["joined_at"] is not None
    listed = post(centre, "/pipelines/list_publishes_for_pipeline", {"pipeline_id": _pipeline_id(centre, "edge-double")})
    assert [p["id"] for p in listed["publishes"]] == [done["id"]] and [e["name"] for e in listed["edges"]] == ["shop-1"]

    post(centre, "/pipelines/remove_edge", {"name": "shop-1"})
    assert post(centre, "/pipelines/list_edges_by_publish_id", {"publish_id": done["id"]})["edges"] == []
    refused = httpx.post(f"{centre.url}/v1/api/edge/ship_logs", content=b"",
                         headers={"Authorization": f"Bearer {joined['edge_key']}", "X-Edge-Segment": "1",
                                  "X-Edge-Dropped": "0"}, timeout=30)
    assert refused.status_code in (400, 401), refused.text


def _pipeline_id(srv: Server, name: str) -> int:
    return post(srv, "/pipelines/get_pipeline_by_name", {"pipeline_name": name, "workspace_id": 1})["pipeline"]["id"]


def test_delete_removes_the_tag_and_the_edges(centre: Server, registry: RegistryServer, tmp_path: Path) -> None:
    version_id, model_id = make_pipeline(centre, tmp_path)
    done = publish(centre, version_id, model_id)
    post(centre, "/pipelines/add_edge_to_publish", {"name": "doomed", "pipeline_publish_id": done["id"]}, status=201)
    ref = ImageRef.parse(done["pipeline_url"])
    assert ref.tag in registry.tags(ref.repository)

    assert post(centre, "/pipelines/delete_publish", {"id": done["id"]}) == {"id": done["id"], "image_deleted": True}
    assert ref.tag not in registry.tags(ref.repository)
    post(centre, "/pipelines/get_publish_status", {"id": done["id"]}, status=404)
    post(centre, "/pipelines/list_edges_by_publish_id", {"publish_id": done["id"]}, status=404)
    assert post(centre, "/pipelines/add_edge_to_publish", {"name": "doomed", "pipeline_publish_id": done["id"]},
                status=404)


def test_a_registry_that_refuses_the_credentials_fails_the_publish_clearly(
        tmp_path: Path, registry: RegistryServer, base_image: str) -> None:
    from tests.publish.conftest import centre_args, centre_env

    env = {**centre_env(registry), "WALLAROO_OCI_PASSWORD": "not-the-password"}
    srv = Server(tmp_path / "wrong", centre_args(registry, base_image), env).start()
    try:
        version_id, model_id = make_pipeline(srv, tmp_path)
        started = post(srv, "/pipelines/publish", {"pipeline_version_id": version_id, "model_config_ids": [model_id]},
                       status=202)
        done = wait_published(srv, started["id"])
        assert done["status"] == "Error" and "refused the credentials" in done["error"], done
        assert "not-the-password" not in srv.log_tail(10**6)
    finally:
        srv.stop()


@pytest.mark.parametrize("body,field", [({"pipeline_version_id": 999}, "pipeline_version_id"),
                                        ({"pipeline_version_id": "x"}, "pipeline_version_id")])
def test_bad_publish_requests_name_the_field(centre: Server, body: dict[str, Any], field: str) -> None:
    answer = httpx.post(f"{centre.url}/v1/api/pipelines/publish", json=body, headers=centre.headers, timeout=30)
    assert answer.status_code in (400, 404) and field in answer.json()["msg"]



@pytest.mark.parametrize("name", ["Shop_A", "-shop", "a" * 64, ""])
def test_an_edge_name_that_is_no_dns_label_is_refused_naming_the_field(centre: Server, name: str) -> None:
    answer = httpx.post(f"{centre.url}/v1/api/pipelines/add_edge_to_publish", json={"name": name, "pipeline_publish_id": 1},
                        headers=centre.headers, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "name" in answer.json()["msg"] and "1-63 lowercase letters" in answer.json()["msg"], answer.json()

def test_a_log_segment_over_the_request_limit_is_refused(make_server: Callable[..., Server]) -> None:
    srv = make_server("small", "--max-request-bytes", "1Mi")
    answer = httpx.post(f"{srv.url}/v1/api/edge/ship_logs", content=b"\0" * (2 * 2**20), timeout=30,
                        headers={"Authorization": "Bearer some-edge-key", "X-Edge-Segment": "1", "X-Edge-Dropped": "0"})
    assert answer.status_code == 413 and "max_request_bytes" in answer.json()["msg"], answer.text
