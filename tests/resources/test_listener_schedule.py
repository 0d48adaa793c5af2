"""LLMListenerSchedule through the real engine: a schedule that really scores logged
inferences, schedule and listener changes in place, refresh after an out-of-band delete,
import, a bad cron at preview, destroy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from wallaroo_pulumi.client import NotFoundError, WallarooClient
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, failure_text, plaintext_in_state

PROGRAM = """
from pathlib import Path
import pulumi, pyarrow as pa
import wallaroo_pulumi.components as components
from wallaroo_pulumi import LLMListenerSchedule, WallarooModel, WallarooPipeline
from wallaroo_pulumi.scorers.schemas import listener_schemas

cfg = pulumi.Config()
echo = WallarooModel("echo", path=cfg.require("echo_path"), input_schema=pa.schema([("text", pa.string())]),
                     output_schema=pa.schema([("generated_text", pa.string())]))
chat = WallarooPipeline("chat", steps=[echo], deployment={"cpus": 1, "memory": "1Gi"})
kind = cfg.get("listener") or "sentiment"
listener_in, listener_out = listener_schemas(kind)
listener = WallarooModel(kind, path=Path(components.__file__).parent / "byop" / "listeners" / kind,
                         input_schema=listener_in, output_schema=listener_out)
watch = LLMListenerSchedule("watch", pipeline=chat, listener=listener, schedule=cfg.get("schedule"),
                            run_once=cfg.get_bool("run_once") or False, window_seconds=3600,
                            opts=pulumi.ResourceOptions(import_=cfg.get("adopt_id")))
for key in ("task_id", "status", "next_run", "last_run_status"):
    pulumi.export(key, getattr(watch, key))
"""


@pytest.fixture
def echo(tmp_path: Path) -> Path:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "model.py").write_text(byop_source('return {"generated_text": input_data["text"]}'))
    return folder


def test_schedule_lifecycle(stack: PulumiStack, api: WallarooClient, echo: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("echo_path", str(echo))
    stack.config_set("schedule", "0 3 * * *")
    stack.up()
    out = stack.outputs()
    task = api.get_task(out["task_id"])
    assert (task.schedule, task.monitored_pipeline, task.listener_model["name"]) == ("0 3 * * *", "chat", "sentiment")
    assert out["next_run"] and out["next_run"].startswith(str(task.next_run.date()))
    assert stack.preview().change_summary == {"same": 5}

    # logged inferences, then a fast schedule: the task scores them, in place (same task id)
    api.infer("chat", pd.DataFrame({"text": ["I love this, it is wonderful!", "This is terrible and I hate it."]}))
    stack.config_set("schedule", "* * * * * */2")
    assert changed(stack.preview()) == {"watch": "update"}
    stack.up()
    assert stack.outputs()["task_id"] == out["task_id"]
    run = api.wait_for_run(out["task_id"], timeout_s=60)
    assert run.status == "success", run
    # every 2 s: the newest finished run may come after the one that scored the rows
    runs = api.list_task_runs(out["task_id"])
    assert sum(r.rows_scored for r in runs if r.status == "success") == 2, runs
    scores = api.listener_results("chat", listener="sentiment")
    assert len(scores) == 2, scores
    compound = sorted(scores["out.sentiment_compound"])  # VADER: -1 (negative) .. +1 (positive)
    assert compound[0] < -0.5 and compound[1] > 0.5, scores

    # a different listener: updated in place, the task keeps its id
    stack.config_set("schedule", "0 3 * * *")
    stack.config_set("listener", "profanity")
    planned = changed(stack.preview())
    assert planned["watch"] == "update" and planned.get("profanity") == "create"
    stack.up()
    assert stack.outputs()["task_id"] == out["task_id"]
    assert api.get_task(out["task_id"]).listener_model["name"] == "profanity"
    assert plaintext_in_state(stack, stack.run("config", "get", "wallaroo:token").stdout.strip()) == []

    # deleted out of band: refresh drops it, up schedules it again
    api.delete_task(out["task_id"])
    assert stack.refresh().change_summary.get("delete") == 1
    assert changed(stack.preview()) == {"watch": "create"}
    stack.up()
    new_id = stack.outputs()["task_id"]
    assert new_id != out["task_id"] and api.get_task(new_id).schedule == "0 3 * * *"

    stack.destroy()
    with pytest.raises(NotFoundError):
        api.get_task(new_id)
    assert not api.list_tasks()


def test_import_adopts_a_task(stack: PulumiStack, api: WallarooClient, echo: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("echo_path", str(echo))
    stack.config_set("schedule", "30 2 * * *")
    stack.up()
    task_id = stack.outputs()["task_id"]
    urn = next(r["urn"] for r in stack.resources("wallaroo:ListenerSchedule"))
    stack.run("state", "delete", urn, "--yes")

    stack.config_set("adopt_id", task_id)
    result = stack.up()
    assert [s["op"] for s in result.steps if s["urn"].endswith("::watch")] == ["import"]
    assert stack.outputs()["task_id"] == task_id
    assert stack.preview().change_summary == {"same": 5}
    stack.destroy()
    assert not api.list_tasks()


def test_bad_cron_fails_at_preview(stack: PulumiStack, echo: Path) -> None:
    stack.write_program(PROGRAM)
    stack.config_set("echo_path", str(echo))
    stack.config_set("schedule", "every tuesday")
    text = failure_text(stack.preview(check=False))
    assert "schedule" in text and "cron" in text, text

    stack.config_set("run_once", "true")
    stack.config_set("schedule", "0 * * * *")
    text = failure_text(stack.preview(check=False))
    assert "exactly one of schedule" in text, text
    assert not stack.resources("wallaroo:")
