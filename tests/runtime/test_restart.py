"""kill -9 the runtime and start it again: nothing lost; a killed upload leaves no version."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import pandas as pd

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, make_model
from wallaroo_pulumi.client import NotFoundError, schema_to_b64


def test_kill9_restart_loses_nothing(make_server, tmp_path):
    srv = make_server("data")
    c = srv.client()
    mv = c.upload_model("survivor", make_model(tmp_path, "survivor", DOUBLE), X_SCHEMA, Y_SCHEMA)
    created = c.create_pipeline("survivor-pipe", steps=[mv])
    dep = c.deploy("survivor-pipe", pipeline_id=created.pipeline_id,
                   engine_config={"sidekicks": {"survivor": {"env": {"TOKEN_X": "s3cr3t-value"}}}})
    c.wait_for_deployment(f"survivor-pipe-{dep}", timeout_s=60)
    for i in range(3):
        c.infer("survivor-pipe", pd.DataFrame({"x": [float(i)]}))
    before = c.logs("survivor-pipe", limit=100, order="Asc")
    old_pids = [s.pid for s in c.deployment_status("survivor-pipe").sidekicks]
    assert_sealed_at_rest(srv, b"s3cr3t-value")  # sealed at rest (SQLite files, or PostgreSQL rows)

    srv.kill9()
    srv.start()
    c = srv.client()
    assert c.get_model_version(mv.id).sha == mv.sha
    p = c.get_pipeline("survivor-pipe")
    assert p.version == created.version and p.deployment_id == dep and p.deployed
    assert p.engine_config["sidekicks"]["survivor"]["env"] == {"TOKEN_X": "[secret]"}
    assert c.wait_for_deployment(f"survivor-pipe-{dep}", timeout_s=60) == "Running"
    assert c.infer("survivor-pipe", pd.DataFrame({"x": [5.0]}))["out.y"].tolist() == [10.0]
    after = c.logs("survivor-pipe", limit=100, order="Asc")
    assert after["in.x"].tolist()[: len(before)] == before["in.x"].tolist()
    assert after["in.x"].tolist()[-1] == 5.0
    assert "s3cr3t-value" not in srv.log_tail(10**6)
    assert_sealed_at_rest(srv, b"s3cr3t-value")
    new_pids = [s.pid for s in c.deployment_status("survivor-pipe").sidekicks]
    assert set(new_pids).isdisjoint(old_pids)


def test_killed_upload_leaves_no_visible_version(make_server, tmp_path):
    srv = make_server("data")
    model = make_model(tmp_path, "partial", DOUBLE).read_bytes()
    meta = json.dumps({"name": "partial", "input_schema": schema_to_b64(X_SCHEMA), "output_schema": schema_to_b64(Y_SCHEMA)})
    boundary = "XyZ"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
            f"Content-Type: application/json\r\n\r\n{meta}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.zip\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    declared = len(head) + 50 * 2**20
    u = urlparse(srv.url)
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(
        (f"POST /v1/api/models/upload_and_convert HTTP/1.1\r\nHost: {u.netloc}\r\n"
         f"Authorization: Bearer {srv.token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
         f"Content-Length: {declared}\r\n\r\n").encode() + head + model + b"\0" * (4 * 2**20)
    )
    tmp_dir = srv.data_dir / "artifacts" / "tmp"
    deadline = time.monotonic() + 10
    while not any(tmp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(tmp_dir.iterdir()), "the upload should be streaming into artifacts/tmp"
    srv.kill9()
    sock.close()

    srv.start()
    c = srv.client()
    try:
        c.list_model_versions("partial")
        raise AssertionError("a killed upload must not leave a model")
    except NotFoundError:
        pass
    assert list(tmp_dir.iterdir()) == []
    assert list((srv.data_dir / "artifacts" / "sha256").iterdir()) == []
    # a client that disconnects mid-upload (server alive) leaves nothing either
    u = urlparse(srv.url)
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(
        (f"POST /v1/api/models/upload_and_convert HTTP/1.1\r\nHost: {u.netloc}\r\n"
         f"Authorization: Bearer {srv.token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
         f"Content-Length: {declared}\r\n\r\n").encode() + head + model
    )
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 10
    while any(tmp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_dir.iterdir()) == []
    assert c.list_models() == []


SEALED = b"sealed:v1:"  # how a sealed value is stored (Fernet token after this prefix), written out here


def stored_plaintext(data_dir, secret: bytes) -> list[str]:
    """Files of the SQLite database (WAL included) that hold `secret` as is."""
    return [p.name for p in data_dir.glob("runtime.db*") if secret in p.read_bytes()]


def database_url(srv) -> str | None:
    """The PostgreSQL URL a runtime was started on (`--database`), None on the embedded SQLite."""
    return srv.args[srv.args.index("--database") + 1] if "--database" in srv.args else None


def stored_values(srv) -> dict[str, bytes]:
    """Everything the runtime's metadata store holds, by where it lies. SQLite: each database file
    (WAL included) as it is on disk. PostgreSQL: each column of every table outside the system
    schemas, read back as rows (bytes as stored, text as UTF-8, anything else as its text)."""
    url = database_url(srv)
    if url is None:
        return {p.name: p.read_bytes() for p in srv.data_dir.glob("runtime.db*")}
    import psycopg

    found: dict[str, bytes] = {}
    with psycopg.connect(url, autocommit=True) as con:
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                             "AND table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        assert tables, f"no tables in {url}"
        for schema, table in tables:
            cur = con.execute(f'SELECT * FROM "{schema}"."{table}"')
            names = [c.name for c in cur.description or []]
            for row in cur.fetchall():
                for name, value in zip(names, row, strict=True):
                    raw = (bytes(value) if isinstance(value, (bytes, bytearray, memoryview))
                           else value.encode() if isinstance(value, str)
                           else json.dumps(value, default=str).encode())
                    key = f"{schema}.{table}.{name}"
                    found[key] = found.get(key, b"") + raw + b"\0"
    return found


def assert_sealed_at_rest(srv, secret: bytes) -> None:
    """`secret` is stored nowhere as is, and a sealed value is stored (so the check read the right rows)."""
    stored = stored_values(srv)
    plain = [where for where, data in stored.items() if secret in data]
    assert not plain, f"plaintext {secret!r} stored in {plain}"
    assert any(SEALED in data for data in stored.values()), f"no sealed value stored in {sorted(stored)}"


def test_credentials_are_sealed_under_a_key_kept_apart_from_the_database(make_server, tmp_path):
    import sqlite3

    key = "a-key-from-a-kubernetes-secret-0123"
    srv = make_server("data", start=False)
    srv.env["WALLAROO_SECRETS_KEY"] = key
    srv.start()
    c = srv.client()
    mv = c.upload_model("sealed", make_model(tmp_path, "sealed", DOUBLE), X_SCHEMA, Y_SCHEMA)
    created = c.create_pipeline("sealed-pipe", steps=[mv])
    c.deploy("sealed-pipe", pipeline_id=created.pipeline_id,
             engine_config={"sidekicks": {"sealed": {"env": {"API_KEY": "sk-live-credential"}}}})
    c.wait_for_deployment("sealed-pipe", timeout_s=60)
    assert not (srv.data_dir / "secrets.key").exists()  # the key lives only where the env came from
    assert not stored_plaintext(srv.data_dir, b"sk-live-credential")

    # the same data dir under another key: the deployment fails, saying which key and what to do
    srv.stop()
    srv.env["WALLAROO_SECRETS_KEY"] = "some-other-key-entirely-9876"
    srv.start()
    c = srv.client()
    status = c.deployment_status("sealed-pipe")
    assert status.status == "Error", status
    assert "WALLAROO_SECRETS_KEY" in (status.reason or "") and "pulumi up" in (status.reason or "")
    assert key not in srv.log_tail(10**6)

    # a database from an older runtime: a plaintext row, and one deleted without secure_delete
    # (its bytes linger in free pages). Sealed and scrubbed at the next start; it still deploys.
    srv.stop()
    con = sqlite3.connect(srv.data_dir / "runtime.db", isolation_level=None)
    con.execute("PRAGMA user_version = 0")
    con.execute("PRAGMA secure_delete = OFF")  # as SQLite builds without SQLITE_SECURE_DELETE do
    con.execute("UPDATE deployments SET engine_config = ?",
                (json.dumps({"sidekicks": {"sealed": {"env": {"API_KEY": "sk-old-plaintext"}}}}),))
    con.execute("CREATE TABLE gone (v TEXT)")
    con.execute("INSERT INTO gone VALUES (?)", ("sk-deleted-long-ago " * 200,))
    con.execute("DROP TABLE gone")
    con.close()
    assert stored_plaintext(srv.data_dir, b"sk-deleted-long-ago")  # the residue is really there
    srv.start()
    c = srv.client()
    assert c.wait_for_deployment("sealed-pipe", timeout_s=60) == "Running"
    assert not stored_plaintext(srv.data_dir, b"sk-old-plaintext")
    assert not stored_plaintext(srv.data_dir, b"sk-deleted-long-ago")
