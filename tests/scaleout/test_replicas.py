"""Serving replicas as separate processes with separate data dirs (as on separate nodes),
sharing one PostgreSQL database and one bucket: a deploy through one holds in all, artifacts
reach the others through the bucket, and a replica killed mid-upload leaves nothing visible."""

from __future__ import annotations

import os
import threading
import zipfile
from pathlib import Path

import boto3
import httpx
import pyarrow as pa
import pytest

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model
from tests.scaleout.conftest import scaleout_args, scaleout_env
from wallaroo_pulumi.client import NotFoundError
from wallaroo_pulumi.testing.byop import byop_source
from wallaroo_pulumi.testing.postgres import PostgresServer
from wallaroo_pulumi.testing.s3 import S3Server
from wallaroo_pulumi.testing.waiting import wait_until


@pytest.fixture
def replicas(tmp_path: Path, postgres: PostgresServer, s3: S3Server):
    """replicas(n, *args) -> n replicas (`--role serve` unless args say otherwise), each on its own
    data dir, on one database and bucket."""
    started: list[Server] = []
    database, bucket = postgres.new_database(), s3.new_bucket()

    def make(n: int, *args: str) -> list[Server]:
        for _ in range(n):
            srv = Server(tmp_path / f"node-{len(started)}",
                         [*(args or ("--role", "serve")), *scaleout_args(postgres, s3, database, bucket)], scaleout_env(s3))
            started.append(srv.start())
        return started[-n:]

    make.bucket = bucket  # type: ignore[attr-defined]
    make.database = database  # type: ignore[attr-defined]
    yield make
    for srv in started:
        srv.stop()


