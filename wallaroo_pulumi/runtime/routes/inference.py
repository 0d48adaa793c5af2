"""Inference routes: `POST /v1/api/pipelines/infer/{pipeline}-{id}/{pipeline}`, the same
without the trailing name, and edge-style `/infer/{pipeline}`; `dataset[]`, `dataset.exclude[]`
and `dataset.separator` query parameters shape the answer."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from wallaroo_pulumi.runtime.core.errors import TooLarge
from wallaroo_pulumi.runtime.routes import runtime_of
from wallaroo_pulumi.runtime.wire.dataset import Dataset
from wallaroo_pulumi.runtime.wire.formats import ACCEPTED

router = APIRouter(tags=["inference"])

INFER_DOC = {
    "requestBody": {
        "content": {
            "application/json; format=pandas-records": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/vnd.apache.arrow.file": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    }
}


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"request body of {int(length)} bytes exceeds the limit of {limit} bytes (max_request_bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes (max_request_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _infer(request: Request, pipeline_name: str, deployment_id: int | None) -> Response:
    rt = runtime_of(request)
    query = {key: request.query_params.getlist(key) for key in request.query_params}
    answer = await rt.inference.run(
        pipeline_name, deployment_id, lambda: read_body(request, rt.settings.max_request_bytes),
        request.headers.get("content-type"), request.headers.get("accept"), Dataset.from_query(query),
    )
    return Response(answer.payload, media_type=answer.media_type, headers={"Server-Timing": answer.server_timing})


@router.post("/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}", openapi_extra=INFER_DOC,
             summary=f"Run an inference; body and answer are {ACCEPTED}")
async def infer(request: Request, deploy_name: str, pipeline_name: str) -> Response:
    return await _infer(request, *runtime_of(request).inference.resolve(deploy_name, pipeline_name))


@router.post("/v1/api/pipelines/infer/{deploy_name}", openapi_extra=INFER_DOC, summary="Inference without the trailing pipeline name")
async def infer_short(request: Request, deploy_name: str) -> Response:
    return await _infer(request, *runtime_of(request).inference.resolve(deploy_name))


@router.post("/infer/{pipeline_name}", openapi_extra=INFER_DOC, summary="Edge-style inference by pipeline name")
async def infer_edge(request: Request, pipeline_name: str) -> Response:
    return await _infer(request, pipeline_name, None)
