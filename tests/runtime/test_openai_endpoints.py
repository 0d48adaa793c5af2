"""The OpenAI-compatible endpoints on a REAL runtime (loopback), called with the official `openai`
client: chat completions and completions, streamed and not, through each managed-endpoint adapter
against its stand-in (OpenAI, Azure OpenAI, Vertex Gemini). A streamed answer reaches the caller
while the upstream is still generating; the in-line validator scores the whole answer (logged, and
in the `wallaroo` extension); each call is one logged inference with its token usage; errors have
OpenAI's shape; an inference-only key works."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.runtime.conftest import Server, server_env
from wallaroo_pulumi import BYOP_DIR, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, DeploymentConfigBuilder, packaging
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.scorers.schemas import listener_schemas
from wallaroo_pulumi.standins import DEFAULT_AZURE_OPENAI_KEY, AzureStandin, OpenAIStandin, VertexStandin

KEY = "sk-openai-endpoints-test"
PY = "3.9"
ENABLED = {"enabled": True, "chat_completion_config": {"max_tokens": 64}, "completion_config": {"max_tokens": 64}}
PIPELINES = ("oai-chat", "azure-chat", "vertex-chat")


@dataclass
class Setup:
    server: Server
    admin: WallarooClient
    openai: OpenAIStandin
    azure: AzureStandin
    vertex: VertexStandin
    deployments: dict[str, str]

    def base_url(self, pipeline: str) -> str:
        return f"{self.server.url}/v1/api/pipelines/infer/{self.deployments[pipeline]}/{pipeline}/openai/v1"

    def client(self, pipeline: str, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url(pipeline), api_key=key or self.server.token, max_retries=0, timeout=60)


def configure(server: Server, version_id: int, config: dict) -> dict:
    """The SDK's `model_version.configure(openai_config=...)` request."""
    response = httpx.post(f"{server.url}/v1/api/models/insert_model_config", headers=server.headers, timeout=30,
                          json={"model_version_id": version_id, "openai_config": config})
    assert response.status_code == 200, response.text
    return response.json()["model_config"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("openai-endpoints")
    with contextlib.ExitStack() as stack:
        oai = stack.enter_context(OpenAIStandin(api_keys=[KEY], models=["gpt-4o-mini"]))
        azure = stack.enter_context(AzureStandin())
        vertex = stack.enter_context(VertexStandin())
        account = vertex.create_service_account()
        srv = Server(root / "data", [], server_env()).start()
        stack.callback(srv.stop)
        admin = stack.enter_context(srv.client())
        envs = {
            "openai": {"OPENAI_BASE_URL": oai.openai_base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "gpt-4o-mini"},
            "azure": {"AZURE_OPENAI_ENDPOINT": azure.azure_openai_endpoint, "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
                      "AZURE_OPENAI_API_KEY": DEFAULT_AZURE_OPENAI_KEY},
            "vertex": {"APPLICATION_CREDENTIALS": json.dumps(account), "VERTEX_ENDPOINT_URL": vertex.endpoint_url,
                       "VERTEX_API": "gemini", "RETRY_BACKOFF_S": "0.05", "RETRY_MAX_BACKOFF_S": "0.2"},
        }
        vin, vout = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
        validator = admin.upload_model("validator", packaging.pack(BYOP_DIR / "listeners" / "validator", root).path,
                                       vin, vout, python_version=PY)
        deployments = {}
        for pipeline, upstream in zip(PIPELINES, ("openai", "azure", "vertex"), strict=True):
            llm = admin.upload_model(f"{upstream}-llm", packaging.pack(BYOP_DIR / f"{upstream}_llm", root).path,
                                     LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, python_version=PY)
            assert configure(srv, llm.id, ENABLED)["openai"]["enabled"] is True
            steps = [llm, validator] if upstream == "openai" else [llm]
            created = admin.create_pipeline(pipeline, steps=steps)
            dep = admin.deploy(pipeline, pipeline_id=created.pipeline_id,
                               engine_config=DeploymentConfigBuilder().sidekick_env(f"{upstream}-llm", envs[upstream]).build())
            deployments[pipeline] = f"{pipeline}-{dep}"
        for pipeline in PIPELINES:
            admin.wait_for_deployment(deployments[pipeline], timeout_s=180)
        yield Setup(srv, admin, oai, azure, vertex, deployments)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_chat_and_completions_streamed_and_not(setup: Setup, pipeline: str) -> None:
    client = setup.client(pipeline)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "why is the sky blue"}]
    chat = client.chat.completions.create(model="", messages=messages)
    assert chat.object == "chat.completion" and chat.choices[0].message.content == "echo: why is the sky blue"
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage is not None and chat.usage.completion_tokens == 6 and chat.usage.prompt_tokens > 0

    stream = client.chat.completions.create(model="", messages=messages, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: why is the sky blue"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 6  # token by token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

    done = client.completions.create(model="", prompt="say hi", max_tokens=2)
    assert done.object == "text_completion" and done.choices[0].text == "echo: say"
    assert done.choices[0].finish_reason == "length" and done.usage is not None and done.usage.completion_tokens == 2
    pieces = list(client.completions.create(model="", prompt="say hi", stream=True))
    assert "".join(p.choices[0].text for p in pieces if p.choices) == "echo: say hi"


def test_a_stream_reaches_the_caller_while_the_upstream_generates(setup: Setup) -> None:
    setup.openai.faults.set_token_interval(0.3)  # 7 events 0.3 s apart: ~2 s to generate
    try:
        started = time.perf_counter()
        stream = setup.client("oai-chat").chat.completions.create(
            model="", messages=[{"role": "user", "content": "one two three four"}], stream=True)
        arrivals = [(time.perf_counter() - started, c) for c in stream]
    finally:
        setup.openai.faults.set_token_interval(0)
    first = next(t for t, c in arrivals if c.choices and c.choices[0].delta.content)
    last = arrivals[-1][0]
    assert last - first > 1.2, f"the first token came {first:.2f}s in, the end {last:.2f}s: buffered"


def test_validator_scores_the_whole_answer_and_each_call_is_one_logged_inference(setup: Setup) -> None:
    before = len(setup.admin.logs("oai-chat", limit=1000))
    stream = setup.client("oai-chat").chat.completions.create(
        model="", messages=[{"role": "user", "content": "you are lovely"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    finish = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    extension = (finish.model_extra or {})["wallaroo"]
    assert extension["pipeline"] == "oai-chat" and {"toxicity", "profanity"} <= set(extension["scores"])
    whole = setup.client("oai-chat").chat.completions.create(model="", messages=[{"role": "user", "content": "hello"}])
    assert set((whole.model_extra or {})["wallaroo"]["scores"]) == set(extension["scores"])

    logs = setup.admin.logs("oai-chat", limit=1000)
    assert len(logs) == before + 2
    newest = logs.iloc[1]  # newest first: the streamed call is the second newest
    assert newest["out.generated_text"] == "echo: you are lovely" and newest["out.completion_tokens"] == 4
    assert newest["out.toxicity"] == pytest.approx(extension["scores"]["toxicity"])
    assert json.loads(newest["in.openai_request"])["messages"] == [{"role": "user", "content": "you are lovely"}]
    metrics = httpx.get(setup.server.url + "/metrics", headers=setup.server.headers).text
    assert 'wallaroo_openai_time_to_first_token_seconds_count{pipeline="oai-chat"}' in metrics
    assert any(line.startswith("wallaroo_usage_completion_tokens_total{") and 'pipeline="oai-chat"' in line
               and float(line.rsplit(" ", 1)[1]) >= 4 for line in metrics.splitlines())


def test_an_inference_only_key_calls_it_and_errors_have_openais_shape(setup: Setup) -> None:
    key = setup.admin.create_key("chat-only", "inference", pipelines=["azure-chat"]).secret.get_secret_value()
    messages = [{"role": "user", "content": "hi"}]
    assert setup.client("azure-chat", key).chat.completions.create(model="", messages=messages).choices[0].message.content == "echo: hi"
    with pytest.raises(openai.PermissionDeniedError):
        setup.client("vertex-chat", key).chat.completions.create(model="", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        setup.client("azure-chat", "not-a-key").chat.completions.create(model="", messages=messages)

    client = setup.client("azure-chat")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="", messages=messages, tools=[{"type": "function", "function": {"name": "f"}}])
    assert bad.value.body["param"] == "tools" and bad.value.body["type"] == "invalid_request_error"
    assert "tool calling is not supported" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="", messages=messages, temperature=5)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="", messages=[])

    configure(setup.server, _version_id(setup, "azure-llm"), {"enabled": False})
    try:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="", messages=messages)
        assert "openai_config with enabled=true" in missing.value.body["message"]
    finally:
        configure(setup.server, _version_id(setup, "azure-llm"), ENABLED)


def _version_id(setup: Setup, model: str) -> int:
    response = httpx.post(f"{setup.server.url}/v1/api/models/list_versions", headers=setup.server.headers,
                          json={"model_id": model, "workspace_id": 1}, timeout=30)
    return response.json()[-1]["id"]


def test_upstream_failure_mid_call_is_an_openai_error(setup: Setup) -> None:
    setup.vertex.faults.server_error_next(10, status=500)
    try:
        with pytest.raises(openai.APIStatusError) as failed:
            setup.client("vertex-chat").chat.completions.create(model="", messages=[{"role": "user", "content": "x"}])
        assert failed.value.status_code == 502 and "HTTP 500" in failed.value.body["message"]
        with pytest.raises(openai.APIError, match="HTTP 500"):
            list(setup.client("vertex-chat").chat.completions.create(
                model="", messages=[{"role": "user", "content": "x"}], stream=True))
    finally:
        setup.vertex.faults.clear()


def test_a_caller_that_leaves_mid_stream_still_gets_the_call_logged_whole(setup: Setup) -> None:
    before = len(setup.admin.logs("azure-chat", limit=1000))
    setup.azure.faults.set_token_interval(0.2)
    try:
        body = {"model": "", "stream": True, "messages": [{"role": "user", "content": "a long story about a cat"}]}
        with httpx.stream("POST", setup.base_url("azure-chat") + "/chat/completions", json=body,
                          headers=setup.server.headers, timeout=60) as response:
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        deadline = time.monotonic() + 60
        while len(logs := setup.admin.logs("azure-chat", limit=1000)) == before and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        setup.azure.faults.set_token_interval(0)
    assert len(logs) == before + 1 and logs.iloc[0]["out.generated_text"] == "echo: a long story about a cat"
    # the worker is free again: the next call is answered
    assert setup.client("azure-chat").completions.create(model="", prompt="next").choices[0].text == "echo: next"
