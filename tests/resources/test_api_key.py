"""WallarooApiKey (and a pipeline's own inference key) through the real engine: create, the key as
a secret output that works for inference only, an in-place update of its limits, refresh, a role
change that replaces (and revokes) it, import, bad input at preview, destroy revoking it."""

from __future__ import annotations

from pathlib import Path

import httpx

from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, failure_text, plaintext_in_state, write_model

PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import WallarooApiKey, WallarooModel, WallarooPipeline

cfg = pulumi.Config()
model = WallarooModel("keyed-model", path=cfg.require("path"), python_version="3.9",
                      input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]))
pipeline = WallarooPipeline("keyed", steps=[model], deploy_timeout_s=60, inference_key=True)
role = cfg.get("role") or "inference"
key = WallarooApiKey("web", role=role, pipelines=[pipeline] if role == "inference" else None,
                     workspace_id=1 if role == "deployer" else None, requests_per_minute=cfg.get_int("rpm"))
pulumi.export("key", key.key)
pulumi.export("key_id", key.key_id)
pulumi.export("status", key.status)
pulumi.export("inference_url", pipeline.inference_url)
pulumi.export("pipeline_key", pipeline.inference_key)
pulumi.export("pipeline_key_id", pipeline.inference_key_id)
"""

ADOPT = """
import pulumi
from wallaroo_pulumi import WallarooApiKey

cfg = pulumi.Config()
key = WallarooApiKey("adopted", role=cfg.get("role") or "inference", pipelines=["elsewhere"], tokens_per_day=500,
                     opts=pulumi.ResourceOptions(import_=cfg.get("adopt_id")))
pulumi.export("key_id", key.key_id)
"""


def call(url: str, token: str, path: str = "", json: object = None) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    if path:
        return httpx.post(url + path, json=json or {}, headers=headers, timeout=30).status_code
    return httpx.post(url, json=[{"x": 1.0}], timeout=30,
                      headers={**headers, "Content-Type": "application/json; format=pandas-records"}).status_code


def test_api_key_lifecycle(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("path", str(write_model(tmp_path / "model")))
    assert stack.preview().ops("wallaroo:ApiKey") == {"web": "create"}

    stack.up()
    out = stack.outputs(show_secrets=True)
    base, url = api.url, out["inference_url"]
    assert out["status"] == "active" and out["key"].startswith("wlr_") and out["pipeline_key"].startswith("wlr_")
    for token in (out["key"], out["pipeline_key"]):  # both infer on the pipeline, and do nothing else
        assert call(url, token) == 200
        assert call(base, token, "/v1/api/pipelines/list_pipelines", {"workspace_id": 1}) == 403
    assert stack.outputs()["key"] == "[secret]"
    assert plaintext_in_state(stack, out["key"], out["pipeline_key"], api._transport._token) == []
    web = api.get_key(out["key_id"])
    assert (web.name, web.role, web.pipelines) == ("web", "inference", ["keyed"])
    assert stack.preview().change_summary == {"same": 4}

    # limits change in place: same key, same secret, now limited
    stack.config_set("rpm", "2")
    assert changed(stack.preview()) == {"web": "update"}
    stack.up()
    assert stack.outputs(show_secrets=True)["key"] == out["key"] and stack.outputs()["key_id"] == out["key_id"]
    assert [call(url, out["key"]) for _ in range(3)] == [200, 200, 429]
    assert stack.refresh().change_summary.get("update") is None
    assert stack.preview().change_summary == {"same": 4}

    # a new role replaces the key: the old one is revoked
    stack.config_set("role", "deployer")
    assert changed(stack.preview()) == {"web": "replace"}
    stack.up()
    replaced = stack.outputs(show_secrets=True)
    assert replaced["key_id"] != out["key_id"] and call(url, out["key"]) == 401
    assert call(base, replaced["key"], "/v1/api/pipelines/list_pipelines", {"workspace_id": 1}) == 200
    assert plaintext_in_state(stack, replaced["key"]) == []

    stack.destroy()
    for token in (replaced["key"], out["pipeline_key"]):
        assert call(url.replace("keyed", "x"), token) == 401
    assert {api.get_key(replaced["key_id"]).status, api.get_key(out["pipeline_key_id"]).status} == {"revoked"}


def test_import_adopts_a_key_and_bad_input_fails_at_preview(stack: PulumiStack, api: WallarooClient) -> None:
    existing = api.create_key("adopted", "inference", pipelines=["elsewhere"], tokens_per_day=500)
    stack.write_program(ADOPT)
    stack.config_set("adopt_id", str(existing.key.id))
    result = stack.up()
    assert result.ops("wallaroo:ApiKey") == {"adopted": "import"}
    assert stack.outputs()["key_id"] == existing.key.id
    assert len([k for k in api.list_keys() if k.name == "adopted"]) == 1  # adopted, not created again
    assert stack.preview().change_summary == {"same": 2}
    stack.destroy()
    assert api.get_key(existing.key.id).status == "revoked"

    stack.run("config", "rm", "adopt_id")
    stack.config_set("role", "deployer")  # no workspace_id: the key would reach nothing
    text = failure_text(stack.preview(check=False))
    assert "role" in text and "a deployer key needs workspace_id" in text, text
