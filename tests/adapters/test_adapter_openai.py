"""OpenAI adapter against the OpenAI stand-in: round trip, retries, faults, concurrency, secrets."""

from __future__ import annotations

import logging
import time

import numpy as np
import openai
import pyarrow as pa
import pytest

from wallaroo_pulumi.adapters import AdapterConfigError, InputValidationError
from wallaroo_pulumi.adapters.openai_chat import OpenAIChatAdapter
from wallaroo_pulumi.adapters.schemas import LLM_OUTPUT_SCHEMA
from wallaroo_pulumi.standins import DEFAULT_API_KEY, DEFAULT_MODEL, OpenAIStandin

from .conftest import FAST_RETRY


def env_for(server: OpenAIStandin, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": server.openai_base_url,
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "OPENAI_MODEL": DEFAULT_MODEL,
        **FAST_RETRY,
        **extra,
    }


def batch(*texts: object) -> dict[str, np.ndarray]:
    return {"text": np.array(texts, dtype=object)}


def test_round_trip_text_usage_and_request_shape(openai_server: OpenAIStandin) -> None:
    env = env_for(openai_server, SYSTEM_PROMPT="Be brief.", MAX_TOKENS="50", TEMPERATURE="0.2")
    with OpenAIChatAdapter.from_env(env) as adapter:
        out = adapter.predict(batch("What is a llama?", "Hello there friend"))
    assert list(out["generated_text"]) == ["echo: What is a llama?", "echo: Hello there friend"]
    assert list(out["error"]) == ["", ""]
    # stand-in counts whitespace tokens: system (2) + user prompt
    assert list(out["prompt_tokens"]) == [2 + 4, 2 + 3]
    assert list(out["completion_tokens"]) == [5, 4]
    assert out["prompt_tokens"].dtype == np.int64 and out["completion_tokens"].dtype == np.int64
    table = pa.Table.from_pydict(out, schema=LLM_OUTPUT_SCHEMA)  # matches the declared output schema
    assert table.num_rows == 2
    sent = [r for r in openai_server.stats.recent if r.path == "/v1/chat/completions"]
    assert len(sent) == 2
    body = sent[0].body
    assert body["model"] == DEFAULT_MODEL
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1]["role"] == "user"
    assert body["max_tokens"] == 50 and body["temperature"] == 0.2
    assert sent[0].headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"


def test_max_tokens_truncates_and_empty_batch(openai_server: OpenAIStandin) -> None:
    with OpenAIChatAdapter.from_env(env_for(openai_server, MAX_TOKENS="2")) as adapter:
        out = adapter.predict(batch("one two three four"))
        assert out["generated_text"][0] == "echo: one"
        assert out["completion_tokens"][0] == 2
        empty = adapter.predict({"text": np.array([], dtype=object)})
    assert all(len(v) == 0 for v in empty.values())
    assert set(empty) == {"generated_text", "prompt_tokens", "completion_tokens", "error"}


def test_rate_limit_retry_after_is_honoured(openai_server: OpenAIStandin) -> None:
    openai_server.faults.rate_limit_next(1, retry_after=1)
    with OpenAIChatAdapter.from_env(env_for(openai_server)) as adapter:
        started = time.monotonic()
        out = adapter.predict(batch("patience"))
        waited = time.monotonic() - started
    assert out["error"][0] == "" and out["generated_text"][0] == "echo: patience"
    assert waited >= 0.95, f"Retry-After: 1 not honoured (waited {waited:.2f}s)"
    assert openai_server.stats.by_status[429] == 1 and openai_server.stats.by_status[200] == 1


def test_rate_limit_retry_after_http_date(openai_server: OpenAIStandin) -> None:
    openai_server.faults.rate_limit_next(1, retry_after=2, retry_after_format="http-date")
    with OpenAIChatAdapter.from_env(env_for(openai_server)) as adapter:
        started = time.monotonic()
        out = adapter.predict(batch("dated"))
        waited = time.monotonic() - started
    assert out["error"][0] == ""
    # an HTTP date has whole-second precision: "now + 2 s" is 1..2 s away when read
    assert waited >= 0.9, f"HTTP-date Retry-After not honoured (waited {waited:.2f}s)"


def test_rate_limit_exhausted_names_status_and_upstream_message(openai_server: OpenAIStandin) -> None:
    openai_server.faults.rate_limit_next(10, retry_after=0)
    with OpenAIChatAdapter.from_env(env_for(openai_server, MAX_RETRIES="3")) as adapter:
        out = adapter.predict(batch("doomed"))
    err = out["error"][0]
    assert err.startswith("openai: HTTP 429 Too Many Requests after 4 attempts: Rate limit reached"), err
    assert out["generated_text"][0] == "" and out["prompt_tokens"][0] == -1
    assert openai_server.stats.by_status[429] == 4


