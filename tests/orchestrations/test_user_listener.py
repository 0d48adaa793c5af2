"""A user's own listener, an orchestration written against the real Wallaroo SDK (read a pipeline's
logs, score them, infer the scores into a score pipeline), beside a built-in llm-listener task on
the same pipeline: the user's scores are read where the built-in's are (listener results by the
monitored pipeline, by listener, the assay of a score), because its task's json names the
`monitored_pipeline` it scores (D53)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from tests.orchestrations.conftest import upload
from tests.runtime.conftest import Server, make_model, server_env
from tests.wire.conftest import sdk_python  # noqa: F401 - the fixture: the pinned SDK's python
from wallaroo_pulumi.client import WallarooClient

LISTENER = """
import pandas as pd
import wallaroo

wl = wallaroo.Client()                      # the run's own key, found by the SDK
args = wl.task_args()
answers = wl.get_pipeline(args["monitored_pipeline"]).logs(limit=10_000)
lengths = answers["out.generated_text"].str.len().astype(float)
wl.get_pipeline(args["output_pipeline"]).infer(pd.DataFrame({"length": lengths.tolist()}))
print(f"scored {len(lengths)} answers")
"""
TEXTS = ["fine, thanks", "I love this wonderful day", "this is terrible and awful"]
TEXT = pa.schema([("text", pa.string())])
ANSWER = pa.schema([("generated_text", pa.string())])
LENGTH = pa.schema([("length", pa.float64())])


@pytest.fixture(scope="module")
def sdk_server(sdk_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    srv = Server(tmp_path_factory.mktemp("user-listener") / "data", ["--task-python", sdk_python], server_env()).start()
    yield srv
    srv.stop()


def _post(server: Server, path: str, body: dict) -> dict:
    answer = httpx.post(f"{server.url}{path}", json=body, headers=server.headers, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _deploy(client: WallarooClient, models: Path, name: str, pipeline: str, predict: str, schemas: tuple) -> None:
    mv = client.upload_model(name, make_model(models, name, predict), *schemas)
    created = client.create_pipeline(pipeline, steps=[mv])
    dep = client.deploy(pipeline, pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    client.wait_for_deployment(f"{pipeline}-{dep}", timeout_s=120)


@pytest.mark.timeout(600)
def test_a_user_listener_s_scores_are_read_where_the_built_in_s_are(sdk_server: Server, tmp_path: Path) -> None:
    with sdk_server.client(timeout=120) as c:
        _deploy(c, tmp_path, "echo", "chat", 'return {"generated_text": input_data["text"]}', (TEXT, ANSWER))
        _deploy(c, tmp_path, "keep", "chat-lengths", 'return {"length": input_data["length"]}', (LENGTH, LENGTH))
        c.infer("chat", pd.DataFrame({"text": TEXTS}))

        builtin = c.create_task("sentiment", {"monitored_pipeline": "chat", "listener_model": {"name": "sentiment"}})
        assert c.wait_for_run(builtin.id, timeout_s=120).status == "success"
        orch = upload(c, {"main.py": LISTENER}, "length-listener")
        task = c.create_task("lengths", {"monitored_pipeline": "chat", "output_pipeline": "chat-lengths"},
                             orch_id=orch.id, timeout_s=300)
        run = c.wait_for_run(task.id, timeout_s=300)
        logs = [line.split(" ", 1)[1] for line in c.task_run_logs(run.id)]
        assert run.status == "success", logs
        assert "stdout F scored 3 answers" in logs

        # the task says what it scores, as a built-in listener task does
        shown = c.get_task(task.id)
        assert (shown.monitored_pipeline, shown.score_pipeline, shown.listener_model) == (
            "chat", "chat-lengths", {"name": "length-listener"})

        # by the monitored pipeline: both listeners' scores, each under its score pipeline
        both = c.listener_results("chat")
        assert set(both["score_pipeline"]) == {"chat-sentiment-scores", "chat-lengths"}
        mine = both[both["score_pipeline"] == "chat-lengths"]
        assert sorted(mine["out.length"]) == sorted(float(len(t)) for t in TEXTS)
        assert len(both[both["score_pipeline"] == "chat-sentiment-scores"]) == len(TEXTS)
        # by listener: the orchestration's name picks the user's alone, as a model's name picks the built-in's
        assert sorted(c.listener_results("chat", listener="length-listener")["out.length"]) == sorted(mine["out.length"])
        assert set(c.listener_results("chat", listener="sentiment")["score_pipeline"]) == {"chat-sentiment-scores"}

    # the summary and an assay of the user's score, through the same routes as the built-in's
    res = _post(sdk_server, "/v1/api/listeners/results", {"pipeline": "chat", "listener": "length-listener"})
    [scores] = [r for r in res["results"] if r["count"]]
    assert (scores["score_pipeline"], scores["count"]) == ("chat-lengths", len(TEXTS))
    assert scores["summary"]["length"]["count"] == len(TEXTS)
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(minutes=1)).isoformat()}
    assay = _post(sdk_server, "/v1/api/assays/run", {"pipeline": "chat", "listener": "length-listener", "score": "length",
                                                   "baseline": window, "window": window})
    assert (assay["pipeline"], assay["status"]) == ("chat-lengths", "OK")


def test_a_bad_monitored_pipeline_is_named(sdk_server: Server) -> None:
    with sdk_server.client() as c:
        orch = upload(c, {"main.py": "print('never runs')\n"}, "bad-listener")
        for args, field in (({"monitored_pipeline": 5}, "json.monitored_pipeline"),
                            ({"monitored_pipeline": "chat", "output_pipeline": ""}, "json.output_pipeline")):
            answer = httpx.post(f"{sdk_server.url}/v1/api/task/run_once", headers=sdk_server.headers, timeout=30,
                                json={"name": "bad", "workspace_id": 1, "orch_id": orch.id, "json": args})
            assert answer.status_code == 400 and field in answer.json()["msg"], answer.text
