"""The OpenAI request bodies we take (chat completions and completions), checked at the edge: the
model version's `openai_config` supplies defaults, the caller's fields win, and a field we cannot
honour is refused by name instead of ignored."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wallaroo_pulumi.adapters.chat import CHAT_PARAMS, ChatCall, prompt_text
from wallaroo_pulumi.runtime.core.errors import BadRequest
from wallaroo_pulumi.runtime.wire.openai_shapes import Kind

UNSUPPORTED = {
    "tools": "tool calling", "tool_choice": "tool calling", "functions": "function calling",
    "function_call": "function calling", "parallel_tool_calls": "tool calling", "logprobs": "log probabilities",
    "top_logprobs": "log probabilities", "audio": "audio output", "modalities": "audio output",
    "prediction": "predicted outputs", "best_of": "best_of", "echo": "echo", "suffix": "suffix",
}
CONFIG_KEYS = {"chat": "chat_completion_config", "completion": "completion_config"}


class OpenAIConfig(BaseModel):
    """A model version's `openai_config`, as Wallaroo's SDK sends it (`wallaroo.openai_config.OpenaiConfig`)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    completion_config: dict[str, Any] | None = Field(default_factory=dict)
    chat_completion_config: dict[str, Any] | None = Field(default_factory=dict)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="one choice per call")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def params(self) -> dict[str, Any]:
        data = self.model_dump(exclude_none=True)
        return {k: data[k] for k in CHAT_PARAMS if k in data}


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None

    def call(self) -> ChatCall:
        messages = [m.model_dump(exclude_none=True) for m in self.messages]
        return ChatCall(messages, self.params())

    def prompt(self) -> str:
        return prompt_text([m.model_dump() for m in self.messages])


class CompletionRequest(_Common):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError(f"one prompt per call (got a list of {len(v)}); send each prompt in its own call")
        return v

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def call(self) -> ChatCall:
        return ChatCall([{"role": "user", "content": self.text}], self.params())


def parse(kind: Kind, raw: bytes, config: OpenAIConfig) -> ChatRequest | CompletionRequest:
    """The request `raw` with the config's defaults under it; BadRequest naming the field (`param`)."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})", param=None) from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (an OpenAI request)", param=None)
    for name, what in UNSUPPORTED.items():
        if body.get(name) not in (None, False):
            raise BadRequest(f"{name}: {what} is not supported by this endpoint; send the call without '{name}'", param=name)
    defaults = getattr(config, CONFIG_KEYS[kind]) or {}
    merged = {**{k: v for k, v in defaults.items() if k not in ("stream", "stream_options")}, **body}
    model = ChatRequest if kind == "chat" else CompletionRequest
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()))
        extra = first.get("type") == "extra_forbidden"
        message = (f"{param}: unknown field for {'/chat/completions' if kind == 'chat' else '/completions'}"
                   if extra else f"{param}: {first.get('msg', 'invalid')}")
        raise BadRequest(message.replace("Value error, ", ""), param=param or None) from None


def prompt_of(request: ChatRequest | CompletionRequest) -> str:
    """The call as one text: the `text` column the LLM step gets beside `openai_request`."""
    if isinstance(request, ChatRequest):
        return request.prompt()
    return request.text


def check_config(config: dict[str, Any], where: str = "openai_config") -> OpenAIConfig:
    """A model version's `openai_config` as given to the upload or config API; BadRequest naming
    the field, including a default no request could carry."""
    try:
        parsed = OpenAIConfig.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()))
        raise BadRequest(f"{where}.{param}: {first.get('msg', 'invalid')}") from None
    for kind, key in CONFIG_KEYS.items():
        model = ChatRequest if kind == "chat" else CompletionRequest
        for name in getattr(parsed, key) or {}:
            if name not in model.model_fields or name in ("messages", "prompt", "stream", "stream_options"):
                allowed = sorted(set(model.model_fields) - {"messages", "prompt", "stream", "stream_options"})
                raise BadRequest(f"{where}.{key}.{name}: not a default a request can take; use one of {', '.join(allowed)}")
    return parsed
