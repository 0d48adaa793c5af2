"""The built-in llm-listener as a task like the others (D58), on the REAL runtime: each run is a process
of its own (not the runtime's), calls back with a key of its own that no other key can stand in for,
is held to its memory bound by the kernel, and its scores and counts land where they always did."""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from tests.listeners.listener_helpers import BAD, GOOD, llm_rows, now_ms
from tests.listeners.runtime_harness import Proc
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.runtime.services.listeners.run_api import ListenerRunApi, encode
from wallaroo_pulumi.runtime.services.listeners.store import TaskStore
from wallaroo_pulumi.runtime.store.db import SqliteDatabase
from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.scorers.schemas import listener_schemas
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.processes import process_tree

RUN_API = "/v1/api/task/listener_run"
HOG = byop_source("hog = bytearray(3 * 2**30)\nhog[::4096] = b'x' * len(hog[::4096])\nreturn {}", inference_cls="Hog")


@pytest.fixture
def runtime(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    store = LogStore(data / "logs")
    store.append("llm", llm_rows((GOOD + BAD) * 4, now_ms() - 60_000))
    store.append("slow", llm_rows((GOOD + BAD) * 400, now_ms() - 60_000, step_ms=1))
    store.close()
    srv = Proc("runtime", data).start()
    yield srv
    srv.stop()


def once(srv: Proc, **json: object) -> dict:
    t = srv.post("/v1/api/task/run_once", {"name": "once", "workspace_id": 1, "json": {
        "monitored_pipeline": "llm", "listener_model": {"name": "combined"}, "batch_size": 4, **json}})
    (run,) = srv.wait_runs(t["id"])
    return run


def test_a_builtin_run_is_a_process_of_its_own_with_a_key_of_its_own(runtime: Proc) -> None:
    run = once(runtime)
    assert run["status"] == "success" and (run["rows_read"], run["rows_scored"]) == (20, 20), (run, runtime.log_tail())
    assert run["window_start"] and run["window_end"]
    logs = runtime.post("/v1/api/task/get_logs_for_run", {"id": run["run_id"]})["logs"]
    text = "\n".join(logs)
    assert "[runtime] running the llm-listener run (listener model combined" in text, text
    pid = int(re.search(r"in this run's process, pid (\d+)", text).group(1))  # type: ignore[union-attr]
    assert pid != runtime.proc.pid  # type: ignore[union-attr]
    assert any(" stdout F done: read 20, scored 20" in line for line in logs), text
    # the scores carry the run's id, read as before (results, run_id=)
    res = runtime.post("/v1/api/listeners/results", {"pipeline": "llm", "listener": "combined",
                                                      "run_id": run["run_id"]})["results"][0]
    assert res["count"] == 20
    # its key was minted for it alone and is revoked now that it ended
    keys = runtime.post("/v1/api/keys/list", {"include_revoked": True})["keys"]
    mine = [k for k in keys if k["name"].endswith(f"run {run['run_id']}")]
    assert len(mine) == 1 and mine[0]["role"] == "deployer" and mine[0]["workspace_id"] == 1, mine
    assert mine[0]["revoked_at"], mine
    # the fixture's rows are one sealed segment, every row of which that run settled: the next run of the
    # stream skips it unread (D63), through the run API's page, sealed and settle_segments calls
    again = once(runtime)
    assert again["status"] == "success" and (again["rows_read"], again["rows_scored"]) == (0, 0), again
    assert any("settled 1 sealed segment: later runs of this stream skip them" in line for line in logs), text


def _run_processes(runtime: Proc) -> list[int]:
    """Processes of listener runs started by this test's runtime (other tests' runtimes run theirs beside it)."""
    found = []
    for pid in process_tree(runtime.proc.pid):  # type: ignore[union-attr]
        try:
            if b"listeners.task_main\x00listener-run.json" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def test_a_killed_run_s_process_is_gone_and_its_rows_are_scored_once_by_the_next(runtime: Proc) -> None:
    t = runtime.post("/v1/api/task/run_once", {"name": "slow", "workspace_id": 1, "json": {
        "monitored_pipeline": "slow", "listener_model": {"name": "combined"}, "batch_size": 1}})
    deadline = time.monotonic() + 120
    while (runs := runtime.post("/v1/api/task/list_task_runs", {"task_id": t["id"]}))[0]["rows_scored"] < 5:
        assert time.monotonic() < deadline and runs[0]["status"] == "running", (runs, runtime.log_tail())
        time.sleep(0.1)
    before = _run_processes(runtime)
    assert before, "no listener run process while the run scores"
    runtime.post("/v1/api/task/kill", {"id": t["id"]})
    (killed,) = runtime.wait_runs(t["id"])
    assert killed["status"] == "killed" and 0 < killed["rows_scored"] < 2000, killed
    deadline = time.monotonic() + 10
    while set(before) & set(_run_processes(runtime)):
        assert time.monotonic() < deadline, "the killed run's process is still there"
        time.sleep(0.1)
    rest = once(runtime, monitored_pipeline="slow", batch_size=512)
    assert rest["status"] == "success" and rest["rows_read"] == 2000, rest
    res = runtime.post("/v1/api/listeners/results", {"pipeline": "slow", "listener": "combined"})["results"][0]
    assert res["count"] == 2000  # each row scored once: the killed run's settled claims, then the rest


def test_the_run_api_answers_no_key_but_a_running_runs_own(runtime: Proc) -> None:
    """The admin key, a deployer key of the workspace, and a key named as a run's are all refused."""
    run = once(runtime)
    created = runtime.post("/v1/api/keys/create", {"name": f"task x run {run['run_id']}", "role": "deployer",
                                                   "workspace_id": 1})
    for token in (runtime.token, created["secret"]):
        r = httpx.post(f"{runtime.url}{RUN_API}/page", json={"start_ms": 0, "end_ms": now_ms(), "limit": 10},
                       headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and "lacks a listener run of its own" in r.text, r.text


def test_a_run_past_its_memory_bound_is_ended_by_the_kernel_naming_max_memory_mb(runtime: Proc,
                                                                                tmp_path: Path) -> None:
    health = httpx.get(f"{runtime.url}/health").json()["sidekick_sandbox"]
    if "memory" not in health.get("limits", {}).get("enforced", []):
        pytest.skip(f"this host cannot hold memory by the kernel: {health}")
    inp, out = listener_schemas("toxicity")
    path = tmp_path / "hog.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", HOG)
    with WallarooClient(runtime.url, runtime.token, timeout=120) as c:
        c.upload_model("hog", path, inp, out)
    run = once(runtime, listener_model={"name": "hog"}, max_memory_mb=64)
    assert run["status"] == "failure", run
    assert "max_memory_mb: the run's process was killed at its memory bound of 1088 MiB" in run["error"], run
    assert run["rows_scored"] == 0
    again = once(runtime)  # the rows it held are scored by the next run
    assert again["status"] == "success" and again["rows_scored"] == 20, again


def test_the_run_api_touches_only_what_the_runs_task_names(tmp_path: Path) -> None:
    """On the real database and log store: the pipelines and stream come from the run's task; score rows
    naming another run are refused; a settled run's key acts no more."""
    db = SqliteDatabase(tmp_path / "runtime.db")
    logs = LogStore(tmp_path / "logs")
    store = TaskStore(db)
    api = ListenerRunApi(store, logs)
    task = store.create_task(name="t", workspace_id=1, orch_id=None, monitored_pipeline="llm",
                             listener_model={"name": "toxicity"}, schedule=None, window_seconds=60,
                             timeout_seconds=60, args={"monitored_pipeline": "llm", "listener_model": "toxicity"},
                             next_run=None, last_tick=None)
    run = store.create_run(task["id"], "me", None)
    store.update_run(run["id"], key_id=7)
    with pytest.raises(Exception, match="lacks a listener run of its own"):
        api.scope(8, f"task {task['id']} run {run['id']}")
    scope = api.scope(7, f"task {task['id']} run {run['id']}")
    assert (scope.monitored, scope.score_pipeline, scope.stream) == ("llm", "llm-toxicity-scores",
                                                                     "llm->llm-toxicity-scores")
    rows = pa.table({"in.source_key": ["k"], "metadata.run_id": ["another-run"], "metadata.task_id": [task["id"]],
                     "metadata.source_pipeline": ["llm"]})
    with pytest.raises(Exception, match="metadata.run_id"):
        api.append_scores(scope, rows)
    assert api.claim(scope, ["a", "b"], [1, 2]).mine == [0, 1]
    api.settle(scope, ["a"], done=True)
    assert store.scored_count(scope.stream) == 1
    with pytest.raises(Exception, match="rows_read: expected a non-negative count"):
        api.report(scope, {"rows_read": -1})
    store.finish_run(run["id"], "succeeded")
    with pytest.raises(Exception, match="is succeeded, so its key no longer acts"):
        api.scope(7, f"task {task['id']} run {run['id']}")
    assert len(encode(rows)) > 0
    logs.close()
    db.close()
