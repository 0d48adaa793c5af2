"""Workspaces: list and create."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from wallaroo_pulumi.runtime.routes import runtime_of

router = APIRouter(prefix="/v1/api/workspaces", tags=["workspaces"])


class ListWorkspaces(BaseModel):
    model_config = ConfigDict(extra="allow")


class CreateWorkspace(BaseModel):
    model_config = ConfigDict(extra="allow")
    workspace_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@router.post("/list")
def list_workspaces(request: Request, body: ListWorkspaces | None = None) -> dict:
    return {"workspaces": runtime_of(request).registry.workspaces()}


@router.post("/create")
def create_workspace(request: Request, body: CreateWorkspace) -> dict:
    return runtime_of(request).registry.create_workspace(body.workspace_name)
