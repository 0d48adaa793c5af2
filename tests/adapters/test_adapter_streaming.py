"""Chat calls and streamed answers through each adapter against its stand-in: the caller's messages
reach chat upstreams as they are, pieces arrive as the upstream streams them (OpenAI and Azure
OpenAI SSE, Gemini's streamGenerateContent on Vertex), the whole answer carries usage and the
finish reason, and text-only upstreams answer in one piece. The stand-ins' streams are checked
against the clouds' own formats too."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import httpx
import numpy as np
import pytest

from wallaroo_pulumi.adapters.azure import AzureMLAdapter, AzureOpenAIAdapter, azure_adapter_from_env
from wallaroo_pulumi.adapters.chat import ChatCall, sse_data
from wallaroo_pulumi.adapters.http import HttpLLMAdapter
from wallaroo_pulumi.adapters.openai_chat import OpenAIChatAdapter
from wallaroo_pulumi.adapters.vertex import VertexAIAdapter
from wallaroo_pulumi.standins import AzureStandin, OpenAIStandin, VertexStandin

from .conftest import FAST_RETRY
from .test_adapter_azure import ml_env, openai_env
from .test_adapter_openai import env_for as openai_env_for
from .test_adapter_vertex import env_for as vertex_env_for

CALL = ChatCall([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "why is the sky blue"}],
                {"max_tokens": 50, "temperature": 0.2})


def rows(*calls: ChatCall) -> dict[str, np.ndarray]:
    return {"text": np.array(["ignored" for _ in calls], dtype=object),
            "openai_request": np.array([c.to_json() for c in calls], dtype=object)}


def drain(gen: Generator[dict[str, np.ndarray], None, dict[str, np.ndarray]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    chunks = []
    while True:
        try:
            chunk = next(gen)
        except StopIteration as done:
            return chunks, {k: list(v) for k, v in done.value.items()}
        chunks.append({k: v.tolist()[0] for k, v in chunk.items()})


def check_streamed(adapter: HttpLLMAdapter, pieces_at_least: int) -> dict[str, Any]:
    chunks, whole = drain(adapter.predict_stream(rows(CALL)))
    assert len(chunks) >= pieces_at_least
    assert "".join(c["delta"] for c in chunks) == whole["generated_text"][0] == "echo: why is the sky blue"
    assert chunks[-1]["finish_reason"] == "stop" and whole["finish_reason"] == ["stop"]
    assert whole["error"] == [""]
    return whole


def test_openai_streams_the_callers_messages_with_usage(openai_server: OpenAIStandin) -> None:
    with OpenAIChatAdapter.from_env(openai_env_for(openai_server)) as adapter:
        whole = check_streamed(adapter, pieces_at_least=6)
        sent = openai_server.stats.recent[-1].body
        assert sent["messages"] == CALL.messages and sent["max_tokens"] == 50 and sent["temperature"] == 0.2
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert whole["prompt_tokens"] == [7] and whole["completion_tokens"] == [6]
        # the same call unstreamed: one request, the finish reason as a column
        out = adapter.predict(rows(CALL))
        assert list(out["generated_text"]) == ["echo: why is the sky blue"] and list(out["finish_reason"]) == ["stop"]
        assert "stream" not in openai_server.stats.recent[-1].body


def test_openai_stream_retries_before_it_starts(openai_server: OpenAIStandin) -> None:
    openai_server.faults.rate_limit_next(1, retry_after=0)
    with OpenAIChatAdapter.from_env(openai_env_for(openai_server)) as adapter:
        check_streamed(adapter, pieces_at_least=6)
    assert openai_server.stats.snapshot()["by_status"] == {"429": 1, "200": 1}


def test_azure_openai_streams_past_its_prompt_filter_event(azure_server: AzureStandin) -> None:
    adapter = azure_adapter_from_env(openai_env(azure_server))
    assert isinstance(adapter, AzureOpenAIAdapter)
    with adapter:
        whole = check_streamed(adapter, pieces_at_least=6)
    assert whole["completion_tokens"] == [6]
    assert azure_server.stats.recent[-1].query["api-version"]


def test_vertex_gemini_streams_from_stream_generate_content(vertex_server: VertexStandin, service_account: dict) -> None:
    with VertexAIAdapter.from_env(vertex_env_for(vertex_server, service_account, VERTEX_API="gemini")) as adapter:
        whole = check_streamed(adapter, pieces_at_least=6)
        sent = vertex_server.stats.recent[-1]
        assert sent.path.endswith(":streamGenerateContent") and sent.query == {"alt": "sse"}
        assert sent.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "why is the sky blue"}]}]
        assert sent.body["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0.2}
        assert whole["prompt_tokens"] == [7] and whole["completion_tokens"] == [6]
        out = adapter.predict({"text": np.array(["plain text"], dtype=object)})  # the plain path: generateContent
        assert list(out["generated_text"]) == ["echo: plain text"]
        assert vertex_server.stats.recent[-1].path.endswith(":generateContent")


@pytest.mark.parametrize("upstream", ["vertex-predict", "azureml"])
def test_text_only_upstreams_answer_in_one_piece(upstream: str, vertex_server: VertexStandin, azure_server: AzureStandin,
                                                  service_account: dict) -> None:
    adapter = (VertexAIAdapter.from_env(vertex_env_for(vertex_server, service_account))
               if upstream == "vertex-predict" else azure_adapter_from_env(ml_env(azure_server)))
    assert isinstance(adapter, VertexAIAdapter | AzureMLAdapter)
    with adapter:
        chunks, whole = drain(adapter.predict_stream(rows(ChatCall([{"role": "user", "content": "hi there"}]))))
    assert [c["delta"] for c in chunks] == ["echo: hi there"] == whole["generated_text"]


def test_stand_in_streams_match_the_clouds(azure_server: AzureStandin, vertex_server: VertexStandin, service_account: dict) -> None:
    chat = {"messages": [{"role": "user", "content": "a b"}], "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client() as client:
        azure = client.post(f"{azure_server.azure_openai_endpoint}/openai/deployments/gpt-4o-mini/chat/completions",
                            params={"api-version": "2024-10-21"}, json=chat,
                            headers={"api-key": openai_env(azure_server)["AZURE_OPENAI_API_KEY"]})
        events = list(sse_data(azure.text.splitlines()))
        assert azure.headers["content-type"].startswith("text/event-stream") and events[-1] == "[DONE]"
        first, usage = json.loads(events[0]), json.loads(events[-2])
        assert first["choices"] == [] and first["id"] == "" and first["prompt_filter_results"][0]["prompt_index"] == 0
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
        assert "content_filter_results" in json.loads(events[2])["choices"][0]

        with VertexAIAdapter.from_env(vertex_env_for(vertex_server, service_account)) as adapter:
            auth = adapter.auth_headers()
        gemini = {"contents": [{"role": "user", "parts": [{"text": "a b"}]}]}
        url = f"{vertex_server.endpoint_url}:streamGenerateContent"
        sse = client.post(url, params={"alt": "sse"}, json=gemini, headers=auth)
        assert sse.text.count("\r\n\r\n") == 3 and sse.text.startswith("data: {")
        chunks = [json.loads(e) for e in sse_data(sse.text.split("\n"))]
        assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["echo:", " a", " b"]
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP" and chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 3
        assert "finishReason" not in chunks[0]["candidates"][0]
        array = client.post(url, json=gemini, headers=auth)
        assert array.text.startswith("[{") and array.text.endswith("}]") and ",\r\n{" in array.text
        assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in json.loads(array.text)] == ["echo:", " a", " b"]


def test_a_broken_stream_keeps_the_text_so_far_and_names_the_error(openai_server: OpenAIStandin) -> None:
    openai_server.faults.malformed_next(1, kind="not_json")  # a 200 that is not a stream of events
    with OpenAIChatAdapter.from_env({**openai_env_for(openai_server), **FAST_RETRY}) as adapter:
        chunks, whole = drain(adapter.predict_stream(rows(CALL)))
    assert chunks == [] and whole["generated_text"] == [""]
    assert whole["error"][0].startswith("openai: malformed stream: no server-sent events")