def test_retry_after_beyond_cap_gives_up_at_once(openai_server: OpenAIStandin) -> None:
    openai_server.faults.rate_limit_next(1, retry_after=120)
    with OpenAIChatAdapter.from_env(env_for(openai_server, RETRY_AFTER_MAX_S="5")) as adapter:
        started = time.monotonic()
        out = adapter.predict(batch("later"))
    assert time.monotonic() - started < 1
    assert "HTTP 429" in out["error"][0] and "RETRY_AFTER_MAX_S=5" in out["error"][0]


def test_server_errors_retried_then_per_row_error(openai_server: OpenAIStandin) -> None:
    # one 503 then success for the first row; the rest of the queue fails the second row
    openai_server.faults.server_error_next(1, status=503)
    with OpenAIChatAdapter.from_env(env_for(openai_server, MAX_RETRIES="2", MAX_CONCURRENCY="1")) as adapter:
        ok = adapter.predict(batch("first"))
        openai_server.faults.server_error_next(3, status=500)
        bad = adapter.predict(batch("second"))
    assert ok["error"][0] == "" and ok["generated_text"][0] == "echo: first"
    assert bad["error"][0].startswith("openai: HTTP 500 Internal Server Error after 3 attempts:"), bad["error"][0]
    assert openai_server.stats.by_status[503] == 1 and openai_server.stats.by_status[500] == 3


def test_one_bad_row_does_not_fail_the_batch(openai_server: OpenAIStandin) -> None:
    openai_server.faults.server_error_next(1, status=502)
    with OpenAIChatAdapter.from_env(env_for(openai_server, MAX_RETRIES="0", MAX_CONCURRENCY="1")) as adapter:
        out = adapter.predict(batch("a", None, "c"))
    assert out["error"][0].startswith("openai: HTTP 502 Bad Gateway after 1 attempt")
    assert out["error"][1] == "openai: input text is null; expected a string prompt"
    assert out["error"][2] == "" and out["generated_text"][2] == "echo: c"


def test_timeout_path(openai_server: OpenAIStandin) -> None:
    openai_server.faults.hang_next(1, seconds=1.0)
    with OpenAIChatAdapter.from_env(env_for(openai_server, REQUEST_TIMEOUT_S="0.3", MAX_RETRIES="0")) as adapter:
        started = time.monotonic()
        out = adapter.predict(batch("slow"))
        assert time.monotonic() - started < 0.9
        assert out["error"][0] == "openai: request timed out after 0.3s (ReadTimeout) after 1 attempt"
        # a timeout is retried: hang once, then answer
        openai_server.faults.hang_next(1, seconds=1.0)
    with OpenAIChatAdapter.from_env(env_for(openai_server, REQUEST_TIMEOUT_S="0.3", MAX_RETRIES="1")) as adapter:
        out = adapter.predict(batch("slow again"))
    assert out["error"][0] == "" and out["generated_text"][0] == "echo: slow again"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("truncated", "openai: malformed response (HTTP 200): body is not JSON"),
        ("not_json", "openai: malformed response (HTTP 200): body is not JSON"),
        ("wrong_shape", "openai: malformed response (HTTP 200): no 'choices' in the chat completion"),
    ],
)
def test_malformed_body_is_a_row_error(openai_server: OpenAIStandin, kind: str, expected: str) -> None:
    openai_server.faults.malformed_next(1, kind=kind)
    with OpenAIChatAdapter.from_env(env_for(openai_server, MAX_CONCURRENCY="1")) as adapter:
        out = adapter.predict(batch("x", "y"))
    assert out["error"][0].startswith(expected), out["error"][0]
    assert out["generated_text"][0] == ""
    assert out["error"][1] == "" and out["generated_text"][1] == "echo: y"


def test_concurrency_bound_respected(openai_server: OpenAIStandin) -> None:
    openai_server.faults.set_latency(0.15)
    with OpenAIChatAdapter.from_env(env_for(openai_server, MAX_CONCURRENCY="3")) as adapter:
        started = time.monotonic()
        out = adapter.predict(batch(*[f"row {i}" for i in range(12)]))
        elapsed = time.monotonic() - started
    assert list(out["generated_text"]) == [f"echo: row {i}" for i in range(12)]  # order kept
    assert openai_server.stats.max_in_flight == 3
    assert elapsed < 12 * 0.15  # it really ran in parallel


