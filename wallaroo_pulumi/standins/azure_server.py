"""A stand-in for Azure OpenAI deployments (``/openai/deployments/...``) and Azure ML online endpoints (``/score``), one server."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from wallaroo_pulumi.standins.base import StandinServer
from wallaroo_pulumi.standins.openai_server import (
    build_completion,
    last_user_text,
    stream_completion,
    validate_chat_body,
)

DEFAULT_AZURE_OPENAI_KEY = "0123456789abcdef0123456789abcdef"
DEFAULT_AZUREML_KEY = "azml-standin-key-0123456789ABCDEFGHIJ"
DEFAULT_API_VERSIONS = ("2024-02-01", "2024-06-01", "2024-10-21", "2024-12-01-preview", "2025-01-01-preview")

_FILTER_OK = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def azure_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class AzureStandin(StandinServer):
    """Azure OpenAI checks `api-key` (or an Entra ID bearer in `bearer_tokens`) and `api-version`, answering
    with Azure's error shapes and content-filter extras; Azure ML `/score` checks `Authorization: Bearer <ml key>`.
    """

    def __init__(
        self,
        *,
        openai_keys: Iterable[str] = (DEFAULT_AZURE_OPENAI_KEY,),
        deployments: dict[str, str] | None = None,
        api_versions: Iterable[str] = DEFAULT_API_VERSIONS,
        bearer_tokens: Iterable[str] = (),
        ml_keys: Iterable[str] = (DEFAULT_AZUREML_KEY,),
        ml_deployments: Iterable[str] = ("blue",),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.openai_keys = set(openai_keys)
        self.deployments = dict(deployments or {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"})
        self.api_versions = set(api_versions)
        self.bearer_tokens = set(bearer_tokens)
        self.ml_keys = set(ml_keys)
        self.ml_deployments = set(ml_deployments)
        super().__init__(host, port)

    @property
    def azure_openai_endpoint(self) -> str:
        return self.base_url

    @property
    def score_url(self) -> str:
        return f"{self.base_url}/score"

    # ---- shapes ------------------------------------------------------------------------
    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        return azure_error(str(status), message)

    def rate_limit_message(self, retry_after: float | None) -> str:
        wait = f" Please retry after {retry_after:g} seconds." if retry_after is not None else ""
        return (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded "
            f"call rate limit of your current OpenAI S0 pricing tier.{wait}"
        )

    def server_error_message(self, status: int) -> str:
        return "The server had an error while processing your request. Sorry about that!"

    # ---- routes --------------------------------------------------------------------------
    def _routes(self, app: FastAPI) -> None:
        app.post("/openai/deployments/{deployment}/chat/completions")(self._chat)
        app.post("/score")(self._score)

    async def _chat(self, deployment: str, request: Request) -> Response:
        key = request.headers.get("api-key")
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if not ((key and key in self.openai_keys) or (bearer and bearer in self.bearer_tokens)):
            await self.read_json(request)
            return JSONResponse(
                azure_error(
                    "401",
                    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                    "valid key for an active subscription and use a correct regional API endpoint for your resource.",
                ),
                401,
            )
        version = request.query_params.get("api-version")
        if not version or version not in self.api_versions:
            await self.read_json(request)
            return JSONResponse(azure_error("404", "Resource not found"), 404)
        if deployment not in self.deployments:
            await self.read_json(request)
            return JSONResponse(
                azure_error(
                    "DeploymentNotFound",
                    "The API deployment for this resource does not exist. If you created the deployment within "
                    "the last 5 minutes, please wait a moment and try again.",
                ),
                404,
            )
        body, bad = await self.read_json(request)
        if bad is not None:
            return JSONResponse(azure_error("BadRequest", "Could not parse the request body as JSON."), 400)
        body, problem = validate_chat_body(body, require_model=False)
        if problem is not None:
            err = problem[1]["error"]
            return JSONResponse({"error": {"message": err["message"], "type": err["type"], "param": err["param"], "code": err["code"]}}, problem[0])
        assert body is not None
        completion = build_completion(
            body,
            self.deployments[deployment],
            self.answer,
            extra_choice={"content_filter_results": _FILTER_OK},
        )
        completion["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _FILTER_OK}]
        completion.pop("service_tier", None)
        headers = {"apim-request-id": completion["id"], "x-ms-region": "East US", "x-ratelimit-remaining-requests": "99"}
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            return stream_completion(completion, bool(opts.get("include_usage")), headers,
                                     self.faults.token_interval_s, content_filter=_FILTER_OK)
        return JSONResponse(completion, headers=headers)

    async def _score(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if token is None or token not in self.ml_keys:
            await self.read_json(request)
            return JSONResponse({"message": "Invalid authentication. Check that the Authorization header holds a valid endpoint key."}, 401)
        deployment = request.headers.get("azureml-model-deployment")
        if deployment is not None and deployment not in self.ml_deployments:
            await self.read_json(request)
            return JSONResponse({"message": f"Deployment '{deployment}' not found for this endpoint."}, 404)
        body, bad = await self.read_json(request)
        if bad is not None:
            return JSONResponse({"message": "Request body is not valid JSON."}, 400)
        data = body.get("input_data") if isinstance(body, dict) else None
        inputs = data.get("input_string") if isinstance(data, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return JSONResponse(
                {"message": "input_data.input_string must be a non-empty list of prompts or chat messages."}, 400
            )
        params = data.get("parameters") or {}
        max_new = params.get("max_new_tokens")
        max_new = max_new if isinstance(max_new, int) and not isinstance(max_new, bool) else None
        started = time.perf_counter()
        headers = {"azureml-model-deployment": deployment or next(iter(sorted(self.ml_deployments)), "blue"),
                   "x-request-time": str(int((time.perf_counter() - started) * 1000))}
        if all(isinstance(m, dict) for m in inputs):
            if not all(isinstance(m.get("role"), str) and "content" in m for m in inputs):
                return JSONResponse({"message": "each chat message needs 'role' and 'content'."}, 400)
            answer, _, _ = self.answer(last_user_text(inputs), max_new)
            return JSONResponse({"output": answer}, headers=headers)
        if not all(isinstance(s, str) for s in inputs):
            return JSONResponse({"message": "input_string must hold only strings (text generation) or only messages (chat)."}, 400)
        return JSONResponse([{"0": self.answer(s, max_new)[0]} for s in inputs], headers=headers)
