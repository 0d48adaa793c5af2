"""WallarooPipeline through the real engine: deploy with secret sidekick env, versions on step
change, credential rotation without re-upload, refresh after undeploy, rename, import, a failing
model's error, bad config at preview, destroy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from wallaroo_pulumi.client import NotFoundError, WallarooClient
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, failure_text, plaintext_in_state, write_model

PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import DeploymentConfigBuilder, WallarooModel, WallarooPipeline

cfg = pulumi.Config()
schema = dict(input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]))
model = WallarooModel("scale", path=cfg.require("path"), **schema)
deployment = (DeploymentConfigBuilder().cpus(1).memory(cfg.get("memory") or "512Mi")
              .sidekick_cpus(model, 0.5).sidekick_memory(model, "1Gi")
              .sidekick_env(model, {"SECRET_KEY": cfg.require_secret("key")}).build())
pipeline = WallarooPipeline("pipe", name=cfg.get("name") or "pipe", steps=[model], deployment=deployment,
                            deploy_timeout_s=60, opts=pulumi.ResourceOptions(import_=cfg.get("adopt_id")))
for key in ("pipeline_id", "version", "deployment_id", "inference_url", "status"):
    pulumi.export(key, getattr(pipeline, key))
pulumi.export("model_version", model.version)
"""

KEY = "sk-first-credential-0123456789"
ROTATED = "sk-rotated-credential-0123456789-abcdef"


def infer(api: WallarooClient, name: str, x: float = 1.0) -> float:
    api._deployment_ids.clear()  # the deployment may have moved since the last call
    return float(api.infer(name, pd.DataFrame({"x": [x]}))["out.y"][0])


def test_pipeline_lifecycle(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    folder = write_model(tmp_path / "model", factor=2.0)
    stack.write_program(PROGRAM)
    stack.config_set("path", str(folder))
    stack.config_set("key", KEY, secret=True)

    planned = stack.preview()
    assert planned.ops("wallaroo:Pipeline") == {"pipe": "create"}
    assert KEY not in planned.stdout + planned.stderr

    created = stack.up()
    assert KEY not in created.stdout + created.stderr
    out = stack.outputs()
    assert out["status"] == "Running"
    assert out["inference_url"].endswith(f"/v1/api/pipelines/infer/pipe-{out['deployment_id']}/pipe")
    assert infer(api, "pipe", 1.0) == 2.0 + len(KEY)  # the sidekick got the credential
    assert plaintext_in_state(stack, KEY, stack.run("config", "get", "wallaroo:token").stdout.strip()) == []
    assert stack.preview().change_summary == {"same": 3}

    # credential rotation: the pipeline redeploys in place, nothing is uploaded again
    stack.config_set("key", ROTATED, secret=True)
    planned = stack.preview()
    assert changed(planned) == {"pipe": "update"}
    assert ROTATED not in planned.stdout + planned.stderr
    stack.up()
    assert infer(api, "pipe", 1.0) == 2.0 + len(ROTATED)
    assert stack.outputs()["model_version"] == out["model_version"]
    assert plaintext_in_state(stack, KEY, ROTATED) == []

    # a step change (new model code): new model version, new pipeline version, redeployed
    write_model(folder, factor=5.0)
    assert changed(stack.preview()) == {"scale": "update", "pipe": "update"}
    stack.up()
    second = stack.outputs()
    assert second["pipeline_id"] == out["pipeline_id"] and second["version"] != out["version"]
    assert infer(api, "pipe", 1.0) == 5.0 + len(ROTATED)

    # config change: same steps, redeployed with the new memory
    stack.config_set("memory", "1Gi")
    assert stack.preview().ops("wallaroo:Pipeline") == {"pipe": "update"}
    stack.up()
    assert api.get_pipeline("pipe").engine_config["memory"] == "1Gi"
    assert stack.refresh().change_summary.get("update") is None
    assert stack.preview().change_summary == {"same": 3}

    # out of band: someone undeploys it; refresh sees it, up deploys it again
    api.undeploy("pipe")
    stack.refresh()
    state = stack.resources("wallaroo:Pipeline")[0]["outputs"]
    assert (state["status"], state["deploy"], state.get("inference_url")) == ("undeployed", False, None)
    assert stack.preview().ops("wallaroo:Pipeline") == {"pipe": "update"}
    stack.up()
    assert stack.outputs()["status"] == "Running" and infer(api, "pipe") == 5.0 + len(ROTATED)

    # rename: a new pipeline replaces the old one
    stack.config_set("name", "pipe-two")
    assert stack.preview().ops("wallaroo:Pipeline") == {"pipe": "replace"}
    stack.up()
    assert infer(api, "pipe-two") == 5.0 + len(ROTATED)
    with pytest.raises(NotFoundError):
        api.get_pipeline("pipe")

    stack.destroy()
    assert not api.list_pipelines()
    assert not [m for m in api.list_models() if m.name == "scale"]


def test_import_adopts_a_deployed_pipeline(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    folder = write_model(tmp_path / "model")
    stack.write_program(PROGRAM)
    stack.config_set("path", str(folder))
    stack.config_set("key", KEY, secret=True)
    stack.up()
    pipeline_id = stack.outputs()["pipeline_id"]
    # forget the pipeline (state only), then adopt it again by id
    urn = next(r["urn"] for r in stack.resources("wallaroo:Pipeline"))
    stack.run("state", "delete", urn, "--yes")
    assert api.get_pipeline("pipe").deployed

    stack.config_set("adopt_id", str(pipeline_id))
    result = stack.up()
    # adopted, then redeployed once: the runtime never hands credentials back, so the
    # program's sidekick env is applied after the import
    assert [s["op"] for s in result.steps if s["urn"].endswith("::pipe")] == ["import", "update"]
    assert stack.outputs()["pipeline_id"] == pipeline_id
    assert infer(api, "pipe") == 2.0 + len(KEY)
    assert plaintext_in_state(stack, KEY) == []
    stack.destroy()
    assert not api.list_pipelines()


def test_failing_model_fails_up_with_its_python_error(stack: PulumiStack, api: WallarooClient,
                                                      tmp_path: Path) -> None:
    folder = write_model(tmp_path / "model", load="raise RuntimeError('weights file missing: /models/w.bin')")
    stack.write_program(PROGRAM)
    stack.config_set("path", str(folder))
    stack.config_set("key", KEY, secret=True)
    result = stack.up(check=False)
    text = failure_text(result)
    assert "weights file missing" in text, text
    assert KEY not in text


def test_bad_deployment_config_fails_at_preview(stack: PulumiStack, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("path", str(write_model(tmp_path / "model")))
    stack.config_set("key", KEY, secret=True)
    stack.config_set("memory", "lots")
    text = failure_text(stack.preview(check=False))
    assert "memory" in text and "512Mi" in text, text
    assert not stack.resources("wallaroo:")
