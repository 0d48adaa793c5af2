"""`POST /v1/api/usage/get`: requests, rows and LLM tokens, summed by key, pipeline and/or hour."""

from __future__ import annotations

from fastapi import APIRouter, Request

from wallaroo_pulumi.runtime.routes import runtime_of
from wallaroo_pulumi.runtime.services.access.service import UsageQuery

router = APIRouter(prefix="/v1/api/usage", tags=["usage"])


@router.post("/get", summary="Usage in [start, end) by key, pipeline and/or hour (group_by, default key and pipeline)")
def get_usage(request: Request, body: UsageQuery | None = None) -> dict:
    return {"usage": runtime_of(request).keys.usage(body or UsageQuery())}
