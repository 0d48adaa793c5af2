"""Azure adapters (Azure OpenAI deployment, Azure ML online endpoint) against the Azure stand-in."""

from __future__ import annotations

import logging
import time

import numpy as np
import openai
import pytest

from wallaroo_pulumi.adapters import AdapterConfigError
from wallaroo_pulumi.adapters.azure import AzureMLAdapter, AzureOpenAIAdapter, azure_adapter_from_env, azureml_text
from wallaroo_pulumi.standins import DEFAULT_AZURE_OPENAI_KEY, DEFAULT_AZUREML_KEY, AzureStandin

from .conftest import FAST_RETRY


def openai_env(server: AzureStandin, **extra: str) -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": server.azure_openai_endpoint,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
        "AZURE_OPENAI_API_KEY": DEFAULT_AZURE_OPENAI_KEY,
        **FAST_RETRY,
        **extra,
    }


def ml_env(server: AzureStandin, **extra: str) -> dict[str, str]:
    return {"AZUREML_SCORE_URL": server.score_url, "AZUREML_API_KEY": DEFAULT_AZUREML_KEY, **FAST_RETRY, **extra}


def batch(*texts: str) -> dict[str, np.ndarray]:
    return {"text": np.array(texts)}


def test_azure_openai_round_trip(azure_server: AzureStandin) -> None:
    with azure_adapter_from_env(openai_env(azure_server, SYSTEM_PROMPT="Answer in French.")) as adapter:
        assert isinstance(adapter, AzureOpenAIAdapter)
        out = adapter.predict(batch("Where is Paris?", "Hello"))
    assert list(out["generated_text"]) == ["echo: Where is Paris?", "echo: Hello"]
    assert list(out["error"]) == ["", ""]
    assert list(out["prompt_tokens"]) == [3 + 3, 3 + 1] and list(out["completion_tokens"]) == [4, 2]
    rec = [r for r in azure_server.stats.recent if r.path.startswith("/openai/")][0]
    assert rec.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert rec.query == {"api-version": "2024-10-21"}
    assert rec.headers["api-key"] == DEFAULT_AZURE_OPENAI_KEY and "authorization" not in rec.headers
    assert "model" not in rec.body and rec.body["messages"][0]["role"] == "system"


def test_azure_openai_error_shapes(azure_server: AzureStandin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad_key = "ffffffffffffffffffffffffffffffff"
    with azure_adapter_from_env(openai_env(azure_server, AZURE_OPENAI_API_KEY=bad_key)) as adapter:
        out = adapter.predict(batch("x"))
    assert out["error"][0].startswith("azure-openai: HTTP 401 Unauthorized after 1 attempt: Access denied due to invalid subscription key")
    with azure_adapter_from_env(openai_env(azure_server, AZURE_OPENAI_API_VERSION="1999-01-01")) as adapter:
        out = adapter.predict(batch("x"))
    assert out["error"][0] == "azure-openai: HTTP 404 Not Found after 1 attempt: Resource not found"
    with azure_adapter_from_env(openai_env(azure_server, AZURE_OPENAI_DEPLOYMENT="nope")) as adapter:
        out = adapter.predict(batch("x"))
    assert out["error"][0].startswith(
        "azure-openai: HTTP 404 Not Found after 1 attempt: The API deployment for this resource does not exist.")
    for rec in caplog.records:
        assert bad_key not in rec.getMessage() and DEFAULT_AZURE_OPENAI_KEY not in rec.getMessage()


def test_azure_retry_after_ms_honoured(azure_server: AzureStandin) -> None:
    azure_server.faults.rate_limit_next(2, retry_after=0.4, retry_after_format="ms")
    with azure_adapter_from_env(openai_env(azure_server)) as adapter:
        started = time.monotonic()
        out = adapter.predict(batch("throttled"))
        waited = time.monotonic() - started
    assert out["error"][0] == ""
    assert waited >= 0.75, f"retry-after-ms not honoured twice (waited {waited:.2f}s)"


def test_official_azure_openai_client_against_standin(azure_server: AzureStandin) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=azure_server.azure_openai_endpoint,
        api_key=DEFAULT_AZURE_OPENAI_KEY,
        api_version="2024-10-21",
        max_retries=0,
    )
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi azure"}])
    assert completion.choices[0].message.content == "echo: hi azure"
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    assert completion.model_extra is not None and "prompt_filter_results" in completion.model_extra
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(
            azure_endpoint=azure_server.azure_openai_endpoint, api_key="wrong", api_version="2024-10-21", max_retries=0
        ).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing-deployment", messages=[{"role": "user", "content": "x"}])


