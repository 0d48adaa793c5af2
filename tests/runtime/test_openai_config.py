"""A model version's openai_config: the column reaches databases made before it (NULL in old rows),
the upload metadata and models/insert_model_config set it, and bad configs are refused by field."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, Server, make_model
from wallaroo_pulumi.runtime.services.registry import Registry
from wallaroo_pulumi.runtime.store.db import SqliteDatabase
from wallaroo_pulumi.schemas import schema_to_b64

OLD_MODEL_VERSIONS = """CREATE TABLE model_versions (
    id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL, version TEXT NOT NULL UNIQUE, sha TEXT NOT NULL,
    file_name TEXT NOT NULL, file_size INTEGER NOT NULL, input_schema TEXT NOT NULL, output_schema TEXT NOT NULL,
    conversion TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (model_id, sha))"""


def test_a_database_from_before_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "runtime.db"
    with sqlite3.connect(path) as old:
        old.execute(OLD_MODEL_VERSIONS)
        old.execute("INSERT INTO model_versions VALUES (1, 1, 'v1', 'abc', 'm.zip', 1, 'i', 'o', '{}', 'ready', 0)")
    db = SqliteDatabase(path)
    try:
        row = db.one("SELECT * FROM model_versions WHERE id = 1")
        assert row is not None and "openai_config" in row and Registry.openai_config(row) is None
    finally:
        db.close()


def upload(server: Server, zip_path: Path, **metadata: object) -> httpx.Response:
    meta = {"name": "cfg-double", "input_schema": schema_to_b64(X_SCHEMA), "output_schema": schema_to_b64(Y_SCHEMA),
            "conversion": {"framework": "custom"}, **metadata}
    return httpx.post(f"{server.url}/v1/api/models/upload_and_convert", headers=server.headers, timeout=60,
                      files={"metadata": (None, json.dumps(meta), "application/json"),
                             "file": ("m.zip", zip_path.read_bytes(), "application/octet-stream")})


def post(server: Server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/api/models/{path}", headers=server.headers, json=body, timeout=30)


def test_upload_and_insert_model_config_set_it_and_refuse_bad_ones(server: Server, tmp_path: Path) -> None:
    zip_path = make_model(tmp_path, "cfg-double", DOUBLE)
    bad = upload(server, zip_path, openai_config={"enabled": True, "chat_completion_config": {"messages": []}})
    assert bad.status_code == 400 and "metadata.openai_config.chat_completion_config.messages" in bad.json()["msg"]

    done = upload(server, zip_path, openai_config={"enabled": True, "completion_config": {"max_tokens": 8}})
    assert done.status_code == 202, done.text
    version_id = done.json()["insert_models"]["returning"][0]["models"][0]["id"]
    got = post(server, "get_model_version_by_id", {"model_version_id": version_id}).json()
    assert got["model_version"]["config"]["openai"] == {"enabled": True, "completion_config": {"max_tokens": 8},
                                                         "chat_completion_config": {}}

    answer = post(server, "insert_model_config", {"model_version_id": version_id, "openai_config": {"enabled": False}})
    assert answer.status_code == 200 and answer.json()["model_config"]["openai"]["enabled"] is False
    refused = post(server, "insert_model_config", {"model_version_id": version_id, "tensor_fields": ["x"]})
    assert refused.status_code == 400 and refused.json()["msg"].startswith("tensor_fields: not configurable here")
    typo = post(server, "insert_model_config", {"model_version_id": version_id, "openai_config": {"enable": True}})
    assert typo.status_code == 400 and "openai_config.enable" in typo.json()["msg"]
    missing = post(server, "insert_model_config", {"model_version_id": 10**6, "openai_config": {"enabled": True}})
    assert missing.status_code == 404 and "model_version_id" in missing.json()["msg"]