def test_deploy_through_one_replica_infer_through_all(replicas, tmp_path: Path) -> None:
    a, b, c = replicas(3)
    clients = [s.client() for s in (a, b, c)]
    mv = clients[0].upload_model("double", make_model(tmp_path, "double", DOUBLE), X_SCHEMA, Y_SCHEMA)
    created = clients[0].create_pipeline("shared", steps=[mv])
    clients[0].deploy("shared", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    for client in clients:  # the others converge by themselves, fetching the artifact from the bucket
        client.wait_for_deployment("shared", timeout_s=90)
    for srv in (b, c):
        assert (srv.data_dir / "artifacts" / "sha256" / mv.sha).exists(), f"{srv.data_dir} has no copy of the artifact"
    for i in range(12):
        out = clients[i % 3].infer("shared", pa.table({"x": [float(i)]}))
        assert out.column("out.y").to_pylist() == [2.0 * i], f"request {i}"
    # every replica reads every replica's rows (its own at once, the others' once shipped), each once
    for client in clients:
        wait_until(lambda client=client: len(client.logs("shared", limit=1000)) == 12, 30, f"{client.url} to read 12 rows")
        assert sorted(client.logs("shared", limit=1000)["in.x"].tolist()) == [float(i) for i in range(12)]
    # paging with a cursor across the writers' segments: every row once
    seen, cursor = [], None
    while True:
        page = httpx.post(f"{a.url}/v1/api/pipelines/get_logs", timeout=30,
                          headers={**a.headers, "Accept": "application/vnd.apache.arrow.file"},
                          json={"pipeline_name": "shared", "workspace_id": 1, "page_size": 5, "cursor": cursor})
        assert page.status_code == 200, page.text
        seen += pa.ipc.open_file(pa.py_buffer(page.content)).read_all().column("in.x").to_pylist()
        cursor = page.headers.get("x-iteration-cursor")
        if not cursor:
            break
    assert sorted(seen) == [float(i) for i in range(12)]
    # a key made through one replica works through another (an unknown token re-reads the keys at most every
    # 0.5 s); revoked through a third, it stops there too (within the 2 s a replica's copy may be stale)
    created = clients[0].create_key("web", "inference", pipelines=["shared"])
    secret = created.secret.get_secret_value()

    def infer_with_key(srv: Server) -> int:
        return httpx.post(f"{srv.url}/v1/api/pipelines/infer/shared", json=[{"x": 1.0}], timeout=30, headers={
            "Authorization": f"Bearer {secret}", "Content-Type": "application/json; format=pandas-records"}).status_code

    wait_until(lambda: infer_with_key(c) == 200, 10, "the new key to work on replica c")
    clients[1].revoke_key(created.key.id)
    wait_until(lambda: infer_with_key(c) == 401, 10, "the revocation to hold on replica c")
    clients[1].undeploy("shared")
    for client in clients:
        wait_until(lambda client=client: client.get_pipeline("shared").status == "undeployed", 30, "undeploy to converge")


def big_model(path: Path, size: int) -> Path:
    """A valid BYOP zip carrying `size` incompressible bytes (stored, not deflated)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("model.py", byop_source(DOUBLE))
        zf.writestr("weights.bin", os.urandom(size))
    return path


def test_a_replica_killed_mid_upload_to_the_bucket_leaves_nothing_visible(replicas, s3: S3Server, tmp_path: Path) -> None:
    a, b = replicas(2)
    bucket = replicas.bucket.removeprefix("s3://").split("/", 1)[0]
    api = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                       aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"])
    zip_path = big_model(tmp_path / "big.zip", 96 * 2**20)

    def upload() -> None:
        try:
            a.client(timeout=120).upload_model("big", zip_path, X_SCHEMA, Y_SCHEMA)
        except Exception:  # noqa: BLE001 - the replica dies under it
            pass

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    # kill -9 once the replica is streaming the artifact to the bucket (a multipart upload in progress)
    wait_until(lambda: api.list_multipart_uploads(Bucket=bucket).get("Uploads"), 120, "a multipart upload to the bucket")
    a.kill9()
    uploader.join(30)

    with b.client() as client:
        with pytest.raises(NotFoundError):
            client.list_model_versions("big")
        assert [m for m in client.list_models() if m.name == "big"] == []
    listed = api.list_objects_v2(Bucket=bucket, Prefix="wallaroo/artifacts/")
    assert listed.get("KeyCount", 0) == 0, listed.get("Contents")


def test_a_replica_killed_mid_listener_run_fails_over_and_no_row_is_scored_twice_or_lost(
    replicas, s3: S3Server, tmp_path: Path
) -> None:
    """Rows logged by another writer; a run-once listener run on replica A, kill -9'd mid-run; the
    scheduler (its own node) fails the run within the lease; a new run through replica B scores
    the rest: every source row scored exactly once, read back through B."""
    from tests.listeners.listener_helpers import BAD, GOOD, llm_rows, now_ms
    from wallaroo_pulumi.runtime.store.db_postgres import PostgresDatabase
    from wallaroo_pulumi.runtime.store.logs.shared import SharedLogStore
    from wallaroo_pulumi.runtime.store.object_store import ObjectStore

    a, b = replicas(2, "--role", "serve", "--listener-lease", "3s")
    (sched,) = replicas(1, "--role", "scheduler", "--listener-lease", "3s")
    texts = (GOOD + BAD) * 400  # 2k rows: the kill lands mid-run
    seeder_db = PostgresDatabase(replicas.database)
    seeder = SharedLogStore(tmp_path / "seeder" / "logs", seeder_db, ObjectStore(replicas.bucket, s3.env))
    seeder.append("llm", llm_rows(texts, now_ms() - 300_000, step_ms=1))  # another writer's rows
    seeder.close()
    seeder_db.close()

    def run_once(srv: Server, name: str) -> str:
        r = httpx.post(f"{srv.url}/v1/api/task/run_once", headers=srv.headers, timeout=30, json={
            "name": name, "workspace_id": 1, "timeout": 300,
            "json": {"monitored_pipeline": "llm", "listener_model": {"name": "combined"}, "window_seconds": 3600,
                     "batch_size": 16}})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def runs(srv: Server, tid: str) -> list[dict]:
        r = httpx.post(f"{srv.url}/v1/api/task/list_task_runs", headers=srv.headers, timeout=30, json={"task_id": tid})
        assert r.status_code == 200, r.text
        return r.json()

    first = run_once(a, "first")
    wait_until(lambda: [r for r in runs(b, first) if r["status"] == "running" and r["rows_scored"] > 50], 120,
               f"the run on replica a to score some rows: {runs(b, first)}\n{a.log_tail()}")
    a.kill9()
    (failed,) = wait_until(lambda: [r for r in runs(b, first) if r["status"] != "running"], 30,
                           f"the scheduler to fail the dead replica's run\n{sched.log_tail()}")
    assert failed["status"] == "failure" and "no heartbeat" in failed["error"], failed

    second = run_once(b, "second")
    (done,) = wait_until(lambda: [r for r in runs(b, second) if r["status"] != "running"], 240,
                         f"the second run to finish\n{b.log_tail()}")
    assert done["status"] == "success", done
    with b.client() as client:
        scores = client.logs("llm-combined-scores", limit=100_000, order="Asc")
    keys = scores["in.source_key"].tolist()
    assert len(keys) == len(texts) and len(set(keys)) == len(texts), (len(keys), len(set(keys)), len(texts))
