"""Listener scores read by run, newest first (issue 30), against the REAL runtime: the scores of a
run come back by its id however many older runs' rows the window holds (a data dir that outlived
its stack), and without a run the newest rows come first."""

from __future__ import annotations

import zipfile

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from tests.listeners.listener_helpers import BAD, GOOD
from tests.listeners.runtime_harness import Proc
from tests.listeners.test_client_tasks import ECHO_LLM
from wallaroo_pulumi.client import WallarooClient

OLD = GOOD[:3]  # what the first run scores
NEW = BAD[:2]  # what the second run scores, later


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory):
    srv = Proc("runtime", tmp_path_factory.mktemp("by-run") / "data").start()
    yield srv
    srv.stop()


def text_of(df: pd.DataFrame) -> list[str]:
    column = next(c for c in ("in.text", "in.generated_text") if c in df.columns)
    return df[column].tolist()


def test_scores_filtered_by_run_newest_first(runtime: Proc, tmp_path) -> None:  # noqa: ANN001
    with WallarooClient(runtime.url, runtime.token, timeout=120) as c:
        zpath = tmp_path / "echo.zip"
        with zipfile.ZipFile(zpath, "w") as zf:
            zf.writestr("model.py", ECHO_LLM)
        mv = c.upload_model("echo-llm", zpath, pa.schema([("text", pa.string())]),
                            pa.schema([("generated_text", pa.string())]))
        created = c.create_pipeline("echo", steps=[mv])
        dep = c.deploy("echo", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
        c.wait_for_deployment(f"echo-{dep}", timeout_s=120)
        args = {"monitored_pipeline": "echo", "listener_model": {"name": "sentiment"}}

        for text in OLD:  # one request per row: each logged at a time of its own
            c.infer("echo", pd.DataFrame({"text": [text]}))
        first = c.wait_for_run(c.create_task("first", args).id, timeout_s=120)
        assert (first.status, first.rows_scored) == ("success", len(OLD))
        for text in NEW:
            c.infer("echo", pd.DataFrame({"text": [text]}))
        second = c.wait_for_run(c.create_task("second", args).id, timeout_s=120)
        assert (second.status, second.rows_scored) == ("success", len(NEW))

        # by run: that run's rows only, newest first, even with a limit smaller than the window
        mine = c.listener_results("echo", listener="sentiment", run_id=second.id, limit=len(NEW))
        assert text_of(mine) == NEW[::-1]
        assert set(mine["metadata.run_id"]) == {second.id}
        older = c.listener_results("echo", listener="sentiment", run_id=first.id)
        assert text_of(older) == OLD[::-1] and set(older["metadata.run_id"]) == {first.id}
        assert c.listener_results("echo", listener="sentiment", run_id="no-such-run").empty

        # without a run: newest first, so a small limit shows the latest run's rows
        latest = c.listener_results("echo", listener="sentiment", limit=len(NEW))
        assert text_of(latest) == NEW[::-1]
        everything = c.listener_results("echo", listener="sentiment")
        assert text_of(everything) == (OLD + NEW)[::-1]
        assert everything["time"].is_monotonic_decreasing
        assert text_of(c.listener_results("echo", listener="sentiment", newest_first=False)) == OLD + NEW

    # the API itself: count and summary are the run's; a bad order is named
    body = {"pipeline": "echo", "listener": "sentiment", "run_id": first.id}
    res = runtime.post("/v1/api/listeners/results", body)["results"][0]
    assert (res["count"], res["returned"]) == (len(OLD), len(OLD))
    assert res["summary"]["sentiment_compound"]["count"] == len(OLD)
    bad = httpx.post(f"{runtime.url}/v1/api/listeners/results", json={**body, "order": "sideways"},
                     headers=runtime.headers, timeout=30)
    assert bad.status_code == 400 and "order" in bad.text
