"""`POST /v1/api/pipelines/get_logs`: pages of logged inferences, JSON or Arrow."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from wallaroo_pulumi.runtime.formats import encode_table, response_kind
from wallaroo_pulumi.runtime.routes import runtime_of

router = APIRouter(prefix="/v1/api/pipelines", tags=["logs"])


class GetLogs(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_name: str
    workspace_id: int = 1
    cursor: str | None = None
    order: Literal["Asc", "Desc"] = "Desc"
    page_size: int = Field(default=1000, ge=1, le=100_000)
    start_time: datetime | None = None
    end_time: datetime | None = None

    @model_validator(mode="after")
    def _both(self) -> GetLogs:
        if (self.start_time is None) != (self.end_time is None):
            raise ValueError("start_time and end_time: give both (RFC 3339) or neither")
        if self.start_time and self.end_time and self.start_time.tzinfo is None:
            raise ValueError("start_time: needs a timezone (RFC 3339, e.g. 2024-01-01T00:00:00Z)")
        return self


@router.post(
    "/get_logs",
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
