"""Workspaces: id 1 "default" always exists; names are unique."""

from __future__ import annotations

import sqlite3
import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from wallaroo_pulumi.runtime.errors import conflict
from wallaroo_pulumi.runtime.state import get_rt, iso

router = APIRouter(prefix="/v1/api/workspaces", tags=["workspaces"])


class ListWorkspaces(BaseModel):
    model_config = ConfigDict(extra="allow")


class CreateWorkspace(BaseModel):
    model_config = ConfigDict(extra="allow")
    workspace_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _ws(row: dict) -> dict:
    return {"id": row["id"], "name": row["name"], "created_at": iso(row["created_at"])}


@router.post("/list")
def list_workspaces(request: Request, body: ListWorkspaces | None = None) -> dict:
    rows = get_rt(request).db.all("SELECT * FROM workspaces ORDER BY id")
    return {"workspaces": [_ws(r) for r in rows]}


@router.post("/create")
def create_workspace(request: Request, body: CreateWorkspace) -> dict:
    db = get_rt(request).db
    try:
        with db.tx() as c:
            cur = c.execute("INSERT INTO workspaces (name, created_at) VALUES (?, ?)", (body.workspace_name, time.time()))
            wid = cur.lastrowid
    except sqlite3.IntegrityError:
        raise conflict(f"workspace_name: a workspace named {body.workspace_name!r} already exists") from None
    row = db.one("SELECT * FROM workspaces WHERE id = ?", (wid,))
    return {"workspace_id": wid, "workspace": _ws(row)}


def require_workspace(db, workspace_id: int) -> None:
    from wallaroo_pulumi.runtime.errors import not_found

    if db.one("SELECT id FROM workspaces WHERE id = ?", (workspace_id,)) is None:
        raise not_found(f"workspace_id: no workspace with id {workspace_id} (list them with /v1/api/workspaces/list)")
