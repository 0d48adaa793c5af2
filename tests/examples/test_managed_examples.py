"""The managed-endpoint examples, run as users run them (`pulumi up` of the example's own
program through the real engine) against local stand-ins that speak each cloud's wire
protocol and auth; a real inference through the runtime; no credential in state or output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from google.auth import _helpers as google_auth_helpers

from wallaroo_pulumi.standins import (
    DEFAULT_API_KEY,
    DEFAULT_AZURE_OPENAI_KEY,
    DEFAULT_AZUREML_KEY,
    AzureStandin,
    OpenAIStandin,
    VertexStandin,
)
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCORES = {"toxicity", "profanity", "sentiment_compound", "hate"}


def use_example(stack: PulumiStack, name: str, data_dir: Path) -> None:
    stack.write_program((EXAMPLES / name / "__main__.py").read_text())
    stack.config_set("data_dir", str(data_dir))


def infer(stack: PulumiStack, prompt: str) -> dict:
    out = stack.outputs(show_secrets=True)
    response = httpx.post(out["inference_url"], json=[{"text": prompt}], timeout=60, headers={
        "Authorization": f"Bearer {out['token']}", "Content-Type": "application/json; format=pandas-records"})
    assert response.status_code == 200, response.text
    return response.json()[0]["out"]


def assert_no_plaintext(stack: PulumiStack, *secrets: str, texts: tuple[str, ...] = ()) -> None:
    exported = stack.run("stack", "export").stdout
    for secret in secrets:
        assert secret not in exported, "a credential is in the state in plaintext"
        for text in texts:
            assert secret not in text, "a credential is in the command output"


def test_openai_example(pulumi_stack: PulumiStack, tmp_path: Path) -> None:
    with OpenAIStandin(api_keys=[DEFAULT_API_KEY], models=["gpt-4o-mini"]) as upstream:
        use_example(pulumi_stack, "openai-managed-endpoint", tmp_path / "runtime")
        pulumi_stack.config_set("openai_base_url", upstream.openai_base_url)
        pulumi_stack.config_set("openai_api_key", DEFAULT_API_KEY, secret=True)
        result = pulumi_stack.up()
        out = infer(pulumi_stack, "Tell me something kind.")
        assert out["generated_text"] == "echo: Tell me something kind." and out["error"] == ""
        assert out["prompt_tokens"] > 0 and out["completion_tokens"] > 0
        assert SCORES <= set(out), out  # the in-line validator's columns
        assert upstream.stats.snapshot()["by_status"] == {"200": 1}
        assert_no_plaintext(pulumi_stack, DEFAULT_API_KEY, texts=(result.stdout, result.stderr))

        # a wrong key: the row carries an error naming the upstream status, never the key
        pulumi_stack.config_set("openai_api_key", "sk-wrong-key-0123456789", secret=True)
        pulumi_stack.up()
        out = infer(pulumi_stack, "again")
        assert "401" in out["error"] and "sk-wrong-key" not in json.dumps(out)
        # ... and is counted for alerting, once (by the LLM step, not the validator carrying it)
        outputs = pulumi_stack.outputs(show_secrets=True)
        metrics = httpx.get(outputs["inference_url"].split("/v1/")[0] + "/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {outputs['token']}"}).text
        counted = [line for line in metrics.splitlines() if line.startswith("wallaroo_upstream_row_errors_total{")]
        assert counted == ['wallaroo_upstream_row_errors_total{kind="http_401",pipeline="openai-chat",'
                           'step="openai-llm",upstream="openai"} 1.0'], counted


def test_vertex_example_mints_and_refreshes_its_token(pulumi_stack: PulumiStack, tmp_path: Path) -> None:
    # google-auth refreshes REFRESH_THRESHOLD before expiry: a token living threshold + 4 s
    # is good for about 4 s on the client side.
    lifetime = int(google_auth_helpers.REFRESH_THRESHOLD.total_seconds()) + 4
    with VertexStandin(token_lifetime_s=lifetime) as upstream:
        service_account = upstream.create_service_account()  # a throwaway RSA key; token_uri -> stand-in
        credentials = json.dumps(service_account)
        use_example(pulumi_stack, "vertex-managed-endpoint", tmp_path / "runtime")
        pulumi_stack.config_set("vertex_endpoint_url", upstream.endpoint_url)
        pulumi_stack.config_set("vertex_credentials", credentials, secret=True)
        result = pulumi_stack.up()

        out = infer(pulumi_stack, "What is a sidekick?")
        assert out["error"] == "" and "What is a sidekick?" in out["generated_text"]
        assert upstream.tokens_minted == 1 and upstream.rejections == []  # minted from the signed JWT
        infer(pulumi_stack, "second question")
        assert upstream.tokens_minted == 1  # reused while valid
        time.sleep(4.5)
        out = infer(pulumi_stack, "after expiry")
        assert out["error"] == ""
        assert upstream.tokens_minted == 2  # refreshed once it expired
        assert_no_plaintext(pulumi_stack, service_account["private_key"].splitlines()[1],
                            texts=(result.stdout, result.stderr))


def test_azure_example_in_both_modes(pulumi_stack: PulumiStack, tmp_path: Path) -> None:
    with AzureStandin() as upstream:
        use_example(pulumi_stack, "azureml-managed-endpoint", tmp_path / "runtime")
        pulumi_stack.config_set("azure_openai_endpoint", upstream.azure_openai_endpoint)
        pulumi_stack.config_set("azure_openai_deployment", next(iter(upstream.deployments)))
        pulumi_stack.config_set("azure_openai_api_key", DEFAULT_AZURE_OPENAI_KEY, secret=True)
        first = pulumi_stack.up()
        out = infer(pulumi_stack, "Azure OpenAI, please.")
        assert out["error"] == "" and "Azure OpenAI, please." in out["generated_text"]
        call = upstream.stats.recent[-1]
        assert call.headers.get("api-key") and call.query.get("api-version") == "2024-10-21"

        # the same stack moved to an Azure ML online endpoint: redeployed in place
        pulumi_stack.config_set("azure_mode", "ml")
        pulumi_stack.config_set("azureml_score_url", upstream.score_url)
        pulumi_stack.config_set("azureml_api_key", DEFAULT_AZUREML_KEY, secret=True)
        second = pulumi_stack.up()
        out = infer(pulumi_stack, "Azure ML, please.")
        assert out["error"] == "" and "Azure ML, please." in out["generated_text"]
        call = upstream.stats.recent[-1]
        assert call.headers.get("authorization", "").startswith("Bearer ") and "api-key" not in call.headers
        assert_no_plaintext(pulumi_stack, DEFAULT_AZURE_OPENAI_KEY, DEFAULT_AZUREML_KEY,
                            texts=(first.stdout, second.stdout))


def test_bad_mode_is_named(pulumi_stack: PulumiStack, tmp_path: Path) -> None:
    use_example(pulumi_stack, "azureml-managed-endpoint", tmp_path / "runtime")
    pulumi_stack.config_set("azure_mode", "serverless")
    result = pulumi_stack.preview(check=False)
    text = " ".join(d.get("message", "") for d in result.diagnostics) + result.stdout + result.stderr
    assert "azure_mode" in text and "'ml'" in text


@pytest.fixture(autouse=True)
def _no_configured_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples start their own local runtime unless one is configured."""
    monkeypatch.delenv("WALLAROO_URL", raising=False)
