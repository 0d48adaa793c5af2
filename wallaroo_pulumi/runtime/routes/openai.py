"""OpenAI-compatible routes on a pipeline's inference URL: `POST {inference url}/openai/v1/chat/completions`
and `/completions` (and the same under the edge-style `/infer/{pipeline}`); `stream: true` answers
with server-sent events. Errors have OpenAI's shape (`http_errors`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from wallaroo_pulumi.runtime.core.errors import TooLarge
from wallaroo_pulumi.runtime.routes import runtime_of
from wallaroo_pulumi.runtime.services.openai_api.requests import Kind

router = APIRouter(tags=["openai"])
FULL = "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}/openai/v1"
EDGE = "/infer/{pipeline_name}/openai/v1"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _serve(request: Request, kind: Kind, pipeline_name: str, deployment_id: int | None) -> Response:
    rt = runtime_of(request)
    limit = rt.settings.max_request_bytes
    raw = await request.body()
    if len(raw) > limit:
        raise TooLarge(f"request body of {len(raw)} bytes exceeds the limit of {limit} bytes (max_request_bytes)")
    call = rt.openai.prepare(kind, pipeline_name, deployment_id, raw)
    if call.request.stream:
        return StreamingResponse(rt.openai.stream(call), media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse(await rt.openai.complete(call))


@router.post(FULL + "/chat/completions", summary="OpenAI chat completions on a pipeline (stream: true for SSE)")
async def chat(request: Request, deploy_name: str, pipeline_name: str) -> Response:
    return await _serve(request, "chat", *runtime_of(request).inference.resolve(deploy_name, pipeline_name))


@router.post(FULL + "/completions", summary="OpenAI completions on a pipeline (stream: true for SSE)")
async def completions(request: Request, deploy_name: str, pipeline_name: str) -> Response:
    return await _serve(request, "completion", *runtime_of(request).inference.resolve(deploy_name, pipeline_name))


@router.post(EDGE + "/chat/completions", summary="OpenAI chat completions, edge-style URL")
async def chat_edge(request: Request, pipeline_name: str) -> Response:
    return await _serve(request, "chat", pipeline_name, None)


@router.post(EDGE + "/completions", summary="OpenAI completions, edge-style URL")
async def completions_edge(request: Request, pipeline_name: str) -> Response:
    return await _serve(request, "completion", pipeline_name, None)
