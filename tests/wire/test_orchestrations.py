"""The Wallaroo SDK's orchestration flow, unchanged, against the runtime, with the README's evaluation
job (examples/evaluation-job), which itself uses the real SDK inside its task (in_task, task_args,
read a pipeline's logs, score them against references, infer the scores into a score pipeline):
once, on cron and continuously; the scores land where listener scores do (/v1/api/listeners/results)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from tests.runtime.conftest import REPO, Server, make_model, server_env
from tests.wire.conftest import run_sdk

TEXT = pa.schema([("text", pa.string())])
ANSWER = pa.schema([("generated_text", pa.string())])
SCORE = pa.schema([("exact_match", pa.float64())])
TEXTS = ["short", "a longer answer", "the longest answer of the three"]  # echoed: references.csv matches two
EXAMPLE = REPO / "examples" / "evaluation-job"


@pytest.fixture(scope="module")
def task_server(sdk_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A runtime whose tasks run on the SDK's Python (as Wallaroo's task images ship the SDK)."""
    srv = Server(tmp_path_factory.mktemp("orch-wire") / "data", ["--task-python", sdk_python], server_env()).start()
    yield srv
    srv.stop()


def _deploy(client, models: Path, name: str, pipeline: str, predict: str, schemas: tuple) -> None:  # noqa: ANN001
    mv = client.upload_model(name, make_model(models, name, predict), *schemas)
    created = client.create_pipeline(pipeline, steps=[mv])
    dep = client.deploy(pipeline, pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    client.wait_for_deployment(f"{pipeline}-{dep}", timeout_s=120)


@pytest.mark.timeout(1200)
def test_the_sdk_orchestration_flow_runs_unchanged(sdk_python: str, task_server: Server, tmp_path: Path) -> None:
    with task_server.client() as client:
        _deploy(client, tmp_path, "echo", "chat", 'return {"generated_text": input_data["text"]}', (TEXT, ANSWER))
        _deploy(client, tmp_path, "exact", "chat-eval-scores", 'return {"exact_match": input_data["exact_match"]}',
                (SCORE, SCORE))
        client.infer("chat", pd.DataFrame({"text": TEXTS}))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name in ("main.py", "references.csv"):
                zf.write(EXAMPLE / name, name)
        (tmp_path / "evaluation-job.zip").write_bytes(buf.getvalue())
        [out] = run_sdk(sdk_python, "orchestration_flow.py", task_server.url, task_server.token, str(tmp_path),
                        str(tmp_path / "evaluation-job.zip"), server=task_server, timeout=1100)

        assert out["orchestration"]["status"] == "ready" and out["orchestration"]["name"] == "evaluation-job"
        assert out["orchestration"]["file_name"] == "evaluation-job.zip" and len(out["orchestration"]["sha"]) == 64
        assert out["listed"] == ["evaluation-job", "llm-listener"]
        once = out["once"]
        assert (once["type"], once["status"]) == ("Oneshot", "success"), once["logs"]
        lines = [line.split(" ", 1)[1] for line in once["logs"]]
        assert "stdout F evaluated 3 answers: exact match 66.7%" in lines  # in_task() was True, or it exits 1
        assert (out["cron"]["type"], out["cron"]["statuses"]) == ("CronJob", ["success"])
        assert (out["continuous"]["type"], out["continuous"]["statuses"]) == ("NetworkService", ["success"])
        assert out["list_tasks"] == ["score-cron", "score-forever", "score-once"]
        assert out["orch_tasks"] == out["list_tasks"]
        assert out["killed"] == ["killed", "killed"]
        assert out["list_tasks_after_kill"] == ["score-once"]

        # the task's scores are the score pipeline's inference logs, read where listener scores are
        scores = client.listener_results("chat-eval-scores", limit=10_000)["out.exact_match"].tolist()
        assert len(scores) % 3 == 0 and len(scores) >= 3 * 5  # once + 2 cron + 2 continuous runs at least
        assert sum(scores) == 2 * len(scores) / 3  # each run: two of the three answers match their reference
