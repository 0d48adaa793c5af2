"""The listener run API (`/v1/api/task/listener_run/*`): what a built-in listener run in a process of its
own calls with its own key (services/listeners/run_api.py). Pages and score rows are Arrow IPC streams."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wallaroo_pulumi.runtime.core.errors import describe_validation_error
from wallaroo_pulumi.runtime.services.access.usage import current_key
from wallaroo_pulumi.runtime.services.listeners import parse
from wallaroo_pulumi.runtime.services.listeners.errors import BadListenerRequest
from wallaroo_pulumi.runtime.services.listeners.run_api import RunScope, decode, encode
from wallaroo_pulumi.runtime.services.listeners.service import ListenerService
from wallaroo_pulumi.runtime.store.logs.settled import SegmentPrint

router = APIRouter(prefix="/v1/api/task/listener_run", tags=["listeners"])
ARROW = "application/vnd.apache.arrow.stream"
M = TypeVar("M", bound=BaseModel)


class PageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_ms: int
    end_ms: int
    limit: int = Field(ge=1)
    cursor: str | None = None
    skip_settled: bool = False


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int
    rows: int = Field(ge=0)
    tmin: int
    tmax: int


class SettleSegmentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segments: list[Segment]
    older_than_ms: int


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[str]
    times: list[int]


class SettleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[str]
    done: bool


async def _scope(request: Request) -> tuple[ListenerService, RunScope]:
    svc: ListenerService = request.app.state.listeners
    key = current_key.get()
    scope = await asyncio.to_thread(svc.run_api.scope, key.id if key else None, key.name if key else None,
                                    key.label if key else "no key")
    return svc, scope


async def _parse(request: Request, model: type[M]) -> M:
    try:
        return model.model_validate(await parse.body(request))
    except ValidationError as exc:
        raise BadListenerRequest(describe_validation_error(exc, "body")) from None


@router.post("/page", response_model=None, summary="A page of the run's monitored pipeline's logs (Arrow IPC); "
             "x-page-status, x-page-cursor and x-page-floor-ms say what follows.")
async def page(request: Request) -> Response:
    svc, scope = await _scope(request)
    q = await _parse(request, PageRequest)
    got = await asyncio.to_thread(svc.run_api.page, scope, q.start_ms, q.end_ms, q.limit, q.cursor, q.skip_settled)
    headers = {"x-page-status": got.status, "x-page-cursor": got.cursor or "",
               "x-page-floor-ms": "" if got.floor_ms is None else str(got.floor_ms)}
    return Response(await asyncio.to_thread(encode, got.table), media_type=ARROW, headers=headers)


@router.post("/sealed", response_model=None, summary="The monitored pipeline's sealed segments now.")
async def sealed(request: Request) -> dict[str, Any]:
    svc, scope = await _scope(request)
    return {"segments": [p.as_json() for p in await asyncio.to_thread(svc.run_api.sealed, scope)]}


@router.post("/settle_segments", response_model=None,
             summary="Sealed segments every row of which the run's stream has settled: later runs skip them.")
async def settle_segments(request: Request) -> dict[str, Any]:
    svc, scope = await _scope(request)
    q = await _parse(request, SettleSegmentsRequest)
    prints = [SegmentPrint(s.seq, s.rows, s.tmin, s.tmax) for s in q.segments]
    await asyncio.to_thread(svc.run_api.settle_segments, scope, prints, q.older_than_ms)
    return {}


@router.post("/claim", response_model=None, summary="Claim row keys for the run; `mine`: the indexes now its own, "
             "`held`: those another run holds unsettled.")
async def claim(request: Request) -> dict[str, Any]:
    svc, scope = await _scope(request)
    q = await _parse(request, ClaimRequest)
    claimed = await asyncio.to_thread(svc.run_api.claim, scope, q.keys, q.times)
    return {"mine": claimed.mine, "held": claimed.held}


@router.post("/settle", response_model=None, summary="The run's claims on `keys`: scored (`done`) or given back.")
async def settle(request: Request) -> dict[str, Any]:
    svc, scope = await _scope(request)
    q = await _parse(request, SettleRequest)
    await asyncio.to_thread(svc.run_api.settle, scope, q.keys, q.done)
    return {}


@router.post("/scores", response_model=None, summary="Append the run's score rows (Arrow IPC) to its score pipeline.")
async def scores(request: Request) -> dict[str, Any]:
    svc, scope = await _scope(request)
    table = await asyncio.to_thread(decode, await request.body(), "scores")
    await asyncio.to_thread(svc.run_api.append_scores, scope, table)
    return {"appended": table.num_rows}


@router.post("/report", response_model=None, summary="The run's counts so far and window (epoch seconds).")
async def report(request: Request) -> dict[str, Any]:
    svc, scope = await _scope(request)
    await asyncio.to_thread(svc.run_api.report, scope, await parse.body(request))
    return {}
