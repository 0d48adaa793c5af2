"""The keys service: create a key (its secret answered once, never stored), list, get, update,
revoke; and usage summed by key, pipeline or hour."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from wallaroo_pulumi.runtime.core.errors import BadRequest, Conflict, NotFound
from wallaroo_pulumi.runtime.services.access.keys import ADMIN_NAME, ApiKey, KeyLimits, KeyStore, Role, iso
from wallaroo_pulumi.runtime.services.access.usage import GroupBy, UsageMeter
from wallaroo_pulumi.runtime.services.registry import Registry

PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:@/-]{0,127}$")


def _name(value: str) -> str:
    if not KEY_NAME.match(value):
        raise ValueError("must be 1-128 letters, digits, spaces or _ . : @ / -, starting with a letter or digit")
    if value == ADMIN_NAME:
        raise ValueError(f"{ADMIN_NAME!r} is the runtime's own admin token; choose another name")
    return value


def _future(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("needs a timezone (RFC 3339, e.g. 2030-01-01T00:00:00Z)")
    if value.timestamp() <= time.time():
        raise ValueError(f"{value.isoformat()} is not in the future")
    return value


def _pipelines(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if not value:
        raise ValueError("give at least one pipeline name, or leave it out for every pipeline of the workspace")
    for name in value:
        if not PIPELINE_NAME.match(name):
            raise ValueError(f"{name!r} is not a pipeline name (1-63 lowercase letters, digits or '-')")
    return sorted(set(value))


KeyName = Annotated[str, AfterValidator(_name)]
PipelineNames = Annotated[list[str] | None, AfterValidator(_pipelines)]
Expiry = Annotated[datetime | None, AfterValidator(_future)]


class KeySpec(BaseModel):
    """A new key. admin: everything. deployer: models, pipelines, listeners, logs and inference of
    `workspace_id`. inference: infer on `pipelines` of `workspace_id` (default 1; all of them when
    `pipelines` is left out), and read their logs if `read_logs`."""

    model_config = ConfigDict(extra="forbid")
    name: KeyName
    role: Role
    workspace_id: int | None = Field(default=None, ge=1)
    pipelines: PipelineNames = None
    read_logs: bool = False
    limits: KeyLimits = Field(default_factory=KeyLimits)
    expires_at: Expiry = None

    @model_validator(mode="after")
    def _role_fields(self) -> KeySpec:
        if self.role == "admin":
            for name in ("workspace_id", "pipelines"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: an admin key reaches every workspace; leave {name} out")
        if self.role != "inference" and self.read_logs:
            raise ValueError("read_logs: only for inference keys (admin and deployer keys read logs already)")
        if self.role == "deployer":
            if self.workspace_id is None:
                raise ValueError("workspace_id: a deployer key needs the workspace it deploys to")
            if self.pipelines is not None:
                raise ValueError("pipelines: a deployer key reaches its whole workspace; leave pipelines out")
        if self.role == "inference" and self.workspace_id is None:
            self.workspace_id = 1
        return self


class KeyUpdate(BaseModel):
    """What may change in place; a field left out keeps its value (`expires_at: null` removes it)."""

    model_config = ConfigDict(extra="forbid")
    id: int
    name: KeyName | None = None
    pipelines: PipelineNames = None
    read_logs: bool | None = None
    limits: KeyLimits | None = None
    expires_at: Expiry = None


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: datetime | None = None
    end: datetime | None = None
    key_id: int | None = None
    pipeline: str | None = None
    group_by: list[GroupBy] = Field(default_factory=lambda: ["key", "pipeline"])

    @model_validator(mode="after")
    def _zones(self) -> UsageQuery:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name}: needs a timezone (RFC 3339, e.g. 2030-01-01T00:00:00Z)")
        return self


def key_view(key: ApiKey, last_used: float | None) -> dict[str, Any]:
    return {
        "id": key.id, "name": key.name, "role": key.role, "workspace_id": key.workspace_id,
        "pipelines": list(key.pipelines) if key.pipelines is not None else None, "read_logs": key.read_logs,
        "limits": key.limits.model_dump(), "created_at": iso(key.created_at), "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at), "last_used_at": iso(last_used), "status": key.status(time.time()),
    }


class KeysService:
    def __init__(self, store: KeyStore, registry: Registry, usage: UsageMeter) -> None:
        self.store = store
        self.registry = registry
        self.usage_meter = usage

    def _view(self, key: ApiKey) -> dict[str, Any]:
        return key_view(key, self.store.last_used().get(key.id))

    def _key(self, key_id: int) -> ApiKey:
        key = self.store.get(key_id)
        if key is None:
            raise NotFound(f"id: no key {key_id} (list them with /v1/api/keys/list)", source="auth")
        return key

    def create(self, spec: KeySpec) -> dict[str, Any]:
        if spec.workspace_id is not None:
            self.registry.require_workspace(spec.workspace_id)
        key, secret = self.store.insert(
            name=spec.name, role=spec.role, workspace_id=spec.workspace_id, pipelines=spec.pipelines,
            read_logs=spec.read_logs, limits=spec.limits,
            expires_at=spec.expires_at.timestamp() if spec.expires_at else None,
        )
        return {"key": self._view(key), "secret": secret}

    def list(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        used = self.store.last_used()
        return [key_view(k, used.get(k.id)) for k in self.store.all() if include_revoked or k.revoked_at is None]

    def get(self, key_id: int) -> dict[str, Any]:
        return self._view(self._key(key_id))

    def update(self, change: KeyUpdate) -> dict[str, Any]:
        key = self._key(change.id)
        if key.revoked_at is not None:
            raise Conflict(f"id: {key.label} is revoked; create a new key", source="auth")
        sent = change.model_fields_set
        fields: dict[str, Any] = {}
        if change.name is not None:
            fields["name"] = change.name
        if "pipelines" in sent or change.read_logs is not None:
            if key.role != "inference":
                raise BadRequest(f"pipelines, read_logs: only inference keys have them ({key.label})")
            if "pipelines" in sent:
                fields["pipelines"] = change.pipelines
            if change.read_logs is not None:
                fields["read_logs"] = change.read_logs
        if "limits" in sent:
            fields["limits"] = change.limits or KeyLimits()
        if "expires_at" in sent:
            fields["expires_at"] = change.expires_at.timestamp() if change.expires_at else None
        if key.is_runtime_admin and fields:
            raise Conflict(f"id: {key.label} is the runtime's own admin token; it cannot be changed", source="auth")
        if fields:
            self.store.update(key.id, **fields)
        return self.get(key.id)

    def revoke(self, key_id: int) -> dict[str, Any]:
        key = self._key(key_id)
        if key.is_runtime_admin:
            raise Conflict(f"id: {key.label} is the runtime's own admin token (DATA_DIR/admin.token); rotate it "
                           "with WALLAROO_ADMIN_TOKEN and a restart instead", source="auth")
        if key.revoked_at is None:
            self.store.update(key.id, revoked_at=time.time())
        return self.get(key.id)

    def usage(self, query: UsageQuery) -> list[dict[str, Any]]:
        names = {k.id: k.name for k in self.store.all()}
        rows = self.usage_meter.query(start=query.start, end=query.end, key_id=query.key_id, pipeline=query.pipeline,
                                      group_by=query.group_by)
        for row in rows:
            if "key_id" in row:
                row["key_name"] = names.get(row["key_id"])
            if "hour" in row:
                row["hour"] = datetime.fromtimestamp(row["hour"], UTC).isoformat().replace("+00:00", "Z")
            row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
        return rows
