"""The Wallaroo SDK's orchestration flow, unchanged, against the runtime, with an orchestration that
itself uses the real SDK inside its task (read a pipeline's logs, compute each answer's length,
infer the lengths into a score pipeline): once, on cron and continuously; the scores land where
listener scores do (/v1/api/listeners/results)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from tests.runtime.conftest import Server, make_model, server_env
from tests.wire.conftest import SDK_DIR, run_sdk

TEXT = pa.schema([("text", pa.string())])
ANSWER = pa.schema([("generated_text", pa.string())])
LENGTH = pa.schema([("text_length", pa.float64())])
TEXTS = ["short", "a longer answer", "the longest answer of the three"]


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
        _deploy(client, tmp_path, "echo", "llm", 'return {"generated_text": input_data["text"]}', (TEXT, ANSWER))
        _deploy(client, tmp_path, "length", "llm-length-scores", 'return {"text_length": input_data["text_length"]}',
                (LENGTH, LENGTH))
        client.infer("llm", pd.DataFrame({"text": TEXTS}))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.write(SDK_DIR / "orchestration" / "main.py", "main.py")
        (tmp_path / "length-scorer.zip").write_bytes(buf.getvalue())
        [out] = run_sdk(sdk_python, "orchestration_flow.py", task_server.url, task_server.token, str(tmp_path),
                        str(tmp_path / "length-scorer.zip"), server=task_server, timeout=1100)

        assert out["orchestration"]["status"] == "ready" and out["orchestration"]["name"] == "length-scorer"
        assert out["orchestration"]["file_name"] == "length-scorer.zip" and len(out["orchestration"]["sha"]) == 64
        assert out["listed"] == ["length-scorer", "llm-listener"]
        once = out["once"]
        assert (once["type"], once["status"]) == ("Oneshot", "success"), once["logs"]
        lines = [line.split(" ", 1)[1] for line in once["logs"]]
        assert "stdout F in_task True args ['pipeline', 'scores']" in lines
        assert "stdout F scored 3 answers, mean length 17.0" in lines
        assert (out["cron"]["type"], out["cron"]["statuses"]) == ("CronJob", ["success"])
        assert (out["continuous"]["type"], out["continuous"]["statuses"]) == ("NetworkService", ["success"])
        assert out["list_tasks"] == ["score-cron", "score-forever", "score-once"]
        assert out["orch_tasks"] == out["list_tasks"]
        assert out["killed"] == ["killed", "killed"]
        assert out["list_tasks_after_kill"] == ["score-once"]

        # the task's scores are the score pipeline's inference logs, read where listener scores are
        scores = client.listener_results("llm-length-scores", limit=10_000)
        per_run = scores["out.text_length"].tolist()
        assert sorted(set(per_run)) == sorted(float(len(t)) for t in TEXTS)
        assert len(per_run) % 3 == 0 and len(per_run) >= 3 * 5  # once + 2 cron + 2 continuous runs at least
