"""A stand-in for the OpenAI API (and any OpenAI-compatible server), under ``/v1``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from wallaroo_pulumi.standins.base import StandinServer, count_tokens, paced

DEFAULT_API_KEY = "sk-standin-0123456789abcdef"
DEFAULT_MODEL = "gpt-4o-mini"


def mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def openai_error(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validate_chat_body(body: Any, *, require_model: bool) -> tuple[dict[str, Any] | None, tuple[int, dict[str, Any]] | None]:
    if not isinstance(body, dict):
        return None, (400, openai_error("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"))
    if require_model and not body.get("model"):
        return None, (400, openai_error("you must provide a model parameter"))
    messages = body.get("messages")
    if messages is None:
        return None, (400, openai_error("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"))
    if not isinstance(messages, list) or not messages:
        return None, (400, openai_error("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", param="messages", code="empty_array"))
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool", "function"):
            return None, (400, openai_error(f"Invalid value for 'messages[{i}].role'.", param=f"messages[{i}].role", code="invalid_value"))
        if "content" not in m:
            return None, (400, openai_error(f"Missing required parameter: 'messages[{i}].content'.", param=f"messages[{i}].content", code="missing_required_parameter"))
    mt = body.get("max_tokens", body.get("max_completion_tokens"))
    if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
        return None, (400, openai_error(f"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got {mt} instead.", param="max_tokens", code="integer_below_min_value"))
    temp = body.get("temperature")
    if temp is not None and (not isinstance(temp, (int, float)) or not 0 <= temp <= 2):
        return None, (400, openai_error(f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {temp} instead.", param="temperature", code="decimal_above_max_value"))
    return body, None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(messages: Iterable[dict[str, Any]]) -> str:
    text = ""
    for m in messages:
        if m.get("role") == "user":
            text = _content_text(m.get("content"))
    return text


def prompt_token_count(messages: Iterable[dict[str, Any]]) -> int:
    return sum(count_tokens(_content_text(m.get("content"))) for m in messages)


def build_completion(
    body: dict[str, Any],
    model: str,
    answer: Callable[[str, int | None], tuple[str, int, str]],
    extra_choice: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object answering a validated request body."""
    messages = body["messages"]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    text, completion_tokens, finish = answer(last_user_text(messages), max_tokens)
    prompt_tokens = prompt_token_count(messages)
    n = int(body.get("n") or 1)
    choices = []
    for i in range(n):
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": finish,
        }
        if extra_choice:
            choice.update(extra_choice)
        choices.append(choice)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens * n,
            "total_tokens": prompt_tokens + completion_tokens * n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_standin",
    }


def stream_completion(
    completion: dict[str, Any], include_usage: bool, headers: dict[str, str], interval_s: float = 0.0,
    content_filter: dict[str, Any] | None = None,
) -> StreamingResponse:
    """The same completion as ``chat.completion.chunk`` server-sent events, a word per event,
    ``interval_s`` apart; the finish event, the usage event and ``[DONE]`` in one write, as the
    stream ends. With ``content_filter`` (Azure OpenAI) the stream starts with Azure's
    prompt-filter event (no choices, empty id and model) and each content event carries the filter's
    results, as Azure sends them."""
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    text = completion["choices"][0]["message"]["content"]
    finish = completion["choices"][0]["finish_reason"]

    def chunk(delta: dict[str, Any], finish_reason: str | None, usage: Any = None, choices: bool = True,
              filtered: bool = False) -> str:
        obj = dict(base)
        obj["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}] if choices else []
        if content_filter is not None and choices:
            obj["choices"][0]["content_filter_results"] = content_filter if filtered else {}
        if include_usage:
            obj["usage"] = usage
        return f"data: {json.dumps(obj)}\n\n"

    def events() -> Iterable[str]:
        if content_filter is not None:
            first = {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                     "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": content_filter}]}
            yield f"data: {json.dumps(first)}\n\n"
        yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        words = text.split(" ")
        for i, w in enumerate(words):
            yield chunk({"content": w if i == 0 else " " + w}, None, filtered=True)
        # generation has ended: the finish, the usage and [DONE] go out together (only tokens are paced)
        yield (chunk({}, finish) + (chunk({}, None, usage=completion["usage"], choices=False) if include_usage else "")
               + "data: [DONE]\n\n")

    return StreamingResponse(paced(events(), interval_s), media_type="text/event-stream", headers=headers)


class OpenAIStandin(StandinServer):
    """`/v1/models` and `/v1/chat/completions` (streaming too) with bearer keys and OpenAI's error shapes;
    answers are :func:`echo_answer` of the last user message. Clients use ``openai_base_url``.
    """

    def __init__(
        self,
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        models: Iterable[str] = (DEFAULT_MODEL,),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_keys = set(api_keys)
        self.models = list(models)
        super().__init__(host, port)

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    # ---- shapes --------------------------------------------------------------------------
    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        type_ = {429: "requests", 401: "invalid_request_error"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return openai_error(message, type_, None, code if status != 500 else None)

    def rate_limit_message(self, retry_after: float | None) -> str:
        wait = f" Please try again in {retry_after:g}s." if retry_after is not None else ""
        return f"Rate limit reached for {self.models[0] if self.models else 'model'} on requests per min (RPM): Limit 3, Used 3, Requested 1.{wait}"

    def _auth_error(self, request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization")
        if not header or not header.lower().startswith("bearer "):
            return JSONResponse(
                openai_error(
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) "
                    "if you're accessing the API from your browser and are prompted for a username and password. You "
                    "can obtain an API key from https://platform.openai.com/account/api-keys."
                ),
                401,
            )
        key = header[7:].strip()
        if key not in self.api_keys:
            return JSONResponse(
                openai_error(
                    f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                ),
                401,
            )
        return None

    def _headers(self, started: float) -> dict[str, str]:
        return {
            "x-request-id": f"req_{uuid.uuid4().hex}",
            "openai-processing-ms": str(int((time.perf_counter() - started) * 1000)),
            "openai-version": "2020-10-01",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
        }

    # ---- routes --------------------------------------------------------------------------
    def _routes(self, app: FastAPI) -> None:
        @app.get("/v1/models")
        async def list_models(request: Request) -> Response:
            if (err := self._auth_error(request)) is not None:
                return err
            return JSONResponse(
                {"object": "list", "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "standin"} for m in self.models]}
            )

        @app.get("/v1/models/{model:path}")
        async def get_model(model: str, request: Request) -> Response:
            if (err := self._auth_error(request)) is not None:
                return err
            if model not in self.models:
                return JSONResponse(openai_error(f"The model '{model}' does not exist", code="model_not_found", param="model"), 404)
            return JSONResponse({"id": model, "object": "model", "created": 1700000000, "owned_by": "standin"})

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            started = time.perf_counter()
            if (err := self._auth_error(request)) is not None:
                await self.read_json(request)
                return err
            body, bad = await self.read_json(request)
            if bad is not None:
                return JSONResponse(validate_chat_body(None, require_model=True)[1][1], 400)  # type: ignore[index]
            body, problem = validate_chat_body(body, require_model=True)
            if problem is not None:
                return JSONResponse(problem[1], problem[0])
            assert body is not None
            model = body["model"]
            if self.models and model not in self.models:
                return JSONResponse(
                    openai_error(f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"), 404
                )
            completion = build_completion(body, model, self.answer)
            headers = self._headers(started)
            if body.get("stream"):
                opts = body.get("stream_options") or {}
                return stream_completion(completion, bool(opts.get("include_usage")), headers, self.faults.token_interval_s)
            return JSONResponse(completion, headers=headers)
