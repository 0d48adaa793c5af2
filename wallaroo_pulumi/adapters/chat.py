"""A row's OpenAI-shaped call and a streamed answer's pieces.

The runtime's ``/openai/v1`` endpoints send the LLM step a ``text`` column (the prompt as text,
for logs and for upstreams that take only text) and an ``openai_request`` column: JSON of
:class:`ChatCall`, the caller's messages and sampling parameters. Adapters whose upstream speaks
chat send those as they are; the others send the text. :func:`sse_data` reads the server-sent
events every streaming upstream uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: Sampling parameters passed to chat upstreams as the caller sent them (the rest are refused).
CHAT_PARAMS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "presence_penalty",
               "frequency_penalty", "seed", "logit_bias", "user", "response_format")


@dataclass(frozen=True)
class ChatCall:
    """The messages of one call and its sampling parameters (keys of ``CHAT_PARAMS``)."""

    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> ChatCall:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise ValueError("openai_request: expected a JSON object with a 'messages' list")
        return cls(data["messages"], dict(data.get("params") or {}))

    def to_json(self) -> str:
        return json.dumps({"messages": self.messages, "params": self.params}, separators=(",", ":"))

    @property
    def max_tokens(self) -> int | None:
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def stop_sequences(self) -> list[str]:
        stop = self.params.get("stop")
        return [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]


def content_text(content: Any) -> str:
    """A message's content as text (content parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return "" if content is None else str(content)


def prompt_text(messages: Iterable[dict[str, Any]]) -> str:
    """Messages as one prompt for text-only upstreams: a single user message as it is, else
    ``role: content`` lines."""
    items = list(messages)
    if len(items) == 1 and items[0].get("role") == "user":
        return content_text(items[0].get("content"))
    return "\n".join(f"{m.get('role', 'user')}: {content_text(m.get('content'))}" for m in items)


class StreamDelta(NamedTuple):
    """A piece of a streamed answer: new text, and (usually last) the finish reason and token counts
    (-1: not reported in this piece)."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = -1
    completion_tokens: int = -1


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines), as it arrives."""
    data: list[str] = []
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
