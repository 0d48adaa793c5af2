"""Gemini's `generateContent` shapes on Vertex AI, for the Vertex stand-in: the request check, the
`GenerateContentResponse`, and `streamGenerateContent` as Google streams it (server-sent events
with ``alt=sse``, each ``data: <response>`` and a CRLF blank line; else one JSON array sent
element by element). The last chunk carries ``finishReason`` and the token counts."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from wallaroo_pulumi.standins.base import count_tokens

MODEL_VERSION = "gemini-2.0-flash-001"
FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}


def check_request(body: Any) -> str | None:
    """What is wrong with a generateContent body (Google's message), or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "Unable to submit request because it must include at least one parts field, which describes the prompt input."
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}].role)"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            return f"Unable to submit request because contents[{i}] must include at least one parts field."
    config = body.get("generationConfig", {})
    if not isinstance(config, dict):
        return "Invalid JSON payload received. Unknown name \"generationConfig\": not an object."
    limit = config.get("maxOutputTokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        return "Unable to submit request because maxOutputTokens must be a positive integer."
    return None


def _texts(content: dict[str, Any]) -> str:
    return " ".join(str(p.get("text", "")) for p in content.get("parts", []) if isinstance(p, dict))


def prompt_of(body: dict[str, Any]) -> tuple[str, int]:
    """(the last user turn's text, the prompt's token count: every turn and the system instruction)."""
    last, tokens = "", 0
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        tokens += count_tokens(_texts(system))
    for content in body["contents"]:
        tokens += count_tokens(_texts(content))
        if content.get("role", "user") == "user":
            last = _texts(content)
    return last, tokens


def _response(parts: list[dict[str, Any]] | None, finish: str | None, usage: dict[str, Any], response_id: str) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts or []}}
    if finish is not None:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": MODEL_VERSION,
            "createTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "responseId": response_id}


def _usage(prompt_tokens: int, answer_tokens: int) -> dict[str, Any]:
    return {"promptTokenCount": prompt_tokens, "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt_tokens + answer_tokens, "trafficType": "ON_DEMAND",
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": answer_tokens}]}


Answer = Callable[[str, "int | None"], tuple[str, int, str]]


def generate(body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """The `GenerateContentResponse` of a checked body."""
    prompt, prompt_tokens = prompt_of(body)
    text, answer_tokens, finish = answer(prompt, body.get("generationConfig", {}).get("maxOutputTokens"))
    return _response([{"text": text}], FINISH[finish], _usage(prompt_tokens, answer_tokens), secrets.token_urlsafe(12))


def stream_chunks(body: dict[str, Any], answer: Answer) -> Iterator[dict[str, Any]]:
    """The responses `streamGenerateContent` sends: a few words each, the last with the finish and counts."""
    prompt, prompt_tokens = prompt_of(body)
    text, answer_tokens, finish = answer(prompt, body.get("generationConfig", {}).get("maxOutputTokens"))
    response_id = secrets.token_urlsafe(12)
    words = text.split(" ")
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        last = i == len(words) - 1
        yield _response([{"text": piece}], FINISH[finish] if last else None,
                        _usage(prompt_tokens, answer_tokens) if last else {"trafficType": "ON_DEMAND"}, response_id)


def sse_events(chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\r\n\r\n"


def json_array_events(chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
    """``[`` first chunk, then ``,\\r\\n`` and each next one, then ``]``, as Google's JSON stream."""
    first = True
    for chunk in chunks:
        yield ("[" if first else ",\r\n") + json.dumps(chunk)
        first = False
    yield "]" if not first else "[]"