def test_credentials_never_in_errors_or_logs(openai_server: OpenAIStandin, caplog: pytest.LogCaptureFixture) -> None:
    wrong_key = "sk-proj-THISisAsecretKEYthatMUSTnotLEAK1234"
    caplog.set_level(logging.DEBUG)
    with OpenAIChatAdapter.from_env(env_for(openai_server, OPENAI_API_KEY=wrong_key)) as adapter:
        out = adapter.predict(batch("hi"))
    err = out["error"][0]
    assert err.startswith("openai: HTTP 401 Unauthorized after 1 attempt: Incorrect API key provided:"), err
    openai_server.faults.rate_limit_next(1, retry_after=0)
    openai_server.faults.server_error_next(1)
    with OpenAIChatAdapter.from_env(env_for(openai_server)) as adapter:
        out2 = adapter.predict(batch("hi"))
    assert out2["error"][0] == ""
    texts = [err, *(r.getMessage() for r in caplog.records)]
    assert any("retrying" in t for t in texts)
    for secret in (wrong_key, wrong_key[-8:], wrong_key[3:12], DEFAULT_API_KEY):
        for t in texts:
            assert secret not in t, f"credential leaked in: {t}"


def test_missing_text_column_raises_validation_error(openai_server: OpenAIStandin) -> None:
    with OpenAIChatAdapter.from_env(env_for(openai_server)) as adapter:
        with pytest.raises(InputValidationError, match="missing the 'text' column"):
            adapter.predict({"prompt": np.array(["x"])})


def test_missing_env_names_variable_and_pulumi_hint() -> None:
    with pytest.raises(AdapterConfigError) as info:
        OpenAIChatAdapter.from_env({"OPENAI_MODEL": "gpt-4o-mini"})
    msg = str(info.value)
    assert "OPENAI_API_KEY is not set" in msg and "pulumi config set --secret" in msg
    with pytest.raises(AdapterConfigError, match="OPENAI_MODEL is not set"):
        OpenAIChatAdapter.from_env({"OPENAI_API_KEY": "sk-x"})
    with pytest.raises(AdapterConfigError, match="MAX_CONCURRENCY='lots' is not an integer"):
        OpenAIChatAdapter.from_env({"OPENAI_API_KEY": "sk-x", "OPENAI_MODEL": "m", "MAX_CONCURRENCY": "lots"})
    with pytest.raises(AdapterConfigError, match="OPENAI_EXTRA_BODY is not valid JSON"):
        OpenAIChatAdapter.from_env({"OPENAI_API_KEY": "sk-x", "OPENAI_MODEL": "m", "OPENAI_EXTRA_BODY": "{"})


def test_official_openai_client_against_standin(openai_server: OpenAIStandin) -> None:
    client = openai.OpenAI(api_key=DEFAULT_API_KEY, base_url=openai_server.openai_base_url, max_retries=0)
    completion = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "hello world"}],
        max_tokens=10,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: hello world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == 3 and completion.usage.total_tokens == 6

    chunks = list(
        client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3

    assert [m.id for m in client.models.list()] == [DEFAULT_MODEL]

    with pytest.raises(openai.AuthenticationError) as auth:
        openai.OpenAI(api_key="sk-wrong-key-123456", base_url=openai_server.openai_base_url, max_retries=0).chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": "x"}]
        )
    assert auth.value.code == "invalid_api_key"

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])

    openai_server.faults.rate_limit_next(1, retry_after=0)
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=[{"role": "user", "content": "x"}])
    assert rl.value.code == "rate_limit_exceeded"

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=[])
    assert bad.value.param == "messages"


def test_control_api_over_http(openai_server: OpenAIStandin) -> None:
    import httpx

    base = openai_server.base_url
    r = httpx.post(f"{base}/_standin/faults", json={"rate_limit": {"count": 2, "retry_after": 0}, "latency_s": 0})
    assert r.json()["pending_faults"] == 2
    with OpenAIChatAdapter.from_env(env_for(openai_server)) as adapter:
        out = adapter.predict(batch("via control"))
    assert out["error"][0] == ""
    stats = httpx.get(f"{base}/_standin/stats").json()
    assert stats["by_status"] == {"429": 2, "200": 1} and stats["pending_faults"] == 0
    httpx.post(f"{base}/_standin/reset")
    assert httpx.get(f"{base}/_standin/stats").json()["requests"] == 0
