"""WallarooModel's openai_config through the real engine: set at create, changed alone in place (the
same version, no upload), cleared, read back by refresh, and a bad config refused by field name."""

from __future__ import annotations

import json
from pathlib import Path

from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, failure_text, write_model

PROGRAM = """
import json, pulumi, pyarrow as pa
from wallaroo_pulumi import WallarooModel

cfg = pulumi.Config()
raw = cfg.get("openai")
model = WallarooModel("chatty", path=cfg.require("path"), input_schema=pa.schema([("x", pa.float64())]),
                      output_schema=pa.schema([("y", pa.float64())]), openai_config=json.loads(raw) if raw else None)
pulumi.export("model_version_id", model.model_version_id)
pulumi.export("upload_command", model.upload_command)
"""


def test_openai_config_lifecycle(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("path", str(write_model(tmp_path / "model")))
    first = {"enabled": True, "chat_completion_config": {"max_tokens": 128}}
    stack.config_set("openai", json.dumps(first))
    stack.up()
    version_id = stack.outputs()["model_version_id"]
    assert api.openai_config(version_id) == {**first, "completion_config": {}}
    command = stack.outputs()["upload_command"]
    assert '"openai_config":{' in command and '"max_tokens":128}' in command  # whole numbers stay integers

    second = {"enabled": True, "chat_completion_config": {"max_tokens": 16, "temperature": 0.1}}
    stack.config_set("openai", json.dumps(second))
    assert changed(stack.preview()) == {"chatty": "update"}
    stack.up()
    assert stack.outputs()["model_version_id"] == version_id  # in place: no new version, no upload
    assert len(api.list_model_versions("chatty")) == 1
    assert api.openai_config(version_id) == {**second, "completion_config": {}}

    api.set_openai_config(version_id, {"enabled": False})  # changed behind the stack's back
    assert changed(stack.preview("--refresh")) == {"chatty": "update"}

    stack.run("config", "rm", "openai")
    stack.up()
    assert api.openai_config(version_id) == {"enabled": False, "completion_config": {}, "chat_completion_config": {}}
    assert stack.preview("--refresh").change_summary == {"same": 2}

    stack.config_set("openai", json.dumps({"enabled": "yes please", "chat_config": {}}))
    text = failure_text(stack.preview(check=False))
    assert "openai_config.enabled" in text and "openai_config.chat_config" in text
