"""Unit tests of the shared adapter core: Retry-After parsing, redaction, backoff, schemas."""

from __future__ import annotations

import email.utils

import pyarrow as pa

from wallaroo_pulumi.adapters import CommonSettings, parse_retry_after
from wallaroo_pulumi.adapters.http import HttpLLMAdapter
from wallaroo_pulumi.adapters.redact import REDACTED, Redactor
from wallaroo_pulumi.adapters.schemas import LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA


def test_parse_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after({"retry-after": "3"}, now) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}, now) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now) == 7.0
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 50, usegmt=True)}, now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}, now) is None
    assert parse_retry_after({}, now) is None


def test_redactor_scrubs_known_secrets_and_patterns() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAAAA\n-----END PRIVATE KEY-----\n"
    r = Redactor(["my-azure-key-1234567890", pem])
    text = (
        "key my-azure-key-1234567890; Authorization: Bearer ya29.abc_DEF-123; Incorrect API key provided: "
        "sk-pr*************wxyz; api-key=abcdef123456; line MIIEvQIBADANBgkqhkiG9w0BAQEFAASC; "
        '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMII..."}; assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.sig'
    )
    out = r(text)
    for leaked in ("my-azure-key", "ya29.abc", "wxyz", "abcdef123456", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "eyJhbGci"):
        assert leaked not in out, (leaked, out)
    assert out.count(REDACTED) >= 6
    assert r("HTTP 429 Too Many Requests after 4 attempts: Rate limit reached") == (
        "HTTP 429 Too Many Requests after 4 attempts: Rate limit reached"
    )


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    adapter = HttpLLMAdapter(CommonSettings(retry_backoff_s=1.0, retry_max_backoff_s=5.0))
    try:
        for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (8, 5.0)):
            delays = [adapter._backoff(attempt) for _ in range(50)]
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
            assert len(set(delays)) > 1  # jittered
    finally:
        adapter.close()


def test_schemas() -> None:
    assert LLM_INPUT_SCHEMA == pa.schema([("text", pa.string())])
    assert LLM_OUTPUT_SCHEMA.names == ["generated_text", "prompt_tokens", "completion_tokens", "error"]
    assert LLM_OUTPUT_SCHEMA.field("prompt_tokens").type == pa.int64()
    # the upload API carries them as base64 of Schema.serialize(): they must round-trip
    assert pa.ipc.read_schema(pa.py_buffer(LLM_OUTPUT_SCHEMA.serialize())) == LLM_OUTPUT_SCHEMA
