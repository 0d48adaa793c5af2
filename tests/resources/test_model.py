"""WallarooModel through the real engine: create, no-op, new version, replace, refresh,
import, secrets, bad input, destroy."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi import packaging
from wallaroo_pulumi.client import NotFoundError, WallarooClient
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import failure_text, plaintext_in_state, write_model

PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import WallarooModel

cfg = pulumi.Config()
model = WallarooModel("scale", name=cfg.get("name") or "scale", path=cfg.require("path"),
                      input_schema=pa.schema([("x", pa.float64())]),
                      output_schema=pa.schema([("y", pa.float64())]))
for key in ("model_id", "model_version_id", "version", "sha256", "size", "created_at", "upload_command"):
    pulumi.export(key, getattr(model, key))
"""

IMPORT_PROGRAM = PROGRAM + """
adopted = WallarooModel("adopted", path=cfg.require("path"),
                        input_schema=pa.schema([("x", pa.float64())]),
                        output_schema=pa.schema([("y", pa.float64())]),
                        opts=pulumi.ResourceOptions(import_=cfg.require("adopt_id")))
pulumi.export("adopted_version", adopted.version)
"""


def test_model_lifecycle(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    folder = write_model(tmp_path / "model", factor=2.0)
    stack.write_program(PROGRAM)
    stack.config_set("path", str(folder))

    # preview computes the hash without uploading anything
    planned = stack.preview()
    assert planned.ops("wallaroo:Model") == {"scale": "create"}
    assert not [m for m in api.list_models() if m.name == "scale"]

    stack.up()
    first = stack.outputs()
    assert first["sha256"] == packaging.content_sha256(folder)
    version = api.get_model_version(first["model_version_id"])
    assert (version.name, version.sha, version.file_size) == ("scale", first["sha256"], first["size"])
    assert "$WALLAROO_TOKEN" in first["upload_command"] and "upload_and_convert" in first["upload_command"]

    assert stack.preview().change_summary == {"same": 2}

    # new content: an in-place update that uploads a new version of the same model
    write_model(folder, factor=3.0)
    planned = stack.preview()
    assert planned.ops("wallaroo:Model") == {"scale": "update"}
    assert "sha256" in (planned.step("scale").get("diffs") or planned.step("scale").get("detailedDiff") or {"sha256": 1})
    stack.up()
    second = stack.outputs()
    assert second["model_id"] == first["model_id"]
    assert second["version"] != first["version"]
    assert [v.version for v in api.list_model_versions("scale")][-2:] in (
        [first["version"], second["version"]], [second["version"], first["version"]])
    assert stack.refresh().change_summary.get("update") is None
    assert stack.preview().change_summary == {"same": 2}

    # a new name replaces the resource (create the new one, then delete the old)
    stack.config_set("name", "scale-renamed")
    assert stack.preview().ops("wallaroo:Model") == {"scale": "replace"}
    stack.up()
    assert stack.outputs()["model_id"] != first["model_id"]
    with pytest.raises(NotFoundError):
        api.list_model_versions("scale")  # the old model is gone

    # out-of-band delete: refresh notices, the next up uploads it again
    api.delete_model("scale-renamed")
    refreshed = stack.refresh()
    assert refreshed.change_summary.get("delete") == 1
    assert stack.preview().ops("wallaroo:Model") == {"scale": "create"}
    stack.up()
    assert api.list_model_versions("scale-renamed")

    # the token is a secret: never in the state in plaintext
    assert plaintext_in_state(stack, api_token(stack)) == []

    stack.destroy()
    assert not [m for m in api.list_models() if m.name.startswith("scale")]


def test_import_adopts_an_existing_version(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    folder = write_model(tmp_path / "model")
    artifact = packaging.pack(folder, Path(tempfile.mkdtemp(dir=tmp_path)))
    existing = api.upload_model("adopted", artifact.path, pa.schema([("x", pa.float64())]),
                                pa.schema([("y", pa.float64())]))
    stack.write_program(IMPORT_PROGRAM)
    stack.config_set("path", str(folder))
    stack.config_set("adopt_id", str(existing.id))

    result = stack.up()
    assert result.ops("wallaroo:Model")["adopted"] == "import"
    assert stack.outputs()["adopted_version"] == existing.version
    assert len(api.list_model_versions("adopted")) == 1  # adopted, not uploaded again
    assert stack.preview().change_summary == {"same": 3}
    assert plaintext_in_state(stack, api_token(stack)) == []

    stack.destroy()
    with pytest.raises(NotFoundError):
        api.get_model_version(existing.id)  # destroy deleted the adopted model too


ADOPTED_PROGRAM = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import WallarooModel

cfg = pulumi.Config()
adopted = WallarooModel("adopted", path=cfg.require("path"),
                        input_schema=pa.schema([("x", pa.float64())]),
                        output_schema=pa.schema([("y", pa.float64())]))
pulumi.export("adopted_version", adopted.version)
"""


def test_pulumi_import_command_adopts_by_id_with_the_stack_config(
        stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    folder = write_model(tmp_path / "model")
    artifact = packaging.pack(folder, Path(tempfile.mkdtemp(dir=tmp_path)))
    existing = api.upload_model("adopted", artifact.path, pa.schema([("x", pa.float64())]),
                                pa.schema([("y", pa.float64())]))
    # no program runs and no WALLAROO_* env: the connection comes from `wallaroo:url`/`wallaroo:token`
    assert "WALLAROO_URL" not in stack.env and "WALLAROO_TOKEN" not in stack.env
    stack.write_program(ADOPTED_PROGRAM)
    stack.config_set("path", str(folder))
    stack.import_("pulumi-python:dynamic/wallaroo:Model", "adopted", str(existing.id))
    [state] = stack.resources("wallaroo:Model")
    assert state["id"] == str(existing.id) and state["outputs"]["version"] == existing.version
    assert plaintext_in_state(stack, api_token(stack)) == []

    # the declaration added afterwards matches what was adopted: nothing to upload
    assert stack.preview().change_summary == {"same": 2}
    stack.destroy()
    with pytest.raises(NotFoundError):
        api.get_model_version(existing.id)


def test_bad_inputs_fail_at_preview_naming_the_field(stack: PulumiStack, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("path", str(write_model(tmp_path / "model")))
    stack.config_set("name", "Not_A_Valid_Name")
    result = stack.preview(check=False)
    text = failure_text(result)
    assert "name" in text and "lowercase" in text, text
    assert not stack.resources("wallaroo:Model")

    stack.config_set("name", "fine")
    stack.config_set("path", str(tmp_path / "missing"))
    text = failure_text(stack.preview(check=False))
    assert "does not exist" in text and "missing" in text, text


def api_token(stack: PulumiStack) -> str:
    return stack.run("config", "get", "wallaroo:token").stdout.strip()
