"""Scheduled listener runs in a real server process survive `kill -9` without scoring a row twice
and without running a cron tick twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa

from wallaroo_pulumi.runtime.logstore import LogStore

from listeners.listener_helpers import BAD, GOOD, llm_rows, now_ms

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def start(data: Path) -> tuple[subprocess.Popen, str]:
    info = data / "listener_server.json"
    info.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, str(HERE / "listener_server.py"), str(data)], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(data / "server.log", "ab"))
    deadline = time.time() + 60
    while time.time() < deadline:
        if info.exists():
            url = json.loads(info.read_text())["url"]
            try:
                httpx.post(f"{url}/v1/api/task/list", json={}, timeout=2).raise_for_status()
                return p, url
            except httpx.HTTPError:
                pass
        if p.poll() is not None:
            raise RuntimeError(f"server exited: {(data / 'server.log').read_text()[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def append(data: Path, texts: list[str], t0: int, step_ms: int = 1) -> None:
    store = LogStore(data / "logs")
    store.append("llm", llm_rows(texts, t0, step_ms=step_ms))
    store.close()


def post(url: str, path: str, body: dict) -> dict:
    r = httpx.post(f"{url}{path}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_kill_9_restart_scores_every_row_once_and_fires_no_tick_twice(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    texts = (GOOD + BAD) * 2000  # 10k rows: each run takes a while, so the kill lands mid-run
    append(data, texts, now_ms() - 300_000)
    proc, url = start(data)
    try:
        task = post(url, "/v1/api/task/run_scheduled", {
            "name": "restart", "workspace_id": 1, "schedule": "* * * * * */2", "timeout": 300,
            "json": {"monitored_pipeline": "llm", "listener_model": {"name": "combined"},
                     "window_seconds": 3600, "batch_size": 32},
        })
        tid = task["id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            runs = post(url, "/v1/api/task/list_task_runs", {"id": tid})
            if runs and runs[0]["rows_scored"] > 200:
                break
            time.sleep(0.05)
        assert runs and runs[0]["status"] == "running", runs
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    append(data, GOOD * 10, now_ms() - 1000)  # new rows while the runtime is down
    total = len(texts) + 30
    proc, url = start(data)
    try:
        deadline = time.time() + 180
        scored = 0
        while time.time() < deadline:
            runs = post(url, "/v1/api/task/list_task_runs", {"id": tid})
            if not any(r["status"] == "running" for r in runs):
                store = LogStore(data / "logs")  # read-only use while the server owns the dir
                scored = store.query("llm-combined-scores", None, None, 10_000_000, "Asc", None).table.num_rows
                if scored >= total:
                    break
            time.sleep(0.3)
        runs = post(url, "/v1/api/task/list_task_runs", {"id": tid})
        interrupted = [r for r in runs if r["status"] == "failed"]
        assert interrupted and "interrupted" in interrupted[-1]["error"], runs
        ticks = [r["tick"] for r in runs]
        assert len(ticks) == len(set(ticks)), ticks
        assert sum(r["rows_scored"] for r in runs if r["status"] == "succeeded") <= total
        logs = post(url, "/v1/api/task/get_logs_for_run", {"id": interrupted[-1]["id"], "lines": 5})["logs"]
        assert any("interrupted" in line for line in logs)
        post(url, "/v1/api/task/kill", {"id": tid})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    out = LogStore(data / "logs").query("llm-combined-scores", None, None, 10_000_000, "Asc", None).table
    keys = out.column("in.source_key").to_pylist()
    assert len(keys) == total, (len(keys), total)
    assert len(set(keys)) == total
    assert out.column("time").type == pa.timestamp("ms", tz="UTC")
