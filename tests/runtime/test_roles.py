"""`--role all|serve|scheduler` and `WALLAROO_ADMIN_TOKEN`, on REAL runtime subprocesses (loopback).

The Kubernetes layout in miniature: a `serve` process and a `scheduler` process on one data
directory, both taking the admin token from the environment."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from wallaroo_pulumi.testing.waiting import wait_until

from .conftest import REPO, Server, server_env

ENV_TOKEN = "k8s-secret-token-0123456789abcdef"
EVERY_SECOND = "* * * * * *"  # 6 fields: seconds last


def start(data_dir: Path, *args: str, token: str | None = ENV_TOKEN) -> Server:
    env = server_env()
    env.pop("WALLAROO_ADMIN_TOKEN", None)
    if token is not None:
        env["WALLAROO_ADMIN_TOKEN"] = token
    return Server(data_dir, list(args), env).start()


def post(srv: Server, path: str, body: dict, token: str | None = None) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {token or srv.token}"})


def runs(srv: Server, task_id: str) -> list[dict]:
    r = post(srv, "/v1/api/task/list_task_runs", {"task_id": task_id})
    assert r.status_code == 200, r.text
    return r.json()


def serve_and_scheduler(data: Path, servers: list[Server], *args: str) -> tuple[Server, Server]:
    """The Kubernetes layout in miniature: one serving replica and the scheduler on one data dir."""
    serve = start(data, "--role", "serve", *args)
    servers.append(serve)
    sched = start(data, "--role", "scheduler", *args)
    servers.append(sched)
    return serve, sched


def upload_slow_listener(srv: Server, tmp_path: Path) -> None:
    """A listener model whose load takes two minutes: its runs stay `running` while a test acts."""
    import pyarrow as pa

    from .conftest import make_model

    slow = make_model(tmp_path, "slow-listener", 'return {"score": np.zeros(len(input_data["text"]))}',
                      load_body="import time\ntime.sleep(120)")
    with srv.client() as c:
        c.upload_model("slow-listener", slow, pa.schema([("text", pa.string())]), pa.schema([("score", pa.float64())]))


@pytest.fixture
def servers():
    started: list[Server] = []
    yield started
    for srv in started:
        srv.stop()


def test_only_the_scheduler_role_fires_cron_ticks(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    serve = start(data, "--role", "serve")
    servers.append(serve)
    assert serve.token == ENV_TOKEN  # admin.token holds the env token, nothing else
    r = post(serve, "/v1/api/task/run_scheduled", {
        "name": "every-second", "workspace_id": 1, "schedule": EVERY_SECOND,
        "json": {"monitored_pipeline": "nothing-logged-yet", "listener_model": {"name": "toxicity"}}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]

    time.sleep(3.5)  # 3+ ticks due; the serving role must fire none of them
    assert runs(serve, tid) == [], serve.log_tail()

    sched = start(data, "--role", "scheduler")
    servers.append(sched)
    assert sched.token == ENV_TOKEN
    fired = wait_until(lambda: [x for x in runs(serve, tid) if x["status"] != "running"], 60,
                       f"a scheduled run fired by the scheduler role\n{sched.log_tail()}")
    assert fired[0]["status"] == "success", (fired, sched.log_tail())

    # stop the scheduler: the serving process keeps answering but fires nothing more
    sched.stop()
    before = runs(serve, tid)
    assert all(x["status"] != "running" for x in before)
    time.sleep(2.5)
    assert len(runs(serve, tid)) == len(before)
    assert serve.proc is not None and serve.proc.poll() is None


def test_role_all_fires_ticks_and_scheduler_does_not_redeploy(tmp_path: Path, servers: list[Server]) -> None:
    srv = start(tmp_path / "data", token=None)  # default role: all
    servers.append(srv)
    r = post(srv, "/v1/api/task/run_scheduled", {
        "name": "every-second", "workspace_id": 1, "schedule": EVERY_SECOND,
        "json": {"monitored_pipeline": "p", "listener_model": {"name": "toxicity"}}})
    assert r.status_code == 201, r.text
    wait_until(lambda: runs(srv, r.json()["id"]), 30, "a run fired by role all")


def test_env_admin_token_authenticates_and_a_wrong_one_is_401(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    # first start without the env var mints a token...
    minted = start(data, token=None)
    minted_token = minted.token
    assert minted_token.startswith("wlr_")
    minted.stop()

    # ...which the env token replaces: only its hash is stored, admin.token holds the env token
    srv = start(data)
    servers.append(srv)
    assert (data / "admin.token").read_text().strip() == ENV_TOKEN
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    ok = post(srv, "/v1/api/workspaces/list", {}, token=ENV_TOKEN)
    assert ok.status_code == 200, ok.text
    for wrong in ("k8s-secret-token-0123456789abcdeX", minted_token):
        bad = post(srv, "/v1/api/workspaces/list", {}, token=wrong)
        assert bad.status_code == 401 and bad.json()["source"] == "auth"
        assert ENV_TOKEN not in bad.text and wrong not in bad.text
    assert httpx.get(f"{srv.url}/health", timeout=5).status_code == 200  # open, as probes need
    import sqlite3

    with sqlite3.connect(data / "runtime.db") as con:
        stored = [row[0] for row in con.execute("SELECT sha256 FROM tokens WHERE name = 'admin'")]
    assert len(stored) == 1 and ENV_TOKEN not in stored[0] and len(stored[0]) == 64

    # a second replica on the same volume with the same secret agrees and rewrites nothing
    mtime = (data / "admin.token").stat().st_mtime_ns
    replica = start(data, "--role", "serve", "--no-redeploy")
    servers.append(replica)
    assert post(replica, "/v1/api/workspaces/list", {}, token=ENV_TOKEN).status_code == 200
    assert (data / "admin.token").stat().st_mtime_ns == mtime
    assert ENV_TOKEN not in srv.log_tail(100_000) and ENV_TOKEN not in replica.log_tail(100_000)


@pytest.mark.parametrize("value, expect", [
    ("", "empty"), ("short", "at least 16 characters"), ("has a space in it 0123456789", "printable ASCII")])
def test_bad_env_token_is_a_clear_startup_error(tmp_path: Path, value: str, expect: str) -> None:
    env = {**server_env(), "WALLAROO_ADMIN_TOKEN": value}
    proc = subprocess.run(
        [sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve", "--data-dir", str(tmp_path / "d")],
        env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "WALLAROO_ADMIN_TOKEN" in proc.stderr and expect in proc.stderr
    if value:
        assert value not in proc.stderr
    assert not (tmp_path / "d" / "admin.token").exists()


def test_kill_through_a_serving_replica_stops_the_schedulers_run(tmp_path: Path, servers: list[Server]) -> None:
    """The run executes in the scheduler process; the kill arrives at a serving replica."""
    serve, sched = serve_and_scheduler(tmp_path / "data", servers)
    upload_slow_listener(serve, tmp_path)
    r = post(serve, "/v1/api/task/run_scheduled", {
        "name": "slow", "workspace_id": 1, "schedule": EVERY_SECOND, "timeout": 300,
        "json": {"monitored_pipeline": "p", "listener_model": {"name": "slow-listener"}}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    (run,) = wait_until(lambda: runs(serve, tid), 30, "the scheduler to start a run")
    assert run["status"] == "running"

    killed = post(serve, "/v1/api/task/kill", {"id": tid})
    assert killed.status_code == 202 and killed.json()["status"] == "killed"
    done = wait_until(lambda: [x for x in runs(serve, tid) if x["status"] != "running"], 30,
                      f"the scheduler to stop the killed task's run\n{sched.log_tail()}")
    assert [x["status"] for x in done] == ["killed"] and done[0]["error"] == "killed on request"
    time.sleep(1.5)
    assert len(runs(serve, tid)) == 1  # a killed task fires no more ticks


def test_run_once_of_a_killed_serving_replica_is_failed_by_the_scheduler(tmp_path: Path, servers: list[Server]) -> None:
    """kill -9 of the replica running a run-once task: its run does not stay `running` forever;
    the scheduler fails it once the lease lapses. While the replica lives, it renews the lease."""
    serve, sched = serve_and_scheduler(tmp_path / "data", servers, "--listener-lease", "3s")
    upload_slow_listener(serve, tmp_path)
    r = post(serve, "/v1/api/task/run_once", {
        "name": "slow-once", "workspace_id": 1, "timeout": 300,
        "json": {"monitored_pipeline": "p", "listener_model": {"name": "slow-listener"}}})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    (run,) = wait_until(lambda: runs(sched, tid), 30, "the run-once run to start on the serving replica")
    assert run["status"] == "running"
    time.sleep(4.5)  # past one lease: only the live replica's heartbeats keep its run
    assert [x["status"] for x in runs(sched, tid)] == ["running"], sched.log_tail()

    serve.kill9()
    (done,) = wait_until(lambda: [x for x in runs(sched, tid) if x["status"] != "running"], 30,
                         f"the scheduler to fail the dead replica's run\n{sched.log_tail()}")
    assert done["status"] == "failure" and "no heartbeat for 3s" in done["error"], done


def test_env_token_leaves_the_environment_and_the_role_is_logged(tmp_path: Path, servers: list[Server]) -> None:
    """The role is logged (the token is not); the CLI removes the token from os.environ, so
    children the runtime spawns (pip for requirements) cannot inherit it."""
    srv = start(tmp_path / "data", "--role", "serve")
    servers.append(srv)
    assert "role serve, admin token from WALLAROO_ADMIN_TOKEN" in srv.log_tail()
    import os

    from wallaroo_pulumi.cli import main

    os.environ["WALLAROO_ADMIN_TOKEN"] = "x"  # the CLI pops it before validating
    try:
        assert main(["runtime", "serve", "--data-dir", str(tmp_path / "other")]) == 2
        assert "WALLAROO_ADMIN_TOKEN" not in os.environ
    finally:
        os.environ.pop("WALLAROO_ADMIN_TOKEN", None)


def test_serving_replicas_converge_on_deployments_and_share_logs(tmp_path: Path, servers: list[Server]) -> None:
    """Two `serve` replicas behind one Service: a deploy or undeploy through either one holds
    in both, and every row either one logs is seen by both, none lost."""
    import pyarrow as pa

    from .conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, make_model

    data = tmp_path / "data"
    a = start(data, "--role", "serve")
    servers.append(a)
    b = start(data, "--role", "serve")
    servers.append(b)
    with a.client() as ca, b.client() as cb:
        mv = ca.upload_model("double", make_model(tmp_path, "double", DOUBLE), X_SCHEMA, Y_SCHEMA)
        created = ca.create_pipeline("shared", steps=[mv])
        ca.deploy("shared", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
        ca.wait_for_deployment("shared", timeout_s=60)
        # b was already running: it picks the deployment up by itself. Polled without pause, so
        # that a status asked while b is part way through applying it must say Starting, not 404.
        cb.wait_for_deployment("shared", timeout_s=30, poll_s=0.0)

        for i in range(30):
            client = ca if i % 2 == 0 else cb
            out = client.infer("shared", pa.table({"x": [float(i)]}))
            assert out.column("out.y").to_pylist() == [2.0 * i], f"request {i}"
        for client in (ca, cb):  # a peer's rows are on disk within its log writer's round (D46)
            logged = wait_until(lambda c=client: [t for t in [c.logs("shared", limit=1000)] if len(t) >= 30], 5,
                                f"30 logged rows seen through {client.url}")[0]
            assert "in.x" in logged.columns, f"{client.url} logged {len(logged)} rows: {list(logged.columns)}"
            assert sorted(logged["in.x"].tolist()) == [float(i) for i in range(30)]

        cb.undeploy("shared")
        wait_until(lambda: ca.get_pipeline("shared").status == "undeployed"
                   and httpx.post(f"{a.url}/v1/api/pipelines/infer/shared", json=[{"x": 1.0}], headers={
                       **a.headers, "Content-Type": "application/json; format=pandas-records"}).status_code != 200,
                   30, "replica a to undeploy what b undeployed")


def test_status_between_storing_a_deploy_and_registering_it_says_starting(tmp_path: Path) -> None:
    """The status route runs on a worker thread, so it can look in after a deploy is stored and
    marked applied but before the event loop has handed it to the engine: the replica must say
    Starting there, never 404 'not deployed' (which made `wait_for_deployment` give up)."""
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from wallaroo_pulumi.runtime.app import create_app
    from wallaroo_pulumi.runtime.settings import RuntimeSettings

    app = create_app(RuntimeSettings(data_dir=tmp_path / "data", admin_token=SecretStr(ENV_TOKEN), listeners=False))
    rt = app.state.rt
    with TestClient(app, headers={"Authorization": f"Bearer {ENV_TOKEN}"}) as c:
        with rt.db.tx() as tx:  # rows as the deploy route stores them; no sidekick is started
            pipeline_id = tx.execute("INSERT INTO pipelines (workspace_id, name, created_at) VALUES (1, 'gap', 1.0)").lastrowid
            dep_id = tx.execute(
                "INSERT INTO deployments (pipeline_id, deploy_name, pipeline_version_id, engine_config, desired, "
                "created_at, updated_at) VALUES (?, 'gap', 1, '{}', 'deployed', 1.0, 1.0)", (pipeline_id,),
            ).lastrowid
        rt.deployments.applied[dep_id] = 1.0  # the gap: applied here, not yet in rt.engine.deployments
        assert rt.engine.get("gap") is None
        r = c.post("/v1/api/status/get_deployment", json={"name": f"gap-{dep_id}"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "Starting"

        # applying that row finds no version 1: the status says so, instead of Starting forever
        row = rt.db.one("SELECT * FROM deployments WHERE id = ?", (dep_id,))
        c.portal.call(rt.deployments.apply_row, row)
        status = c.post("/v1/api/status/get_deployment", json={"name": f"gap-{dep_id}"}).json()
        assert status["status"] == "Error" and "pipeline version 1 no longer exists" in str(status), status
