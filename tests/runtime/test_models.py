"""Auth, upload / version / dedupe, upload validation, streaming limits."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys

import httpx
import pytest

from tests.runtime.conftest import DOUBLE, X_SCHEMA, Y_SCHEMA, make_model, make_zip
from wallaroo_pulumi.client import AuthError, NotFoundError, ValidationError, WallarooClient, schema_to_b64

UPLOAD = "/v1/api/models/upload_and_convert"


def metadata(model_name: str, **over) -> str:
    meta = {
        "name": model_name,
        "visibility": "private",
        "workspace_id": 1,
        "conversion": {"framework": "custom", "python_version": "3.8", "requirements": []},
        "input_schema": schema_to_b64(X_SCHEMA),
        "output_schema": schema_to_b64(Y_SCHEMA),
    }
    meta.update(over)
    return json.dumps(meta)


def test_health_needs_no_token_everything_else_does(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    for path in ("/v1/api/models/list", "/v1/api/pipelines/list_pipelines", "/metrics", "/v1/api/docs"):
        is_api = path.startswith("/v1/api/models") or "pipelines" in path
        r = httpx.post(server.url + path, json={}) if is_api else httpx.get(server.url + path)
        assert r.status_code == 401, path
        body = r.json()
        assert body["code"] == 401 and body["status"] == "error" and body["source"] == "auth"
        assert "Bearer" in body["error"]
        assert str(server.data_dir) not in r.text and "admin.token" not in r.text  # the hint is in the server log
    r = httpx.post(server.url + "/v1/api/models/list", json={}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "invalid" in r.json()["error"]
    with pytest.raises(AuthError):
        WallarooClient(server.url, "wrong").list_models()
    assert f"{server.data_dir / 'admin.token'}" in server.log_tail(10**6)


def test_token_file_and_cli(server):
    token_file = server.data_dir / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    out = subprocess.run(
        [sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "token", "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == server.token
    # only the hash is stored
    assert server.token.encode() not in (server.data_dir / "runtime.db").read_bytes()
    assert server.token not in server.log_tail(10**6)


def test_upload_version_and_dedupe(server, client, models_dir):
    first = make_model(models_dir / "v1", "versioned", DOUBLE)
    seen: list[tuple[int, int]] = []
    v1 = client.upload_model("versioned", first, X_SCHEMA, Y_SCHEMA, progress=lambda a, b: seen.append((a, b)))
    assert v1.status == "ready" and v1.name == "versioned" and v1.file_size == first.stat().st_size
    assert seen[-1] == (first.stat().st_size, first.stat().st_size)
    assert v1.input_arrow_schema.equals(X_SCHEMA) and v1.output_arrow_schema.equals(Y_SCHEMA)
    again = client.upload_model("versioned", first, X_SCHEMA, Y_SCHEMA)
    assert again.id == v1.id and again.version == v1.version
    second = make_model(models_dir / "v2", "versioned", 'return {"y": input_data["x"] * 3.0}')
    v2 = client.upload_model("versioned", second, X_SCHEMA, Y_SCHEMA)
    assert v2.id != v1.id and v2.model_id == v1.model_id and v2.sha != v1.sha
    versions = client.list_model_versions("versioned")
    assert [v.id for v in versions] == [v1.id, v2.id]
    fetched = client.get_model_version(v2.id)
    assert fetched.sha == v2.sha and fetched.conversion["framework"] == "custom"
    assert (server.data_dir / "artifacts" / "sha256" / v2.sha).exists()
    with pytest.raises(NotFoundError):
        client.get_model_version(999999)


def test_upload_with_schemas_nested_in_conversion(server, models_dir):
    path = make_model(models_dir / "nested", "nested", DOUBLE)
    meta = json.loads(metadata("nested-schemas"))
    meta["conversion"]["input_schema"] = meta.pop("input_schema")
    meta["conversion"]["output_schema"] = meta.pop("output_schema")
    with open(path, "rb") as f:
        r = httpx.post(server.url + UPLOAD, headers=server.headers,
                       files={"metadata": (None, json.dumps(meta), "application/json"),
                              "file": (path.name, f, "application/octet-stream")})
    assert r.status_code == 202, r.text  # as Wallaroo: accepted (conversion is a no-op for BYOP here)
    assert r.json()["insert_models"]["returning"][0]["models"][0]["id"] > 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_upload_with_the_docs_curl_command(server, models_dir, client):
    path = make_model(models_dir / "curl", "curl-model", DOUBLE)
    command = client.generate_upload_model_api_command("curl-model", path, X_SCHEMA, Y_SCHEMA)
    assert "$TOKEN" in command and server.token not in command
    out = subprocess.run(["bash", "-c", command.replace("--progress-bar", "-sS")], capture_output=True, text=True,
                         env={**os.environ, "TOKEN": server.token}, check=True)
    version_id = json.loads(out.stdout)["insert_models"]["returning"][0]["models"][0]["id"]
    assert client.get_model_version(version_id).name == "curl-model"


@pytest.mark.parametrize(
    "meta,file,needle",
    [
        (metadata("x", name=None), None, "metadata.name"),
        (json.dumps({"visibility": "private"}), None, "metadata.name: Field required"),
        (metadata("bad name!"), None, "metadata.name"),
        (metadata("x", input_schema="%%%"), None, "input_schema: not valid base64"),
        (metadata("x", input_schema=base64.b64encode(b"junk").decode()), None, "input_schema: base64 decodes but is not"),
        (json.dumps({"name": "x", "output_schema": schema_to_b64(Y_SCHEMA)}), None, "input_schema is required"),
        (metadata("x", conversion={"framework": "onnx"}), None, "metadata.conversion.framework"),
        (metadata("x", conversion={"python_version": "3.11"}), None, "metadata.conversion.python_version: Input should be '3.8' or '3.9'"),
        (metadata("x", visibility="everyone"), None, "metadata.visibility"),
        (metadata("x", workspace_id=4242), None, "workspace_id"),
        ("{not json", None, "metadata: not valid JSON"),
        (metadata("x"), b"this is not a zip", "file: not a zip"),
        (metadata("x"), "nopy", "no .py file"),
        (metadata("x"), b"", "file: the uploaded file is empty"),
    ],
)
def test_upload_rejects_bad_metadata_and_files_naming_the_field(server, models_dir, meta, file, needle):
    if file is None:
        content = make_model(models_dir / "bad", "bad", DOUBLE).read_bytes()
    elif file == "nopy":
        content = make_zip(models_dir / "nopy.zip", {"README.md": "no code"}).read_bytes()
    else:
        content = file
    r = httpx.post(server.url + UPLOAD, headers=server.headers,
                   files={"metadata": (None, meta, "application/json"), "file": ("m.zip", content, "application/octet-stream")})
    assert r.status_code in (400, 404), r.text
    assert needle in r.json()["error"], r.json()["error"]
    assert list((server.data_dir / "artifacts" / "tmp").iterdir()) == []


def test_upload_missing_parts(server):
    r = httpx.post(server.url + UPLOAD, headers=server.headers, files={"metadata": (None, metadata("x"), "application/json")})
    assert r.status_code == 400 and "file: missing" in r.json()["error"]
    r = httpx.post(server.url + UPLOAD, headers=server.headers, files={"file": ("m.zip", b"PK", "application/octet-stream")})
    assert r.status_code == 400 and "metadata: missing" in r.json()["error"]
    r = httpx.post(server.url + UPLOAD, headers=server.headers, json={"name": "x"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]


def test_oversized_upload_is_413_naming_the_limit_and_leaves_nothing(server, client, tmp_path):
    big = tmp_path / "big.zip"
    with open(big, "wb") as f:
        f.truncate(21 * 2**20)  # > the 20Mi limit this server runs with
    with pytest.raises(ValidationError) as err:
        client.upload_model("too-big", big, X_SCHEMA, Y_SCHEMA)
    assert err.value.status_code == 413 and str(20 * 2**20) in str(err.value)
    # chunked (no Content-Length): the limit is enforced while streaming
    def gen():
        boundary = "b0undary"
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{metadata('too-big')}\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\n").encode()
        for _ in range(22):
            yield b"\0" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()
    r = httpx.post(server.url + UPLOAD, content=gen(),
                   headers={**server.headers, "Content-Type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["error"]
    assert list((server.data_dir / "artifacts" / "tmp").iterdir()) == []
    with pytest.raises(NotFoundError):
        client.list_model_versions("too-big")


def test_workspaces(client):
    names = [w.name for w in client.list_workspaces()]
    assert "default" in names
    ws = client.create_workspace("team-a")
    assert ws.id > 1
    with pytest.raises(Exception) as err:
        client.create_workspace("team-a")
    assert "already exists" in str(err.value)
