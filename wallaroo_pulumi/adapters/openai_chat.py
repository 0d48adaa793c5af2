"""OpenAI (and OpenAI-compatible) chat completions as a BYOP model's upstream.

``POST {OPENAI_BASE_URL}/chat/completions`` with ``Authorization: Bearer {OPENAI_API_KEY}``, one
request per row; a row's chat call (:mod:`.chat`) is sent as it is, and streamed as OpenAI's
``chat.completion.chunk`` events. Environment: ``components/byop/openai_llm/README.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from wallaroo_pulumi.adapters.chat import ChatCall, StreamDelta
from wallaroo_pulumi.adapters.config import Env
from wallaroo_pulumi.adapters.http import (
    CommonSettings,
    HttpLLMAdapter,
    MalformedResponse,
    PreparedRequest,
    RowResult,
    usage_int,
)
from wallaroo_pulumi.adapters.redact import Redactor

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


def chat_messages(system_prompt: str | None, text: str) -> list[dict[str, str]]:
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": text})
    return messages


def chat_body(
    settings: CommonSettings, system_prompt: str | None, text: str, extra: Mapping[str, Any], model: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if model:
        body["model"] = model
    body["messages"] = chat_messages(system_prompt, text)
    if settings.max_tokens is not None and "max_completion_tokens" not in extra:
        body["max_tokens"] = settings.max_tokens
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    body.update(extra)
    return body


def call_body(settings: CommonSettings, system_prompt: str | None, call: ChatCall, extra: Mapping[str, Any],
              model: str | None, stream: bool) -> dict[str, Any]:
    """A chat call's body: the caller's messages (the configured system prompt first when they have
    none) and parameters over the configured defaults; streamed with usage in the last event."""
    body: dict[str, Any] = {"model": model} if model else {}
    messages = list(call.messages)
    if system_prompt and not any(m.get("role") in ("system", "developer") for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    body["messages"] = messages
    if settings.max_tokens is not None and call.max_tokens is None and "max_completion_tokens" not in extra:
        body["max_tokens"] = settings.max_tokens
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    body.update(extra)
    body.update(call.params)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse_chat_chunk(data: str, upstream: str) -> Iterator[StreamDelta]:
    """One ``chat.completion.chunk`` event: its content delta, finish reason, and usage (last event)."""
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise MalformedResponse(f"stream event is {type(obj).__name__}, expected an object")
    if isinstance(obj.get("error"), dict):
        raise MalformedResponse(f"{upstream} sent an error mid-stream: {obj['error'].get('message')}")
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    text, finish = "", None
    choices = obj.get("choices") or []
    if choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta") or {}
        text = delta.get("content") or "" if isinstance(delta, dict) else ""
        finish = choices[0].get("finish_reason")
    yield StreamDelta(text, finish, usage_int(usage.get("prompt_tokens")), usage_int(usage.get("completion_tokens")))


def parse_chat_completion(body: Any, upstream: str) -> RowResult:
    """Read a chat.completion object: first choice's message content + usage."""
    if not isinstance(body, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("no 'choices' in the chat completion")
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise MalformedResponse("choices[0] has no 'message' object")
    message = choice["message"]
    content = message.get("content")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    prompt_tokens = usage_int(usage.get("prompt_tokens"))
    completion_tokens = usage_int(usage.get("completion_tokens"))
    if content is None:
        reason = choice.get("finish_reason")
        refusal = message.get("refusal")
        why = f"refusal: {refusal}" if refusal else f"finish_reason={reason}"
        return RowResult("", prompt_tokens, completion_tokens, f"{upstream}: empty completion ({why})", reason or "")
    if not isinstance(content, str):
        raise MalformedResponse(f"choices[0].message.content is {type(content).__name__}, expected a string")
    return RowResult(content, prompt_tokens, completion_tokens, "", choice.get("finish_reason") or "")


class OpenAIChatAdapter(HttpLLMAdapter):
    name = "openai"

    def __init__(
        self,
        settings: CommonSettings,
        *,
        model: str,
        api_key: str | None,
        base_url: str = DEFAULT_OPENAI_BASE_URL,
        system_prompt: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(settings, Redactor([api_key]))
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.system_prompt = system_prompt
        self.extra_body = dict(extra_body or {})
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        if organization:
            self._headers["OpenAI-Organization"] = organization
        if project:
            self._headers["OpenAI-Project"] = project

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OpenAIChatAdapter:
        env = Env(environ, adapter="openai")
        base_url = env.url("OPENAI_BASE_URL", "the API base URL, e.g. https://api.openai.com/v1", required=False)
        if base_url is None:
            api_key: str | None = env.require(
                "OPENAI_API_KEY", "your OpenAI API key", secret=True, config_key="openaiApiKey"
            )
            base_url = DEFAULT_OPENAI_BASE_URL
        else:
            api_key = env.raw("OPENAI_API_KEY")
        model = env.require("OPENAI_MODEL", "the model name, e.g. gpt-4o-mini", config_key="openaiModel")
        return cls(
            CommonSettings.from_env(env),
            model=model,
            api_key=api_key,
            base_url=base_url,
            system_prompt=env.raw("SYSTEM_PROMPT"),
            organization=env.raw("OPENAI_ORGANIZATION"),
            project=env.raw("OPENAI_PROJECT"),
            extra_body=env.json_object("OPENAI_EXTRA_BODY"),
        )

    def build_request(self, text: str) -> PreparedRequest:
        return PreparedRequest(
            url=f"{self.base_url}/chat/completions",
            json=chat_body(self.settings, self.system_prompt, text, self.extra_body, self.model),
            headers=self._headers,
        )

    def parse_response(self, text: str, body: Any) -> RowResult:
        return parse_chat_completion(body, self.name)

    def build_chat_request(self, call: ChatCall, stream: bool) -> PreparedRequest:
        return PreparedRequest(
            url=f"{self.base_url}/chat/completions",
            json=call_body(self.settings, self.system_prompt, call, self.extra_body, self.model, stream),
            headers={**self._headers, "Accept": "text/event-stream"} if stream else self._headers,
        )

    def parse_chat_response(self, call: ChatCall, body: Any) -> RowResult:
        return parse_chat_completion(body, self.name)

    def parse_stream_event(self, data: str) -> Iterator[StreamDelta]:
        return parse_chat_chunk(data, self.name)
