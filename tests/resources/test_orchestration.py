"""WallarooOrchestration through the real engine: a folder uploaded and packaged, unchanged on
preview, new content replaces it (the old upload deleted), import adopts an upload, refresh drops
one deleted out of band, destroy deletes it; a folder without main.py fails at up, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from wallaroo_pulumi.client import NotFoundError, WallarooClient
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, failure_text

PROGRAM = """
import pulumi
from wallaroo_pulumi import WallarooOrchestration

cfg = pulumi.Config()
job = WallarooOrchestration("job", path=cfg.require("job_path"), opts=pulumi.ResourceOptions(import_=cfg.get("adopt_id")))
for key in ("orchestration_id", "status", "file_name", "size"):
    pulumi.export(key, getattr(job, key))
"""


def _folder(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "job"
    folder.mkdir(exist_ok=True)
    (folder / "main.py").write_text(f"print({text!r})\n")
    return folder


def test_orchestration_lifecycle(stack: PulumiStack, api: WallarooClient, tmp_path: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("job_path", str(_folder(tmp_path, "first")))
    stack.up()
    out = stack.outputs()
    orch = api.get_orchestration(out["orchestration_id"])
    assert (out["status"], orch.status, orch.name, out["file_name"]) == ("ready", "ready", "job", "job.zip")
    assert out["size"] == orch.file_size > 0
    assert stack.preview().change_summary == {"same": 2}

    _folder(tmp_path, "second")  # new content: a new upload replaces the old one
    assert changed(stack.preview()) == {"job": "replace"}
    stack.up()
    new_id = stack.outputs()["orchestration_id"]
    assert new_id != out["orchestration_id"] and api.get_orchestration(new_id).sha != orch.sha
    with pytest.raises(NotFoundError):
        api.get_orchestration(out["orchestration_id"])

    # adopted by id: imported with no change planned
    urn = next(r["urn"] for r in stack.resources("wallaroo:Orchestration"))
    stack.run("state", "delete", urn, "--yes")
    stack.config_set("adopt_id", new_id)
    result = stack.up()
    assert [s["op"] for s in result.steps if s["urn"].endswith("::job")] == ["import"]
    assert stack.preview().change_summary == {"same": 2}

    # deleted out of band: refresh drops it
    api.delete_orchestration(new_id)
    assert stack.refresh().change_summary.get("delete") == 1
    stack.run("config", "rm", "adopt_id")
    stack.up()
    again = stack.outputs()["orchestration_id"]
    assert api.get_orchestration(again).status == "ready"

    stack.destroy()
    with pytest.raises(NotFoundError):
        api.get_orchestration(again)


def test_a_folder_without_main_py_fails_naming_it(stack: PulumiStack, tmp_path: Path) -> None:
    folder = tmp_path / "nomain"
    folder.mkdir()
    (folder / "task.py").write_text("print(1)\n")
    stack.write_program(PROGRAM)
    stack.config_set("job_path", str(folder))
    text = failure_text(stack.up(check=False))
    assert "file: no main.py in the zip" in text, text
