"""API keys (admin only, by the access policy): create (the secret is in this answer only), list,
get, update, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from wallaroo_pulumi.runtime.routes import runtime_of
from wallaroo_pulumi.runtime.services.access.service import KeySpec, KeyUpdate

router = APIRouter(prefix="/v1/api/keys", tags=["keys"])


class KeyId(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int


class ListKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_revoked: bool = False


@router.post("/create", summary="Create a key; the answer's `secret` is shown this once and never again")
def create_key(request: Request, body: KeySpec) -> dict:
    return runtime_of(request).keys.create(body)


@router.post("/list", summary="Every key (revoked ones with include_revoked): role, scope, limits, status, last use")
def list_keys(request: Request, body: ListKeys | None = None) -> dict:
    return {"keys": runtime_of(request).keys.list((body or ListKeys()).include_revoked)}


@router.post("/get")
def get_key(request: Request, body: KeyId) -> dict:
    return {"key": runtime_of(request).keys.get(body.id)}


@router.post("/update", summary="Change a key's name, pipelines, read_logs, limits or expiry in place")
def update_key(request: Request, body: KeyUpdate) -> dict:
    return {"key": runtime_of(request).keys.update(body)}


@router.post("/revoke", summary="Revoke a key: it gets 401 from now on (the row stays, for its usage)")
def revoke_key(request: Request, body: KeyId) -> dict:
    return {"key": runtime_of(request).keys.revoke(body.id)}
