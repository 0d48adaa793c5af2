"""The listener HTTP API (Wallaroo task shapes + results + assays) on a real app and data dir."""

from __future__ import annotations

import time

import numpy as np
from fastapi.testclient import TestClient

from tests.listeners.listener_helpers import BAD, GOOD, llm_rows, now_ms
from tests.listeners.listener_server import listener_app
from wallaroo_pulumi.orchestration import ORCHESTRATION_ID
from wallaroo_pulumi.runtime.services.listeners import ListenerService

JSON = {"monitored_pipeline": "llm", "listener_model": {"name": "combined"}, "window_seconds": 7200, "batch_size": 64}


def client(db, logstore) -> TestClient:
    return TestClient(listener_app(ListenerService(db, logstore, executor="scorer", tick_seconds=0.05)))


def wait_runs(c, tid, n=1, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = c.post("/v1/api/task/list_task_runs", json={"task_id": tid}).json()
        if len(runs) >= n and all(r["status"] != "running" for r in runs):
            return runs
        time.sleep(0.05)
    raise AssertionError(runs)


def test_task_lifecycle_and_shapes(db, logstore):
    logstore.append("llm", llm_rows(GOOD + BAD, now_ms() - 60_000))
    with client(db, logstore) as c:
        r = c.post("/v1/api/task/run_once", json={"name": "once", "workspace_id": 1, "json": JSON})
        assert r.status_code == 201, r.text
        t = r.json()
        assert t["orch_id"] == ORCHESTRATION_ID and t["type"] == "run_once" and t["schedule"] is None
        assert t["score_pipeline"] == "llm-combined-scores" and t["input_data"]["monitored_pipeline"] == "llm"
        assert t["killed"] is False
        runs = wait_runs(c, t["id"])
        assert runs[0]["status"] == "success" and runs[0]["task"] == t["id"]
        assert runs[0]["rows_scored"] == 5
        got = c.post("/v1/api/task/get_by_id", json={"id": t["id"]}).json()
        assert got["last_run_status"] == "success" and got["status"] == "started"
        assert [r["run_id"] for r in got["last_runs"]] == [runs[0]["run_id"]]
        assert c.post("/v1/api/task/get_by_id", json={"id": t["id"], "run_limit": 0}).json()["last_runs"] == []
        details = c.post("/v1/api/task/get_run_details", json={"pod_id": runs[0]["run_id"], "task": t["id"]}).json()
        assert details["run_id"] == runs[0]["run_id"] and details["status"] == "success"
        assert c.post("/v1/api/task/list_task_runs", json={"task_id": t["id"], "status": "failure"}).json() == []
        logs = c.post("/v1/api/task/get_logs_for_run", json={"id": runs[0]["run_id"], "lines": 2}).json()["logs"]
        assert len(logs) == 2 and "done" in logs[-1]

        s = c.post("/v1/api/task/run_scheduled", json={"name": "sched", "workspace_id": 1, "json": JSON,
                                                        "schedule": "0 * * * *", "timeout": 120}).json()
        assert s["type"] == "scheduled" and s["status"] == "started" and s["next_run"].endswith(":00:00Z")
        u = c.post("/v1/api/task/update", json={"id": s["id"], "schedule": "*/5 * * * *",
                                                 "json": {**JSON, "batch_size": 8}}).json()
        assert u["schedule"] == "*/5 * * * *" and u["input_data"]["batch_size"] == 8
        assert {x["id"] for x in c.post("/v1/api/task/list", json={}).json()} == {t["id"], s["id"]}
        assert c.post("/v1/api/task/list", json={"orch_sha": "0" * 64}).json() == []
        k = c.post("/v1/api/task/kill", json={"id": s["id"]})
        assert k.status_code == 202 and k.json()["status"] == "killed" and k.json()["killed"] is True
        assert k.json()["next_run"] is None
        assert [x["id"] for x in c.post("/v1/api/task/list", json={"killed": True}).json()] == [s["id"]]
        assert c.post("/v1/api/task/update", json={"id": s["id"], "schedule": "* * * * *"}).status_code == 409
        d = c.post("/v1/api/task/delete", json={"id": s["id"]}).json()
        assert d == {"id": s["id"], "status": "deleted"}
        nf = c.post("/v1/api/task/get_by_id", json={"id": s["id"]})
        assert nf.status_code == 404 and nf.json()["status"] == "error" and nf.json()["error"].startswith("id:")

        res = c.post("/v1/api/listeners/results", json={"pipeline": "llm", "order": "Asc"}).json()
        (only,) = res["results"]
        newest_first = c.post("/v1/api/listeners/results", json={"pipeline": "llm"}).json()["results"][0]["records"]
        assert newest_first == only["records"][::-1]  # the default order is newest first
        assert only["score_pipeline"] == "llm-combined-scores" and only["count"] == 5
        rec = only["records"][3]
        assert set(rec) >= {"time", "in", "out", "anomaly", "metadata"}
        assert rec["out"]["toxicity"] > 0.9 and rec["in"]["text"] == BAD[0]
        assert only["summary"]["toxicity"]["count"] == 5
        assert c.post("/v1/api/listeners/builtins", json={}).json()[0]["name"] == "toxicity"


def test_bad_requests_name_the_field(db, logstore):
    with client(db, logstore) as c:
        r = c.post("/v1/api/task/run_scheduled", json={"name": "x", "workspace_id": 1, "json": JSON,
                                                        "schedule": "every hour"})
        assert r.status_code == 400
        body = r.json()
        assert body["status"] == "error" and body["error"].startswith("schedule: 'every hour'")
        assert "e.g. '0 * * * *'" in body["error"]
        r = c.post("/v1/api/task/run_scheduled", json={"name": "x", "workspace_id": 1, "json": JSON})
        assert r.status_code == 400 and r.json()["error"].startswith("schedule:")
        r = c.post("/v1/api/task/run_once", json={"name": "x", "workspace_id": 1, "json": {**JSON, "window_seconds": -1}})
        assert r.status_code == 400 and "json.window_seconds" in r.json()["error"]
        r = c.post("/v1/api/task/run_once", json={"name": "x", "workspace_id": 1, "json": JSON, "orch_id": "abc"})
        assert r.status_code == 400 and r.json()["error"].startswith("orch_id:")
        r = c.post("/v1/api/task/list_task_runs", json={"id": "x"})
        assert r.status_code == 400 and r.json()["error"].startswith("task_id:")
        r = c.post("/v1/api/task/list_task_runs", json={"task_id": "x", "status": "done"})
        assert r.status_code == 400 and r.json()["error"].startswith("status: expected one of all, running")
        r = c.post("/v1/api/task/run_once", json={"name": "x", "json": JSON, "timeout": "soon"})
        assert r.status_code == 400 and r.json()["error"].startswith("timeout:")
        assert c.post("/v1/api/task/list", json={}).json() == []


def test_assay_flags_a_shifted_window(db, logstore):
    rng = np.random.default_rng(3)
    day = 86_400_000
    t0 = now_ms() - 3 * day
    # baseline day: 5% toxic answers; a day like it; then a day with 40% toxic
    base = [BAD[i % 2] if rng.random() < 0.05 else GOOD[i % 3] for i in range(2000)]
    same = [BAD[i % 2] if rng.random() < 0.05 else GOOD[i % 3] for i in range(2000)]
    shifted = [BAD[i % 2] if rng.random() < 0.40 else GOOD[i % 3] for i in range(2000)]
    logstore.append("llm", llm_rows(base, t0, step_ms=40))
    logstore.append("llm", llm_rows(same, t0 + day, step_ms=40))
    logstore.append("llm", llm_rows(shifted, t0 + 2 * day, step_ms=40))
    with client(db, logstore) as c:
        t = c.post("/v1/api/task/run_once", json={"name": "a", "workspace_id": 1,
                                                   "json": {**JSON, "window_seconds": 4 * 86400}}).json()
        assert wait_runs(c, t["id"])[0]["rows_scored"] == 6000
        body = {"pipeline": "llm", "listener": "combined", "score": "toxicity",
                "baseline": {"start": t0, "end": t0 + day},
                "window": {"start": t0 + day, "end": t0 + 3 * day, "width_seconds": 86400}}
        r = c.post("/v1/api/assays/run", json=body)
        assert r.status_code == 200, r.text
        a = r.json()
        assert [w["status"] for w in a["windows"]] == ["OK", "Alert"], [(w["score"], w["bins"]) for w in a["windows"]]
        assert a["status"] == "Alert" and a["pipeline"] == "llm-combined-scores"
        assert a["windows"][1]["score"] > 0.1 and a["windows"][0]["score"] < 0.05
        for metric in ("MaxDiff", "SumDiff"):
            m = c.post("/v1/api/assays/run", json={**body, "metric": metric}).json()
            assert m["windows"][1]["status"] == "Alert" and m["windows"][1]["metric"] == metric
        bad = c.post("/v1/api/assays/run", json={**body, "metric": "KL"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("metric:")
        missing = c.post("/v1/api/assays/run", json={**body, "score": "nope"})
        assert missing.status_code == 404 and "out.nope" in missing.json()["error"]
        nob = c.post("/v1/api/assays/run", json={**body, "baseline": {"start": t0}})
        assert nob.status_code == 400 and nob.json()["error"].startswith("baseline:")
