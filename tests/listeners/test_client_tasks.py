"""`WallarooClient`'s listener-task methods against the REAL runtime (CLI subprocess on loopback):
an echo "LLM" pipeline logs known texts; tasks score them; results and assays come back as pandas."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.listeners.listener_helpers import BAD, GOOD
from tests.listeners.runtime_harness import Proc
from wallaroo_pulumi import scorers as S
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.client.errors import ConflictError, NotFoundError, ValidationError, WallarooError
from wallaroo_pulumi.client.models import Task, TaskRun
from wallaroo_pulumi.testing.byop import byop_source

ECHO_LLM = byop_source('return {"generated_text": np.asarray(input_data["text"], dtype=object)}', inference_cls="Echo")

TEXTS = GOOD + BAD  # the echo pipeline "answers" each prompt with itself: known texts to score
NEVER = "0 0 1 1 *"  # 1 January, midnight: never fires during a test


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory):
    srv = Proc("runtime", tmp_path_factory.mktemp("client-tasks") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(runtime: Proc):
    with WallarooClient(runtime.url, runtime.token, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def echo(client: WallarooClient, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The `echo` pipeline, deployed, with TEXTS logged; returns the time range of the logs."""
    zpath = tmp_path_factory.mktemp("echo") / "echo.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("model.py", ECHO_LLM)
    mv = client.upload_model("echo-llm", zpath, pa.schema([("text", pa.string())]),
                             pa.schema([("generated_text", pa.string())]))
    created = client.create_pipeline("echo", steps=[mv])
    dep = client.deploy("echo", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    client.wait_for_deployment(f"echo-{dep}", timeout_s=120)
    start = datetime.now(UTC) - timedelta(seconds=1)
    out = client.infer("echo", pd.DataFrame({"text": TEXTS}))
    assert out["out.generated_text"].tolist() == TEXTS
    return {"start": start, "end": datetime.now(UTC) + timedelta(seconds=1)}


def _args(listener: str, **extra) -> dict:
    return {"monitored_pipeline": "echo", "listener_model": {"name": listener}, **extra}


def test_run_once_task_scores_the_logged_texts(client: WallarooClient, echo: dict) -> None:
    task = client.create_task("score-once", _args("combined"))
    assert isinstance(task, Task) and task.type == "run_once" and task.schedule is None
    assert task.monitored_pipeline == "echo" and task.score_pipeline == "echo-combined-scores"
    assert task.json_args["listener_model"] == {"name": "combined"}

    run = client.wait_for_run(task.id, timeout_s=120)
    assert isinstance(run, TaskRun) and run.task_id == task.id
    assert run.status == "success", (run, client.task_run_logs(run.id))
    assert (run.rows_read, run.rows_scored, run.rows_skipped) == (len(TEXTS), len(TEXTS), 0)
    assert run.started_at is not None and run.finished_at is not None and run.finished_at >= run.started_at
    assert client.get_task(task.id).last_run_status == "success"
    assert [r.id for r in client.list_task_runs(task.id)] == [run.id]

    logs = client.task_run_logs(run.id)
    assert logs and all(isinstance(x, str) for x in logs)
    assert any("starting listener model combined" in x for x in logs), logs
    assert client.task_run_logs(run.id, lines=1) == logs[-1:]

    df = client.listener_results("echo", listener="combined")
    assert isinstance(df, pd.DataFrame) and len(df) == len(TEXTS)
    score_cols = [f"out.{c}" for c in S.columns_for("combined")]
    assert set(score_cols) <= set(df.columns), df.columns.tolist()
    assert (df["score_pipeline"] == "echo-combined-scores").all()
    assert pd.api.types.is_datetime64_any_dtype(df["time"])
    # the scored texts are ours, and their scores are the scorers' own
    text_col = next(c for c in ("in.text", "in.generated_text") if c in df.columns)
    df = df.set_index(df[text_col]).loc[TEXTS]
    expect = S.score_all(TEXTS)
    for col in S.columns_for("combined"):
        assert df[f"out.{col}"].dtype == np.float64
        np.testing.assert_allclose(df[f"out.{col}"].to_numpy(), expect[col], rtol=1e-6)
    assert (df.loc[BAD, "out.toxicity"] > 0.9).all() and (df.loc[GOOD, "out.toxicity"] < 0.5).all()
    assert (df.loc[GOOD[:1], "out.sentiment_compound"] > 0.5).all()
    assert ((df["out.hate"] >= 0) & (df["out.hate"] <= 1)).all()

    # a second run-once task over the same window scores nothing twice
    again = client.wait_for_run(client.create_task("score-again", _args("combined")).id)
    assert again.status == "success" and again.rows_scored == 0
    assert len(client.listener_results("echo", listener="combined")) == len(TEXTS)
    # without `listener`: every score pipeline of `echo`
    assert set(client.listener_results("echo")["score_pipeline"]) == {"echo-combined-scores"}


def test_update_task_changes_the_schedule_in_place(client: WallarooClient, echo: dict) -> None:
    task = client.create_task("sched", _args("toxicity"), schedule=NEVER, timeout_s=30)
    assert task.type == "scheduled" and task.schedule == NEVER and task.timeout == 30
    assert task.next_run is not None and task.next_run.month == 1 and task.next_run.day == 1
    assert task.id in {t.id for t in client.list_tasks()}
    assert task.id in {t.id for t in client.list_tasks(workspace_id=1)}

    updated = client.update_task(task.id, schedule="*/5 * * * *")
    assert updated.id == task.id and updated.schedule == "*/5 * * * *"
    assert updated.next_run is not None and updated.next_run < task.next_run
    assert updated.next_run.minute % 5 == 0
    got = client.get_task(task.id)
    assert (got.id, got.schedule, got.name) == (task.id, "*/5 * * * *", "sched")
    assert len([t for t in client.list_tasks() if t.name == "sched"]) == 1  # no second task

    updated = client.update_task(task.id, json_args=_args("toxicity", window_seconds=600), timeout_s=45)
    assert updated.id == task.id and updated.json_args["window_seconds"] == 600 and updated.timeout == 45
    assert updated.schedule == "*/5 * * * *"

    # no run is due: waiting gives up with the state it saw
    with pytest.raises(WallarooError, match="no finished run after .*no run yet"):
        client.wait_for_run(task.id, timeout_s=0.5)

    with pytest.raises(ValidationError, match="schedule"):
        client.update_task(task.id, schedule="every minute")
    once = client.create_task("once-for-update", _args("toxicity"))
    with pytest.raises(ValidationError, match="runs once"):
        client.update_task(once.id, schedule="* * * * *")

    killed = client.kill_task(task.id)
    assert killed.id == task.id and killed.status == "killed" and killed.next_run is None
    with pytest.raises(ConflictError, match="killed"):
        client.update_task(task.id, schedule="* * * * *")


def test_delete_task_then_get_task_is_not_found(client: WallarooClient, echo: dict) -> None:
    task = client.create_task("to-delete", _args("toxicity"), schedule=NEVER)
    assert client.get_task(task.id).status == "started"
    assert client.delete_task(task.id) is None
    with pytest.raises(NotFoundError, match=task.id):
        client.get_task(task.id)
    with pytest.raises(NotFoundError):
        client.list_task_runs(task.id)
    with pytest.raises(NotFoundError):
        client.delete_task(task.id)
    assert task.id not in {t.id for t in client.list_tasks()}
    with pytest.raises(NotFoundError):
        client.task_run_logs("no-such-run")


def test_assay_returns_a_frame_with_status(client: WallarooClient, echo: dict) -> None:
    if client.listener_results("echo", listener="combined").empty:  # run alone: score first
        assert client.wait_for_run(client.create_task("for-assay", _args("combined")).id).status == "success"
    span = (echo["start"], echo["end"])
    df = client.assay("echo", "toxicity", baseline=span, window=span, listener="combined")
    assert isinstance(df, pd.DataFrame) and len(df) == 1
    assert {"start", "end", "status"} <= set(df.columns), df.columns.tolist()
    assert df["status"].tolist() == ["OK"]  # the window is the baseline: no drift

    # sliced window: one row per slice; slices past the logs have no data
    later = (echo["start"], echo["end"] + timedelta(seconds=30))
    sliced = client.assay("echo", "out.toxicity", baseline=span, window=later, listener="combined",
                          width_seconds=10)
    assert len(sliced) >= 3 and set(sliced["status"]) <= {"OK", "Warning", "Alert", "NoData"}
    assert sliced["status"].iloc[-1] == "NoData"
    assert pd.to_datetime(sliced["start"]).is_monotonic_increasing

    # naive datetimes are taken as UTC, like aware ones
    naive = tuple(t.replace(tzinfo=None) for t in span)
    assert client.assay("echo", "toxicity", baseline=naive, window=naive, listener="combined")["status"].tolist() == ["OK"]

    with pytest.raises(NotFoundError, match="no column 'out.nope'"):
        client.assay("echo", "nope", baseline=span, window=span, listener="combined")
    with pytest.raises(ValidationError, match="window: end must be after start"):
        client.assay("echo", "toxicity", baseline=span, window=(span[1], span[0]), listener="combined")


def test_wait_for_run_after_waits_for_the_next_scheduled_run(client: WallarooClient, echo: dict) -> None:
    task = client.create_task("every-second", _args("sentiment"), schedule="* * * * * *")
    try:
        first = client.wait_for_run(task.id, timeout_s=60)
        assert first.status == "success" and first.tick is not None
        # without `after`: the newest finished run at once (this one, or a later tick's on this seconds cron)
        latest = client.wait_for_run(task.id, timeout_s=60)
        assert latest.status != "running" and latest.tick >= first.tick
        second = client.wait_for_run(task.id, timeout_s=60, after=first)
        assert second.id != first.id and second.tick > first.tick and second.status == "success"
        assert client.wait_for_run(task.id, timeout_s=60, after=second.id).tick > second.tick
        # every logged row is scored once, however many runs fire
        assert sum(r.rows_scored for r in client.list_task_runs(task.id)) == len(TEXTS)
    finally:
        client.delete_task(task.id)


def test_empty_schedule_is_rejected_not_run_once(client: WallarooClient, echo: dict) -> None:
    before = {t.id for t in client.list_tasks()}
    with pytest.raises(ValidationError, match="schedule: '' is not a cron string"):
        client.create_task("blank", _args("toxicity"), schedule="")
    assert {t.id for t in client.list_tasks()} == before
