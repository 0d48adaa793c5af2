"""WallarooPipeline's `guardrails` through the real engine: created with policies, changed in place
(no new pipeline version, no redeploy: the same deployment answers), refreshed from the runtime,
imported, removed; bad policies fail at preview naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.runtime.conftest import Server
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, failure_text

PROGRAM = """
import json, pulumi, pyarrow as pa
from wallaroo_pulumi import WallarooModel, WallarooPipeline
from wallaroo_pulumi.guardrails import Guardrails

cfg = pulumi.Config()
schema = dict(input_schema=pa.schema([("text", pa.string())]), output_schema=pa.schema([("reply", pa.string())]))
model = WallarooModel("echo", path=cfg.require("path"), **schema)
policies = cfg.get("policies")
guardrails = Guardrails(policies=json.loads(policies)) if policies and cfg.get("typed") else (
    {"policies": json.loads(policies)} if policies else None)
pipeline = WallarooPipeline("guarded", steps=[model], guardrails=guardrails, deploy_timeout_s=60,
                            opts=pulumi.ResourceOptions(import_=cfg.get("adopt_id")))
for key in ("pipeline_id", "version", "deployment_id"):
    pulumi.export(key, getattr(pipeline, key))
"""
PII = [{"kind": "pii", "name": "no-pii", "action": "mask", "on": ["request"]}]
BLOCK = [{"kind": "keywords", "name": "no-acme", "blocked": ["acme"]}]


def echo_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(byop_source('return {"reply": np.array(["echo: " + t for t in input_data["text"]])}'))
    return folder


def infer(runtime: Server, text: str) -> httpx.Response:
    return httpx.post(f"{runtime.url}/infer/guarded", content=json.dumps([{"text": text}]), timeout=60,
                      headers={**runtime.headers, "Content-Type": "application/json; format=pandas-records"})


def test_guardrails_are_an_in_place_update(stack: PulumiStack, api: WallarooClient, runtime: Server, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("path", str(echo_model(tmp_path / "echo")))
    stack.config_set("policies", json.dumps(PII))
    stack.up()
    first = stack.outputs()
    assert infer(runtime, "mail jo@example.com").json()[0]["out"]["reply"] == "echo: mail <EMAIL_ADDRESS>"
    assert api.get_guardrails("guarded").policies[0].name == "no-pii"
    assert stack.preview().change_summary == {"same": 3}
    stack.config_set("typed", "1")  # the same policies as a Guardrails object: no change
    assert stack.preview().change_summary == {"same": 3}

    stack.config_set("policies", json.dumps(BLOCK))
    assert changed(stack.preview()) == {"guarded": "update"}
    stack.up()
    assert stack.outputs() == first  # same version, same deployment: nothing was redeployed
    assert infer(runtime, "mail jo@example.com").json()[0]["out"]["reply"] == "echo: mail jo@example.com"
    refused = infer(runtime, "buy from ACME")
    assert refused.status_code == 400 and refused.json()["policy"] == "no-acme"

    # out of band: someone removes the policies; refresh sees it, up puts them back
    api.set_guardrails("guarded", None)
    stack.refresh()
    assert stack.resources("wallaroo:Pipeline")[0]["outputs"].get("guardrails") is None
    assert changed(stack.preview()) == {"guarded": "update"}
    stack.up()
    assert infer(runtime, "buy from ACME").status_code == 400

    # import: the adopted pipeline's policies come with it
    urn = next(r["urn"] for r in stack.resources("wallaroo:Pipeline"))
    stack.run("state", "delete", urn, "--yes")
    stack.config_set("adopt_id", str(first["pipeline_id"]))
    stack.up()
    assert stack.preview().change_summary == {"same": 3}
    stack.run("config", "rm", "adopt_id")

    stack.run("config", "rm", "policies")
    assert changed(stack.preview()) == {"guarded": "update"}
    stack.up()
    assert infer(runtime, "buy from ACME").status_code == 200 and api.get_guardrails("guarded") is None
    stack.destroy()


@pytest.mark.parametrize(("policies", "expected"), [
    ([{"kind": "keywords", "name": "x", "patterns": ["(unclosed"]}], "is not a regular expression"),
    ([{"kind": "threshold", "name": "t", "score": "toxicity"}], "give one of above or below"),
])
def test_bad_policies_fail_at_preview(stack: PulumiStack, tmp_path: Path, policies: list, expected: str) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("path", str(echo_model(tmp_path / "echo")))
    stack.config_set("policies", json.dumps(policies))
    text = failure_text(stack.preview(check=False))
    assert "guardrails" in text and expected in text
