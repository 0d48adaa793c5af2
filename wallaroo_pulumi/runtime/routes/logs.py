"""Logged inferences: `POST /v1/api/pipelines/get_logs` (JSON or Arrow pages), a pipeline's log
topic (`/v1/api/plateau/get_topic_name`) and the SDK's `POST /v1/logs/topic/{topic}/records`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wallaroo_pulumi.runtime.core.errors import BadRequest, describe_validation_error
from wallaroo_pulumi.runtime.routes import runtime_of
from wallaroo_pulumi.runtime.wire.dataset import Dataset
from wallaroo_pulumi.runtime.wire.formats import ARROW_FILE, encode_table, response_kind

router = APIRouter(tags=["logs"])


def _order(value: Any) -> Any:
    """`asc`/`desc` (the generated client's enum) or `Asc`/`Desc` (the docs' curl)."""
    return value.capitalize() if isinstance(value, str) and value.lower() in ("asc", "desc") else value


class Window(BaseModel):
    model_config = ConfigDict(extra="allow")
    order: Literal["Asc", "Desc"] = "Desc"
    page_size: int = Field(default=1000, ge=1, le=100_000)
    start_time: datetime | None = None
    end_time: datetime | None = None

    _order = field_validator("order", mode="before")(classmethod(lambda cls, v: _order(v)))

    @model_validator(mode="after")
    def _both(self) -> Window:
        if (self.start_time is None) != (self.end_time is None):
            raise ValueError("start_time and end_time: give both (RFC 3339) or neither")
        if self.start_time and self.end_time and self.start_time.tzinfo is None:
            raise ValueError("start_time: needs a timezone (RFC 3339, e.g. 2024-01-01T00:00:00Z)")
        return self


class GetLogs(Window):
    pipeline_name: str
    workspace_id: int = 1
    cursor: str | None = None


@router.post(
    "/v1/api/pipelines/get_logs",
    summary="Logged inferences; Accept application/json (default) or application/vnd.apache.arrow.file",
    responses={200: {"headers": {"x-iteration-cursor": {"schema": {"type": "string"}},
                                 "x-iteration-status": {"schema": {"type": "string"}}}}},
)
async def get_logs(request: Request, body: GetLogs) -> Response:
    page = await runtime_of(request).logs.page(
        body.pipeline_name, body.workspace_id, body.start_time, body.end_time, body.page_size, body.order, body.cursor
    )
    kind = response_kind(request.headers.get("accept"), "json")
    payload, media_type = encode_table(page.table, kind)
    headers = {"x-iteration-status": page.status}
    if page.cursor:
        headers["x-iteration-cursor"] = page.cursor
    return Response(payload, media_type=media_type, headers=headers)


class TopicOf(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_pk_id: int | None = None
    pipeline_name: str | None = None
    workspace_id: int | None = None


@router.post("/v1/api/plateau/get_topic_name", summary="A pipeline's log topic, by pk id or by name")
def get_topic_name(request: Request, body: TopicOf) -> dict:
    return {"topic_name": runtime_of(request).logs.topic(body.pipeline_pk_id, body.pipeline_name, body.workspace_id)}


@router.post(
    "/v1/logs/topic/{topic}/records",
    summary="A page of a topic's records as an Arrow file; query: page_size, order, time.start/time.end, dataset[], "
            "dataset.exclude[], dataset.separator; body: {} or the previous page's `next`; schema metadata `status`",
)
async def topic_records(request: Request, topic: str) -> Response:
    query = {key: request.query_params.getlist(key) for key in request.query_params}
    params = {k: v[-1] for k, v in query.items() if not k.startswith("dataset")}
    try:
        window = Window.model_validate({"order": params.get("order", "desc"), "page_size": params.get("page_size", 100),
                                        "start_time": params.get("time.start"), "end_time": params.get("time.end")})
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc).replace("start_time", "time.start")
                         .replace("end_time", "time.end")) from None
    raw = await request.body()
    iterator = json.loads(raw) if raw.strip() else {}
    if not isinstance(iterator, dict):
        raise BadRequest("body: expected {} or the previous page's `next` object")
    page = await runtime_of(request).logs.topic_page(topic, window.start_time, window.end_time, window.page_size,
                                                     window.order, iterator.get("cursor"))
    status: dict[str, Any] = {"status": page.status}
    if page.cursor:
        status["next"] = {"cursor": page.cursor}
    table = Dataset.from_query(query).select(page.table)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"status": json.dumps(status).encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW_FILE)
