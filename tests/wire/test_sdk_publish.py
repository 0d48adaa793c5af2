"""The Wallaroo SDK's publish flow, unchanged, against the runtime and a real registry on loopback:
`Pipeline.publish()` (202, then get_publish_status polled), `PipelinePublish.add_edge()` (201, the
EDGE_BUNDLE), `list_edges()`, `Pipeline.publishes()`, `Client.list_publishes()`, `publish(replaces=...)`
(the replaced publish's edges get their upgrade bundles), `remove_edge()`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.publish.conftest import base_image, centre_args, centre_env, registry  # noqa: F401 - fixtures
from tests.runtime.conftest import DOUBLE, Server, make_model
from tests.wire.conftest import run_sdk
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer


@pytest.fixture
def publishing_server(tmp_path: Path, registry: RegistryServer, base_image: str) -> Iterator[Server]:  # noqa: F811
    srv = Server(tmp_path / "data", centre_args(registry, base_image), centre_env(registry)).start()
    yield srv
    srv.stop()


@pytest.mark.timeout(900)
def test_the_sdk_publish_flow_runs_unchanged(sdk_python: str, publishing_server: Server, registry: RegistryServer,  # noqa: F811
                                             tmp_path: Path) -> None:
    model = make_model(tmp_path, "sdk-edge-model", DOUBLE)
    [out] = run_sdk(sdk_python, "publish_flow.py", publishing_server.url, publishing_server.token, str(tmp_path),
                    str(model), server=publishing_server)

    pub = out["publish"]
    assert pub["status"] == "Published" and pub["pipeline_name"] == "sdk-edge"
    assert pub["pipeline_url"] == pub["engine_url"]
    assert pub["pipeline_url"].startswith(f"{registry.host}/team/pipelines/sdk-edge:{pub['version']}-")
    assert [line.split("=", 1)[0] for line in out["bundle_lines"]] == [
        "export BUNDLE_VERSION", "export CONFIG_CPUS", "export EDGE_NAME", "export OPSCENTER_HOST",
        "export PIPELINE_URL", "export JOIN_TOKEN", "export OCI_REGISTRY"]
    assert "export EDGE_NAME=sdk-edge-1" in out["bundle_lines"]
    assert f"export PIPELINE_URL={pub['pipeline_url']}" in out["bundle_lines"]
    assert out["edges"] == [{"name": "sdk-edge-1", "tags": ["store"], "publish": pub["id"]}]
    assert out["pipeline_edges"] == ["sdk-edge-1"]
    assert out["publishes"] == [pub["id"]] and out["client_publishes"] == [pub["id"]]

    upgrade = out["upgrade"]
    assert upgrade["id"] != pub["id"]
    assert [(r["id"], r["pipeline_name"]) for r in upgrade["replaces"]] == [(pub["id"], "sdk-edge")]
    assert upgrade["bundles"] == ["sdk-edge-1"]  # the replaced publish's edge, with its upgrade bundle
    assert out["edges_after_upgrade"] == {"old": [], "new": ["sdk-edge-1"]}
    # list_edges() on a publish object that carries bundles (add_edge's, publish(replaces=)'s) writes each
    # bundle into the chart's values: it needs the publish's `helm`
    assert out["list_edges_with_bundles"] == {"upgrade": ["sdk-edge-1"], "add_edge": ["sdk-edge-1"]}
    helm = out["helm"]["publish"]
    assert helm["chart"] == f"{registry.host}/team/charts/sdk-edge" and helm["values"] == {}
    assert helm["reference"].startswith(helm["chart"] + "@sha256:") and helm["version"]
    assert out["helm"]["install"]  # the SDK's `helm upgrade` command names the chart as oci://… with the bundle
    assert out["edges_after_remove"] == []