def test_azureml_text_style(azure_server: AzureStandin) -> None:
    env = ml_env(azure_server, MAX_TOKENS="3", AZUREML_DEPLOYMENT="blue", AZUREML_PARAMETERS='{"do_sample": true}')
    with azure_adapter_from_env(env) as adapter:
        assert isinstance(adapter, AzureMLAdapter)
        out = adapter.predict(batch("one two three four", "short"))
    assert list(out["generated_text"]) == ["echo: one two", "echo: short"]
    assert list(out["prompt_tokens"]) == [-1, -1] and list(out["error"]) == ["", ""]
    rec = [r for r in azure_server.stats.recent if r.path == "/score"][0]
    assert rec.headers["authorization"] == f"Bearer {DEFAULT_AZUREML_KEY}"
    assert rec.headers["azureml-model-deployment"] == "blue"
    assert rec.body["input_data"]["parameters"] == {"max_new_tokens": 3, "do_sample": True}
    assert isinstance(rec.body["input_data"]["input_string"][0], str)


def test_azureml_chat_style(azure_server: AzureStandin) -> None:
    with azure_adapter_from_env(ml_env(azure_server, AZUREML_BODY_STYLE="chat", SYSTEM_PROMPT="sys")) as adapter:
        out = adapter.predict(batch("chat with me"))
    assert out["generated_text"][0] == "echo: chat with me"
    rec = [r for r in azure_server.stats.recent if r.path == "/score"][0]
    assert rec.body["input_data"]["input_string"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "chat with me"},
    ]


def test_azureml_errors(azure_server: AzureStandin) -> None:
    with azure_adapter_from_env(ml_env(azure_server, AZUREML_API_KEY="not-the-key-at-all")) as adapter:
        out = adapter.predict(batch("x"))
    assert out["error"][0].startswith("azureml: HTTP 401 Unauthorized after 1 attempt: Invalid authentication")
    assert "not-the-key-at-all" not in out["error"][0]
    azure_server.faults.server_error_next(2, status=502)
    with azure_adapter_from_env(ml_env(azure_server, MAX_RETRIES="1")) as adapter:
        out = adapter.predict(batch("x"))
    assert out["error"][0].startswith("azureml: HTTP 502 Bad Gateway after 2 attempts")


def test_azureml_answer_parsing_units() -> None:
    assert azureml_text([{"0": "a"}]) == "a"
    assert azureml_text({"output": "b"}) == "b"
    assert azureml_text('[{"0": "c"}]') == "c"
    assert azureml_text(["d"]) == "d"
    assert azureml_text("plain e") == "plain e"
    assert azureml_text({"generated_text": "f"}) == "f"


def test_mode_selection_errors() -> None:
    with pytest.raises(AdapterConfigError, match="neither AZURE_OPENAI_ENDPOINT"):
        azure_adapter_from_env({})
    with pytest.raises(AdapterConfigError, match="set AZURE_MODE"):
        azure_adapter_from_env({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZUREML_SCORE_URL": "https://y/score"})
    with pytest.raises(AdapterConfigError) as info:
        azure_adapter_from_env({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"})
    assert "AZURE_OPENAI_API_KEY is not set" in str(info.value) and "--secret" in str(info.value)
    with pytest.raises(AdapterConfigError, match="AZUREML_API_KEY is not set"):
        azure_adapter_from_env({"AZURE_MODE": "ml", "AZUREML_SCORE_URL": "https://y.inference.ml.azure.com/score"})
    with pytest.raises(AdapterConfigError, match="AZURE_MODE='cloud' is not one of openai, ml"):
        azure_adapter_from_env({"AZURE_MODE": "cloud"})
