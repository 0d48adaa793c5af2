"""Orchestration routes (Wallaroo's `/v1/api/orchestration/*`): the streamed upload of a zip
(202 at once; packaging goes on, its status polled) and the listings the SDK reads."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from wallaroo_pulumi.orchestration import ORCHESTRATION, ORCHESTRATION_ID
from wallaroo_pulumi.runtime.core.errors import BadRequest
from wallaroo_pulumi.runtime.routes import runtime_of
from wallaroo_pulumi.runtime.services.access.deferred import check_deferred
from wallaroo_pulumi.runtime.services.access.visible import visible_workspace
from wallaroo_pulumi.runtime.services.listeners import parse
from wallaroo_pulumi.runtime.services.listeners.views import LAST_RUNS, task_view
from wallaroo_pulumi.runtime.services.orchestrations import builtin_view, orchestration_view
from wallaroo_pulumi.runtime.store.uploads import parse_streaming_upload
from wallaroo_pulumi.runtime.wire import answers

router = APIRouter(prefix="/v1/api/orchestration", tags=["orchestrations"])
JSON = dict[str, Any]


@router.post("/upload", status_code=202, response_model=None,
             summary="Upload an orchestration: multipart `file` (a zip holding main.py and at most one "
             "requirements.txt) and `metadata` {workspace_id, name?}; packaged in the background.")
async def upload(request: Request) -> JSON:
    rt = runtime_of(request)
    upload = await parse_streaming_upload(request, rt.artifacts, rt.settings.max_upload_bytes)
    writer = upload.file
    try:
        if writer is None:
            raise BadRequest("file: missing multipart part 'file' (the orchestration zip)")
        raw = upload.fields.get("metadata")
        if raw is None:
            raise BadRequest("metadata: missing multipart part 'metadata' (JSON {workspace_id, name?})")
        meta = _metadata(raw)
        check_deferred(request.scope.get("state", {}), meta["workspace_id"])
    except BaseException:
        writer.abort() if writer is not None else None
        raise
    row = await rt.orchestrations.upload(workspace_id=meta["workspace_id"], name=meta["name"], writer=writer,
                                         file_name=upload.file_name)
    return {"id": row["id"]}


def _metadata(raw: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"metadata: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest("metadata: expected a JSON object {workspace_id, name?}")
    ws = data.get("workspace_id", 1)
    if isinstance(ws, bool) or not isinstance(ws, int) or ws < 1:
        raise BadRequest(f"metadata.workspace_id: expected a workspace id (a positive integer), got {ws!r}")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise BadRequest(f"metadata.name: expected a non-empty string or null, got {name!r}")
    return {"workspace_id": ws, "name": name}


def _views(request: Request, workspace_ids: list[int] | None) -> list[JSON]:
    rt = runtime_of(request)
    rows = [orchestration_view(r) for r in rt.orchestrations.list(workspace_ids)]
    builtin = [builtin_view(w) for w in (workspace_ids or [1])] if rt.listeners is not None else []
    return builtin + rows


@router.post("/list", response_model=None, summary="The orchestrations of `workspace_id` (the built-in llm-listener first).")
async def list_orchestrations(request: Request) -> list[JSON]:
    d = await parse.body(request)
    return _views(request, [parse.integer(d, "workspace_id", 1) or 1])


@router.post("/list_all", response_model=None,
             summary="Orchestrations of `workspace_ids` (all when empty), each with its tasks and workspace.")
async def list_all(request: Request) -> JSON:
    d = await parse.body(request)
    narrowed = visible_workspace(request.scope.get("state", {}))  # a key of one workspace naming none: its own
    ids = d.get("workspace_ids") or ([narrowed] if narrowed is not None else None)
    if ids is not None and (not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in ids)):
        raise BadRequest(f"workspace_ids: expected a list of workspace ids, got {ids!r}")
    rt = runtime_of(request)
    svc = rt.listeners
    items = []
    for view in _views(request, ids):
        ws = rt.db.one("SELECT * FROM workspaces WHERE id = ?", (view["workspace_id"],))
        if ws is None:
            continue
        orch = ORCHESTRATION if view["id"] == ORCHESTRATION_ID else view["id"]
        tasks = svc.list_tasks(view["workspace_id"], orch_id=orch) if svc is not None else []
        items.append({"orchestration": view, "workspace": answers.workspace(ws),
                      "tasks": [task_view(t, svc.list_runs(t["id"], LAST_RUNS)) for t in tasks] if svc else []})
    return {"orchestrations": items}


@router.post("/get_by_id", response_model=None, summary="One orchestration by `id`.")
async def get_by_id(request: Request) -> JSON:
    d = await parse.body(request)
    oid = parse.text(d, "id")
    if oid == ORCHESTRATION_ID:
        return builtin_view(1)
    return orchestration_view(runtime_of(request).orchestrations.get(oid))


@router.post("/requirements", response_model=None, status_code=200,
             summary="The requirement folders packaging installed for orchestration `id` (tar.gz; 204: none), "
             "which a task pod unpacks instead of asking a package index.")
async def requirements(request: Request) -> Response:
    d = await parse.body(request)
    path = await runtime_of(request).orchestrations.requirements_archive(parse.text(d, "id"))
    return Response(status_code=204) if path is None else FileResponse(path, media_type="application/gzip")


@router.post("/delete_orchestrations", response_model=None,
             summary="Delete uploaded `orchestrations` (ids) no live task uses; answers the bytes freed.")
async def delete_orchestrations(request: Request) -> JSON:
    d = await parse.body(request)
    ids = d.get("orchestrations")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise BadRequest(f"orchestrations: expected a list of orchestration ids, got {ids!r}")
    if ORCHESTRATION_ID in ids:
        raise BadRequest(f"orchestrations: the built-in {ORCHESTRATION!r} cannot be deleted")
    rt = runtime_of(request)
    svc = rt.listeners
    in_use = {oid: [t["id"] for t in svc.list_tasks(orch_id=oid, killed=False)] if svc is not None else [] for oid in ids}
    return {"bytes": await rt.orchestrations.delete(ids, in_use)}
