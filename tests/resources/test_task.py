"""WallarooTask through the real engine: a scheduled task with args and secret args (the secret
never in the state in plaintext), args and schedule changed in place, continuous replaces it,
a run-once task that really runs main.py with its arguments, import, destroy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wallaroo_pulumi.client import NotFoundError, WallarooClient
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, failure_text, plaintext_in_state

PROGRAM = """
import pulumi
from wallaroo_pulumi import WallarooOrchestration, WallarooTask

cfg = pulumi.Config()
job = WallarooOrchestration("job", path=cfg.require("job_path"))
task = WallarooTask("eval", orchestration=job, schedule=cfg.get("schedule"),
                    continuous=cfg.get_bool("continuous") or False,
                    args={"threshold": cfg.get_float("threshold") or 0.5},
                    secret_args={"api_key": cfg.require_secret("api_key")},
                    opts=pulumi.ResourceOptions(import_=cfg.get("adopt_id")))
for key in ("task_id", "status", "last_run_status", "next_run"):
    pulumi.export(key, getattr(task, key))
"""
SECRET = "sk-task-secret-0123456789"
MAIN = """
import json, time
args = json.load(open("/home/jovyan/arguments.json"))
print("threshold", args["threshold"], "key length", len(args["api_key"]))
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "main.py").write_text(MAIN)
    return folder


def test_task_lifecycle(stack: PulumiStack, api: WallarooClient, job: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("job_path", str(job))
    stack.config_set("api_key", SECRET, secret=True)
    stack.config_set("schedule", "0 3 * * *")
    stack.up()
    out = stack.outputs()
    task = api.get_task(out["task_id"])
    assert (task.type, task.schedule, task.json_args) == ("scheduled", "0 3 * * *",
                                                          {"threshold": 0.5, "api_key": SECRET})
    assert out["status"] == "started" and out["next_run"]
    assert plaintext_in_state(stack, SECRET) == []
    assert stack.preview().change_summary == {"same": 3}

    stack.config_set("threshold", "0.8")  # args and schedule change in place: the task keeps its id
    stack.config_set("schedule", "0 4 * * *")
    assert changed(stack.preview()) == {"eval": "update"}
    stack.up()
    assert stack.outputs()["task_id"] == out["task_id"]
    task = api.get_task(out["task_id"])
    assert (task.schedule, task.json_args["threshold"]) == ("0 4 * * *", 0.8)
    assert plaintext_in_state(stack, SECRET) == []

    # imported by id: no change planned
    urn = next(r["urn"] for r in stack.resources("wallaroo:Task"))
    stack.run("state", "delete", urn, "--yes")
    stack.config_set("adopt_id", out["task_id"])
    result = stack.up()
    # the runtime cannot say which arguments were secret: adopted with all of them kept secret, then
    # the program's split (args / secret_args) is written in place; the task keeps its id
    assert [s["op"] for s in result.steps if s["urn"].endswith("::eval")] == ["import", "update"]
    assert stack.outputs()["task_id"] == out["task_id"]
    assert stack.preview().change_summary == {"same": 3}
    assert plaintext_in_state(stack, SECRET) == []
    stack.run("config", "rm", "adopt_id")

    # from a schedule to continuous: a new task; the old one is gone
    stack.run("config", "rm", "schedule")
    stack.config_set("continuous", "true")
    assert changed(stack.preview()) == {"eval": "replace"}
    stack.up()
    continuous_id = stack.outputs()["task_id"]
    assert continuous_id != out["task_id"] and api.get_task(continuous_id).type == "continuous"
    with pytest.raises(NotFoundError):
        api.get_task(out["task_id"])

    # run once: main.py runs with its arguments, the secret's value never in its log
    stack.config_set("continuous", "false")
    stack.up()
    once_id = stack.outputs()["task_id"]
    run = api.wait_for_run(once_id, timeout_s=60)
    logs = api.task_run_logs(run.id)
    assert run.status == "success", logs
    assert any(line.endswith(f"stdout F threshold 0.8 key length {len(SECRET)}") for line in logs)
    assert SECRET not in json.dumps(logs)

    stack.destroy()
    with pytest.raises(NotFoundError):
        api.get_task(once_id)
    assert not [t for t in api.list_tasks() if t.status != "killed"]


def test_schedule_and_continuous_together_fail_at_preview(stack: PulumiStack, job: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("job_path", str(job))
    stack.config_set("api_key", SECRET, secret=True)
    stack.config_set("schedule", "0 3 * * *")
    stack.config_set("continuous", "true")
    text = failure_text(stack.preview(check=False))
    assert "either schedule" in text and "continuous" in text, text
    assert SECRET not in text
