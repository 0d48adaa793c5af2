"""Publish routes (Wallaroo's): publish a pipeline version (202), its status, the publishes of a
pipeline, edges (add: 201, remove, list); ours: delete a publish. The edges' own calls, join and
ship_logs, authenticate with the join token and the edge key, not with an API key."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from wallaroo_pulumi.names import dns_label
from wallaroo_pulumi.runtime.core.errors import BadRequest, TooLarge
from wallaroo_pulumi.runtime.routes import runtime_of
from wallaroo_pulumi.runtime.services.access.middleware import bearer

router = APIRouter(prefix="/v1/api", tags=["publish"])


class Publish(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_version_id: int
    model_config_ids: list[int] = Field(default_factory=list)
    engine_config: dict[str, Any] | None = None
    replaces: list[int] | None = None


@router.post("/pipelines/publish", status_code=202)
async def publish(request: Request, body: Publish) -> dict:
    return runtime_of(request).publishes.publish(body.pipeline_version_id, body.model_config_ids, body.engine_config,
                                                 body.replaces or [])


class PublishStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    include_replace_bundles: bool = False


@router.post("/pipelines/get_publish_status")
def get_publish_status(request: Request, body: PublishStatus) -> dict:
    return runtime_of(request).publishes.status(body.id, body.include_replace_bundles)


class ListPublishes(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: int | None = None
    workspace_id: int | None = None


@router.post("/pipelines/list_publishes_for_pipeline")
def list_publishes(request: Request, body: ListPublishes) -> dict:
    return runtime_of(request).publishes.list(body.pipeline_id, body.workspace_id)


class AddEdge(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    pipeline_publish_id: int
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return dns_label(v)


@router.post("/pipelines/add_edge_to_publish", status_code=201)
def add_edge(request: Request, body: AddEdge) -> dict:
    return runtime_of(request).publishes.add_edge(body.pipeline_publish_id, body.name, body.tags)


class EdgeName(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


@router.post("/pipelines/remove_edge")
def remove_edge(request: Request, body: EdgeName) -> dict:
    runtime_of(request).publishes.remove_edge(body.name)
    return {}


class ListEdges(BaseModel):
    model_config = ConfigDict(extra="allow")
    publish_id: int


@router.post("/pipelines/list_edges_by_publish_id")
def list_edges(request: Request, body: ListEdges) -> dict:
    return runtime_of(request).publishes.list_edges(body.publish_id)


class PublishId(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int


@router.post("/pipelines/delete_publish", summary="Ours: delete a publish's image and chart tags from the registry, then it and its edges")
def delete_publish(request: Request, body: PublishId) -> dict:
    return runtime_of(request).publishes.delete(body.id)


@router.post("/pipelines/get_publish_image", summary="Ours: a publish's image and chart: digests, size, push times")
def get_publish_image(request: Request, body: PublishId) -> dict:
    return runtime_of(request).publishes.image(body.id)


class Join(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    join_token: str


@router.post("/edge/join", summary="An edge's first call: its one-use join token for an edge key")
def join(request: Request, body: Join) -> dict:
    return runtime_of(request).edge_links.join(body.name, body.join_token)


@router.post("/edge/ship_logs", summary="An edge's sealed log segment (Arrow IPC stream), taken exactly once")
async def ship_logs(request: Request) -> dict:
    key = bearer(request.scope)
    segment = request.headers.get("x-edge-segment", "")
    dropped = request.headers.get("x-edge-dropped", "0")
    if not segment.isdigit() or not dropped.isdigit():
        raise BadRequest("headers: X-Edge-Segment and X-Edge-Dropped must be whole numbers")
    limit = runtime_of(request).settings.max_request_bytes
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body: a log segment over {limit} bytes (max_request_bytes); lower the edge's segment size")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        table = pa.ipc.open_stream(body).read_all()
    except pa.ArrowInvalid as exc:
        raise BadRequest(f"body: expected an Arrow IPC stream of log rows ({exc})") from None
    return await run_in_threadpool(runtime_of(request).edge_links.receive_logs, key, segment, table, int(dropped))
