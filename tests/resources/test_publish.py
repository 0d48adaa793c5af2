"""WallarooPublish and WallarooEdge through the real engine, against a runtime that publishes to a real
registry on loopback: create (the image's tag in the registry, the bundles secret outputs), refresh,
a version bump that upgrades the publish in place (a new image replacing the old, the old tag gone)
and gives both edges their upgrade bundles, import, bad input at preview, destroy (tag and edges gone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.publish.conftest import base_image, publishing_centre, registry  # noqa: F401 - fixtures
from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model
from wallaroo_pulumi.client import NotFoundError, WallarooClient
from wallaroo_pulumi.runtime.services.publish.bundle import decode_bundle
from wallaroo_pulumi.runtime.store.oci import ImageRef
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, failure_text, plaintext_in_state, write_model

PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import WallarooEdge, WallarooModel, WallarooPipeline, WallarooPublish

cfg = pulumi.Config()
model = WallarooModel("edge-model", path=cfg.require("path"), input_schema=pa.schema([("x", pa.float64())]),
                      output_schema=pa.schema([("y", pa.float64())]))
pipeline = WallarooPipeline("edge-pipe", steps=[model], deploy_timeout_s=60)
publish = WallarooPublish("release", pipeline=pipeline)
edges = [WallarooEdge(name, publish=publish, name=cfg.get(f"{name}_name") or name, tags=["store"])
         for name in ("shop-a", "shop-b")]
for key in ("publish_id", "image", "digest", "image_bytes", "publish_seconds", "pipeline_version"):
    pulumi.export(key, getattr(publish, key))
for edge in edges:
    pulumi.export(f"{edge._name}_bundle", edge.bundle)
    pulumi.export(f"{edge._name}_id", edge.edge_id)
"""

ADOPT = """
import pulumi
from wallaroo_pulumi import WallarooEdge, WallarooPublish

cfg = pulumi.Config()
publish = WallarooPublish("adopted", pipeline_version_pk_id=cfg.require_int("version_id"),
                          opts=pulumi.ResourceOptions(import_=cfg.require("publish_id")))
edge = WallarooEdge("adopted-edge", publish=publish, name="door", opts=pulumi.ResourceOptions(import_=cfg.require("edge_id")))
pulumi.export("image", publish.image)
pulumi.export("edge_image", edge.image)
"""


@pytest.fixture(scope="module")
def runtime(publishing_centre: Server) -> Server:  # noqa: F811
    return publishing_centre


def tag_exists(registry: RegistryServer, image: str) -> bool:  # noqa: F811
    ref = ImageRef.parse(image)
    return ref.tag in registry.tags(ref.repository)


def test_publish_and_edges_lifecycle(stack: PulumiStack, api: WallarooClient, registry: RegistryServer,  # noqa: F811
                                     tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("path", str(write_model(tmp_path / "v1", factor=2.0)))
    planned = stack.preview()
    assert planned.ops("wallaroo:Publish") == {"release": "create"}
    assert planned.ops("wallaroo:Edge") == {"shop-a": "create", "shop-b": "create"}

    stack.up()
    out = stack.outputs(show_secrets=True)
    assert tag_exists(registry, out["image"]) and out["image_bytes"] > 0 and out["digest"].startswith("sha256:")
    for name in ("shop-a", "shop-b"):
        bundle = decode_bundle(out[f"{name}_bundle"])
        assert (bundle.edge_name, bundle.pipeline_url) == (name, out["image"])
    assert stack.outputs()["shop-a_bundle"] == "[secret]"
    assert plaintext_in_state(stack, out["shop-a_bundle"], out["shop-b_bundle"]) == []
    assert sorted(e["name"] for e in api.list_edges(out["publish_id"])) == ["shop-a", "shop-b"]  # created at once
    assert stack.refresh().change_summary.get("update") is None
    assert changed(stack.preview()) == {}

    # a new model version: a new pipeline version, published in place replacing the old; both edges move
    stack.config_set("path", str(write_model(tmp_path / "v2", factor=3.0)))
    plan = changed(stack.preview())
    assert plan.get("release") == "update" and plan.get("shop-a") == "update" and plan.get("shop-b") == "update"
    stack.up()
    new = stack.outputs(show_secrets=True)
    assert new["publish_id"] != out["publish_id"] and new["image"] != out["image"]
    assert new["pipeline_version"] != out["pipeline_version"]
    assert tag_exists(registry, new["image"]) and not tag_exists(registry, out["image"])  # the old tag went
    for name in ("shop-a", "shop-b"):
        upgraded = decode_bundle(new[f"{name}_bundle"])
        assert upgraded.pipeline_url == new["image"] and upgraded.join_token != decode_bundle(out[f"{name}_bundle"]).join_token
        assert new[f"{name}_id"] == out[f"{name}_id"]  # the same edge, moved
    assert sorted(e["name"] for e in api.list_edges(new["publish_id"])) == ["shop-a", "shop-b"]
    with pytest.raises(NotFoundError):
        api.list_edges(out["publish_id"])
    assert changed(stack.preview()) == {}

    # a renamed edge replaces it
    stack.config_set("shop-b_name", "shop-c")
    assert changed(stack.preview()).get("shop-b") == "replace"
    stack.up()
    assert sorted(e["name"] for e in api.list_edges(new["publish_id"])) == ["shop-a", "shop-c"]

    stack.destroy()
    assert not tag_exists(registry, new["image"])
    with pytest.raises(NotFoundError):
        api.list_edges(new["publish_id"])


def test_import_adopts_a_publish_and_an_edge_and_bad_input_fails_at_preview(
        stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    mv = api.upload_model("adopt-model", make_model(tmp_path, "adopt-model", DOUBLE), X_SCHEMA, Y_SCHEMA)
    created = api.create_pipeline("adopt-pipe", steps=[mv])
    publish = api.publish(created.pipeline_version_pk_id)
    api.wait_for_publish(publish["id"], 120)
    added = api.add_edge(publish["id"], "door")
    edge_id = next(e["id"] for e in api.list_edges(publish["id"]))
    stack.write_program(ADOPT)
    stack.config_set("version_id", str(created.pipeline_version_pk_id))
    stack.config_set("publish_id", str(publish["id"]))
    stack.config_set("edge_id", edge_id)
    result = stack.up()
    assert result.ops("wallaroo:Publish") == {"adopted": "import"} and result.ops("wallaroo:Edge") == {"adopted-edge": "import"}
    assert stack.outputs()["image"] == stack.outputs()["edge_image"] == added["pipeline_url"]
    assert changed(stack.preview()) == {}
    stack.destroy()
    with pytest.raises(NotFoundError):  # destroyed: the publish, its tag and its edge are gone
        api.publish_status(publish["id"])

    stack.write_program(PROGRAM.replace('name=cfg.get(f"{name}_name") or name', 'name="Not An Edge Name"'))
    stack.config_set("path", str(write_model(tmp_path / "bad", factor=2.0)))
    text = failure_text(stack.preview(check=False))
    assert "name" in text and "lowercase letters" in text, text

