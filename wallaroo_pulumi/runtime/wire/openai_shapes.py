"""OpenAI's answer shapes: `chat.completion` / `text_completion` objects, their streamed chunks as
server-sent events (`data: <json>` blank line, `data: [DONE]` last), usage, and the error object.
Our one extension: a `wallaroo` object (documented in the README) with the pipeline's later steps'
scores, on the whole answer and on a streamed answer's finishing chunk."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["chat", "completion"]

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
               429: "rate_limit_error"}
ERROR_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}


def error_object(message: str, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body for an HTTP status."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or ERROR_CODES.get(status)}}


def sse(obj: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    return b"data: " + (obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))).encode() + b"\n\n"


DONE = sse("[DONE]")


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """Token counts as OpenAI reports them (0 where the upstream reported none)."""
    p, c = max(prompt_tokens, 0), max(completion_tokens, 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


@dataclass
class Answer:
    """The ids of one answer, shared by its whole object or by all its chunks."""

    kind: Kind
    model: str
    id: str = field(default="")
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            self.id = ("chatcmpl-" if self.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None}

    def _choice(self, text: str | None, finish: str | None, first: bool) -> dict[str, Any]:
        if self.kind == "completion":
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {"role": "assistant", "content": text or ""} if first else (
            {"content": text} if text else {})
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def whole(self, text: str, finish: str, tokens: dict[str, int], extension: dict[str, Any]) -> dict[str, Any]:
        """The unstreamed answer."""
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                      "logprobs": None, "finish_reason": finish}
            obj = self._base("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = self._base("text_completion")
        return {**obj, "choices": [choice], "usage": tokens, "wallaroo": extension}

    def delta(self, text: str, first: bool, include_usage: bool) -> bytes:
        obj = {**self._base(self.chunk_object), "choices": [self._choice(text, None, first)]}
        if include_usage:
            obj["usage"] = None
        return sse(obj)

    def finish(self, reason: str, first: bool, include_usage: bool, extension: dict[str, Any]) -> bytes:
        """The chunk that ends the choice, with our extension."""
        obj = {**self._base(self.chunk_object), "choices": [self._choice(None, reason, first)], "wallaroo": extension}
        if include_usage:
            obj["usage"] = None
        return sse(obj)

    def usage_chunk(self, tokens: dict[str, int]) -> bytes:
        """The last chunk when `stream_options.include_usage`: no choices, the usage."""
        return sse({**self._base(self.chunk_object), "choices": [], "usage": tokens})
