"""Vertex AI adapter against the Vertex stand-in: signed-assertion token flow, reuse, expiry, shapes."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pytest
from google.auth import _helpers as google_auth_helpers

from wallaroo_pulumi.adapters import AdapterConfigError
from wallaroo_pulumi.adapters.vertex import (
    VertexAIAdapter,
    first_prediction_text,
    parse_service_account_info,
    strip_prompt_echo,
)
from wallaroo_pulumi.standins import VertexStandin, generate_service_account

from .conftest import FAST_RETRY


def env_for(server: VertexStandin, info: dict[str, Any], *, as_python_dict: bool = False, **extra: str) -> dict[str, str]:
    creds = str(info) if as_python_dict else json.dumps(info)
    return {"APPLICATION_CREDENTIALS": creds, "VERTEX_ENDPOINT_URL": server.endpoint_url, **FAST_RETRY, **extra}


def batch(*texts: str) -> dict[str, np.ndarray]:
    return {"text": np.array(texts)}


def test_round_trip_with_token_minted_from_signed_assertion(vertex_server: VertexStandin, service_account: dict[str, Any]) -> None:
    env = env_for(vertex_server, service_account, MAX_TOKENS="64", TEMPERATURE="0.5", VERTEX_INSTANCE_PARAMS='{"top_p": 0.9}')
    with VertexAIAdapter.from_env(env) as adapter:
        out = adapter.predict(batch("Why is the sky blue?", "Tell me a joke", "Hi", "Bye", "Again"))
    assert list(out["generated_text"]) == [
        "echo: Why is the sky blue?", "echo: Tell me a joke", "echo: Hi", "echo: Bye", "echo: Again"
    ]  # the "Prompt:\n...\nOutput:\n" echo is stripped
    assert list(out["error"]) == [""] * 5
    assert list(out["prompt_tokens"]) == [-1] * 5 and list(out["completion_tokens"]) == [-1] * 5
    # the stand-in verified the RS256 assertion and minted exactly one token for 5 concurrent rows
    assert vertex_server.tokens_minted == 1 and vertex_server.rejections == []
    predicts = [r for r in vertex_server.stats.recent if r.path.endswith(":predict")]
    assert len(predicts) == 5
    instance = predicts[0].body["instances"][0]
    assert set(instance) == {"prompt", "max_tokens", "temperature", "top_p"}
    assert instance["max_tokens"] == 64 and instance["temperature"] == 0.5 and instance["top_p"] == 0.9
    assert predicts[0].headers["authorization"].startswith("Bearer ya29.standin-")


def test_python_dict_credentials_form_is_accepted(vertex_server: VertexStandin, service_account: dict[str, Any]) -> None:
    # what `str(json.load(open("credentials.json")))` produces in Wallaroo's tutorial
    with VertexAIAdapter.from_env(env_for(vertex_server, service_account, as_python_dict=True)) as adapter:
        out = adapter.predict(batch("dict form"))
    assert out["generated_text"][0] == "echo: dict form"


def test_token_reused_while_valid_and_refreshed_after_expiry(vertex_server: VertexStandin, service_account: dict[str, Any]) -> None:
    # google-auth treats a token as expired REFRESH_THRESHOLD (3m45s) before its expiry, so a
    # token that lives threshold + 2 s is valid for ~2 s on the client side.
    threshold = int(google_auth_helpers.REFRESH_THRESHOLD.total_seconds())
    vertex_server.token_lifetime_s = threshold + 2
    with VertexAIAdapter.from_env(env_for(vertex_server, service_account)) as adapter:
        adapter.predict(batch("one", "two"))
        adapter.predict(batch("three"))
        assert vertex_server.tokens_minted == 1  # reused while valid
        time.sleep(2.2)
        out = adapter.predict(batch("four", "five", "six"))
    assert list(out["error"]) == ["", "", ""]
    assert vertex_server.tokens_minted == 2  # refreshed once after expiry, shared by the batch


def test_401_forces_one_refresh(vertex_server: VertexStandin, service_account: dict[str, Any]) -> None:
    with VertexAIAdapter.from_env(env_for(vertex_server, service_account)) as adapter:
        adapter.predict(batch("before"))
        vertex_server.revoke_all_tokens()  # the cached token is now rejected upstream
        out = adapter.predict(batch("after"))
    assert out["error"][0] == "" and out["generated_text"][0] == "echo: after"
    assert vertex_server.tokens_minted == 2
    assert vertex_server.stats.by_status[401] == 1


def test_bad_signature_rejected(vertex_server: VertexStandin, service_account: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    # The stand-in knows a *different* public key for this account: the signature can't verify.
    _other_info, other_public = generate_service_account(vertex_server.token_uri)
    vertex_server.register_service_account(service_account["client_email"], other_public, service_account["private_key_id"])
    caplog.set_level(logging.DEBUG)
    with VertexAIAdapter.from_env(env_for(vertex_server, service_account)) as adapter:
        out = adapter.predict(batch("a", "b"))
    assert vertex_server.tokens_minted == 0
    assert "Invalid JWT Signature." in vertex_server.rejections
    for err in out["error"]:
        assert err.startswith("vertex: credentials: token refresh failed (RefreshError): invalid_grant: Invalid JWT Signature."), err
    s = vertex_server
    predict_route = f"POST /v1/projects/{s.project}/locations/{s.location}/endpoints/{s.endpoint_id}:predict"
    assert s.stats.by_route.get(predict_route) is None
    key_lines = [line for line in service_account["private_key"].splitlines() if "PRIVATE KEY" not in line and line]
    texts = [*out["error"], *(r.getMessage() for r in caplog.records)]
    for t in texts:
        assert service_account["private_key_id"] not in t
        assert not any(line in t for line in key_lines)


def test_unknown_account_rejected(vertex_server: VertexStandin) -> None:
    stranger, _ = generate_service_account(vertex_server.token_uri, client_email="nobody@else.iam.gserviceaccount.com")
    with VertexAIAdapter.from_env(env_for(vertex_server, stranger)) as adapter:
        out = adapter.predict(batch("x"))
    assert "invalid_grant: Invalid grant: account not found" in out["error"][0]


def test_google_application_credentials_file_fallback(
    vertex_server: VertexStandin, service_account: dict[str, Any], tmp_path: Any
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(service_account))
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file), "VERTEX_ENDPOINT_URL": vertex_server.endpoint_url + ":predict"}
    with VertexAIAdapter.from_env(env) as adapter:
        out = adapter.predict(batch("from file"))
    assert out["generated_text"][0] == "echo: from file"


@pytest.mark.parametrize(
    ("style", "expected"),
    [("vllm", "echo: shape"), ("nested", "echo: shape"), ("content", "echo: shape"), ("plain", "echo: shape")],
)
def test_response_shapes(vertex_server: VertexStandin, service_account: dict[str, Any], style: str, expected: str) -> None:
    vertex_server.response_style = style
    with VertexAIAdapter.from_env(env_for(vertex_server, service_account)) as adapter:
        out = adapter.predict(batch("shape"))
    assert out["generated_text"][0] == expected and out["error"][0] == ""


def test_strip_prompt_can_be_disabled(vertex_server: VertexStandin, service_account: dict[str, Any]) -> None:
    with VertexAIAdapter.from_env(env_for(vertex_server, service_account, VERTEX_STRIP_PROMPT="false")) as adapter:
        out = adapter.predict(batch("raw"))
    assert out["generated_text"][0] == "Prompt:\nraw\nOutput:\necho: raw"


def test_quota_429_then_success_and_5xx_error(vertex_server: VertexStandin, service_account: dict[str, Any]) -> None:
    vertex_server.faults.rate_limit_next(1, retry_after=0)
    with VertexAIAdapter.from_env(env_for(vertex_server, service_account, MAX_RETRIES="1", MAX_CONCURRENCY="1")) as adapter:
        ok = adapter.predict(batch("quota"))
        vertex_server.faults.server_error_next(2, status=503)
        bad = adapter.predict(batch("down"))
    assert ok["error"][0] == ""
    assert bad["error"][0] == "vertex: HTTP 503 Service Unavailable after 2 attempts: The service is currently unavailable."
    assert vertex_server.tokens_minted == 1  # token endpoint is not affected by endpoint faults


def test_malformed_prediction(vertex_server: VertexStandin, service_account: dict[str, Any]) -> None:
    vertex_server.faults.malformed_next(1, kind="wrong_shape")
    with VertexAIAdapter.from_env(env_for(vertex_server, service_account)) as adapter:
        out = adapter.predict(batch("x"))
    assert out["error"][0] == "vertex: malformed response (HTTP 200): no 'predictions' in the Vertex response"


def test_prediction_parsing_units() -> None:
    assert first_prediction_text({"predictions": ["a"]}) == "a"
    assert first_prediction_text({"predictions": [["b", "c"]]}) == "b"
    assert first_prediction_text({"predictions": [{"content": "d"}]}) == "d"
    assert first_prediction_text({"predictions": "e"}) == "e"
    assert first_prediction_text({"predictions": [{"predictions": ["f"]}]}) == "f"
    prompt = "Q: what?\nOutput:\nnot the answer"
    assert strip_prompt_echo(f"Prompt:\n{prompt}\nOutput:\n the answer", prompt) == " the answer"
    assert strip_prompt_echo("Prompt:\nsomething else\nOutput:\nx", "p") == "x"
    assert strip_prompt_echo("no echo Output:\nkept", "p") == "no echo Output:\nkept"


def test_config_errors_name_the_variable(vertex_server: VertexStandin, service_account: dict[str, Any]) -> None:
    with pytest.raises(AdapterConfigError) as info:
        VertexAIAdapter.from_env({"VERTEX_ENDPOINT_URL": vertex_server.endpoint_url})
    assert "APPLICATION_CREDENTIALS is not set" in str(info.value)
    assert "pulumi config set --secret vertexCredentials" in str(info.value)
    with pytest.raises(AdapterConfigError, match="VERTEX_ENDPOINT_URL is not set"):
        VertexAIAdapter.from_env({"APPLICATION_CREDENTIALS": json.dumps(service_account)})
    with pytest.raises(AdapterConfigError, match="is not a Vertex AI endpoint URL"):
        VertexAIAdapter.from_env(
            {"APPLICATION_CREDENTIALS": json.dumps(service_account), "VERTEX_ENDPOINT_URL": "https://example.com/predict"}
        )
    broken = json.dumps(service_account)[:-10]
    with pytest.raises(AdapterConfigError) as bad:
        parse_service_account_info(broken)
    assert "neither JSON nor a Python dict literal" in str(bad.value)
    assert service_account["private_key"][40:80] not in str(bad.value)
    with pytest.raises(AdapterConfigError, match="lacks private_key"):
        parse_service_account_info(json.dumps({**service_account, "private_key": ""}))
