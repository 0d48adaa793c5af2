"""Client behaviour that needs no deployed model: connection errors, from_data_dir, typed errors."""

from __future__ import annotations

import json
import socket

import pytest

from wallaroo_pulumi.client import (
    NotFoundError,
    RuntimeUnavailableError,
    ValidationError,
    WallarooClient,
    WallarooError,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_runtime_names_the_url_and_what_to_do():
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(RuntimeUnavailableError) as err:
        WallarooClient(url, "token", timeout=2).list_models()
    text = str(err.value)
    assert url in text and "runtime serve" in text and "wallaroo:url" in text
    assert isinstance(err.value, WallarooError)


def test_from_data_dir(server, tmp_path):
    c = WallarooClient.from_data_dir(server.data_dir)
    assert c.url == server.url and c.health()["status"] == "ok"
    assert server.token not in repr(c)
    with pytest.raises(RuntimeUnavailableError) as err:
        WallarooClient.from_data_dir(tmp_path / "nowhere")
    assert "runtime.json" in str(err.value)


def test_typed_errors(client):
    with pytest.raises(NotFoundError) as err:
        client.get_model_version(987654)
    assert err.value.status_code == 404 and err.value.source
    assert err.value.body["msg"] == err.value.body["error"] and err.value.body["code"] == 404  # as Wallaroo's body
    with pytest.raises(NotFoundError, match="no such pipeline"):
        client.get_pipeline(987654)
    with pytest.raises(ValidationError) as err:
        client._post("/v1/api/models/get_model_version_by_id", {"model_version_id": "abc"})
    assert "model_version_id" in str(err.value)
    with pytest.raises(NotFoundError):
        client._post("/v1/api/does/not/exist", {})
    with pytest.raises(NotFoundError) as err:
        client.deployment_status("never-deployed-1")
    body = json.dumps(err.value.body)
    assert "never-deployed" in body
