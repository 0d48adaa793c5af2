"""Scheduled listener runs in a real server process survive `kill -9` without scoring a row twice
and without running a cron tick twice: on the real runtime (with sidekick listener processes)
when it can run, and on a bare server carrying only the listener router."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from tests.listeners.listener_helpers import BAD, GOOD, llm_rows, now_ms
from tests.listeners.runtime_harness import Proc
from wallaroo_pulumi.runtime.store.logs import LogStore


def append(data: Path, texts: list[str], t0: int, step_ms: int = 1) -> None:
    store = LogStore(data / "logs")
    store.append("llm", llm_rows(texts, t0, step_ms=step_ms))
    store.close()


@pytest.mark.parametrize("kind", ["runtime", "bare"])
def test_kill_9_restart_scores_every_row_once_and_fires_no_tick_twice(tmp_path: Path, kind: str):
    data = tmp_path / "data"
    data.mkdir()
    texts = (GOOD + BAD) * 8000  # 40k rows: each run takes a while (runs score ~5-10k rows/s), so the kill lands mid-run
    append(data, texts, now_ms() - 300_000)
    srv = Proc(kind, data).start()
    try:
        task = srv.post("/v1/api/task/run_scheduled", {
            "name": "restart", "workspace_id": 1, "schedule": "* * * * * */2", "timeout": 300,
            "json": {"monitored_pipeline": "llm", "listener_model": {"name": "combined"},
                     "window_seconds": 3600, "batch_size": 32},
        })
        tid = task["id"]
        deadline = time.time() + 90
        runs: list = []
        while time.time() < deadline:
            runs = srv.post("/v1/api/task/list_task_runs", {"task_id": tid})
            if runs and runs[0]["status"] == "running" and runs[0]["rows_scored"] > 200:
                break
            time.sleep(0.05)
        assert runs and runs[0]["status"] == "running", (runs, srv.log_tail())
    finally:
        srv.kill9()

    append(data, GOOD * 10, now_ms() - 1000)  # new rows while the runtime is down
    total = len(texts) + 30
    srv = Proc(kind, data).start()
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            runs = srv.post("/v1/api/task/list_task_runs", {"task_id": tid})
            if sum(r["rows_scored"] for r in runs if r["status"] == "success") and \
                    not any(r["status"] == "running" for r in runs):
                res = srv.post("/v1/api/listeners/results", {"pipeline": "llm", "limit": 1})
                if res["results"][0]["count"] >= total:
                    break
            time.sleep(0.3)
        runs = srv.post("/v1/api/task/list_task_runs", {"task_id": tid})
        interrupted = [r for r in runs if r["status"] == "failure"]
        assert interrupted and "interrupted" in interrupted[-1]["error"], runs
        ticks = [r["tick"] for r in runs]
        assert len(ticks) == len(set(ticks)), ticks
        logs = srv.post("/v1/api/task/get_logs_for_run", {"id": interrupted[-1]["run_id"], "lines": 5})["logs"]
        assert any("interrupted" in line for line in logs)
        srv.post("/v1/api/task/kill", {"id": tid})
    finally:
        srv.stop()
    out = LogStore(data / "logs").query("llm-combined-scores", None, None, 10_000_000, "Asc", None).table
    keys = out.column("in.source_key").to_pylist()
    assert len(keys) == total, (len(keys), total)
    assert len(set(keys)) == total
    assert out.column("time").type == pa.timestamp("ms", tz="UTC")
