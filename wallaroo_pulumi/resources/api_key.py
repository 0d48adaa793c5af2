"""`WallarooApiKey`: an API key on the runtime, its secret a Pulumi secret output (D13: limits,
expiry, name and pipelines change in place; role, workspace or runtime replace the key)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, ReadResult, Resource, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator

from ..client import NotFoundError
from . import _base
from .connection import Connection, resolve
from .progress import report

PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
LIMITS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")


class KeyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    tokens_per_day: PositiveInt | None = None


class ApiKeyInputs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=128)
    workspace_id: int | None = Field(default=None, ge=1)
    pipelines: list[str] | None = None
    read_logs: bool = False
    role: Literal["admin", "deployer", "inference"]  # after the fields its rules read
    limits: KeyLimits = Field(default_factory=KeyLimits)
    expires_at: str | None = None
    url: str

    @field_validator("pipelines")
    @classmethod
    def _pipelines(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("give at least one pipeline, or leave pipelines out for every pipeline of the workspace")
        for name in v or ():
            if not PIPELINE_NAME.match(name):
                raise ValueError(f"{name!r} is not a pipeline name (1-63 lowercase letters, digits or '-')")
        return v

    @field_validator("role")
    @classmethod
    def _role_fields(cls, v: str, info: ValidationInfo) -> str:
        """Reported on `role`, which is always given (preview drops failures of fields left out)."""
        given = info.data
        if v == "deployer" and given.get("workspace_id") is None:
            raise ValueError("a deployer key needs workspace_id, the workspace it deploys to")
        if v == "admin" and given.get("workspace_id") is not None:
            raise ValueError("an admin key reaches every workspace: leave workspace_id out")
        if v != "inference" and given.get("pipelines") is not None:
            raise ValueError(f"only inference keys name pipelines (a {v} key reaches more): leave pipelines out")
        if v != "inference" and given.get("read_logs"):
            raise ValueError("read_logs is only for inference keys (admin and deployer keys read logs already)")
        return v

    @field_validator("expires_at")
    @classmethod
    def _expiry(cls, v: str | None) -> str | None:
        if v is not None and datetime.fromisoformat(v).tzinfo is None:
            raise ValueError("needs a timezone (RFC 3339, e.g. 2030-01-01T00:00:00Z)")
        return v


COMPARED = ("name", "role", "workspace_id", "pipelines", "read_logs", "limits", "expires_at", "url")
REPLACE_ON = ("role", "workspace_id", "url")
OUTPUT_KEYS = ("key_id", "key", "status", "created_at")


def _instant(value: Any) -> Any:
    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else value


def _limits(value: Any) -> Any:
    return {k: int(v) for k, v in value.items() if v is not None} if isinstance(value, dict) else value


class ApiKeyProvider(ResourceProvider):
    """Create, change, read and revoke keys through the keys API."""

    serialize_as_secret_always = False  # it captures no secret (the key is an output, marked secret)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        checked = _base.check_inputs(ApiKeyInputs, news, ApiKeyInputs.model_fields)
        if news.get("role") == "inference" and news.get("workspace_id") is None:
            news = {**news, "workspace_id": 1}  # the runtime's default, stated, so a refresh reads back the same
        return CheckResult(news, checked.failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.diff(olds, news, COMPARED, REPLACE_ON, normalize={
            "expires_at": _instant, "limits": _limits, "pipelines": lambda v: sorted(set(v)),
            "workspace_id": lambda v: int(v)})

    def create(self, props: dict[str, Any]) -> CreateResult:
        limits = _limits(props.get("limits") or {})
        created = _base.client(props).create_key(
            props["name"], props["role"], workspace_id=int(props["workspace_id"]) if props.get("workspace_id") else None,
            pipelines=props.get("pipelines"),
            read_logs=bool(props.get("read_logs")), expires_at=props.get("expires_at"), **limits)
        report(f"WallarooApiKey {props['name']}: key {created.key.id} ({created.key.role} on "
               f"{_scope(created.key)})")
        outs = {**props, **_outputs(created.key), "key": _base.secret(created.secret.get_secret_value())}
        return CreateResult(str(created.key.id), outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        key = _base.client(news).update_key(
            int(id_), name=news["name"], pipelines=news.get("pipelines"), read_logs=bool(news.get("read_logs")),
            limits=_limits(news.get("limits") or {}), expires_at=news.get("expires_at"))
        return UpdateResult({**news, **_outputs(key), "key": _base.secret(olds.get("key"))})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            key = _base.client(props).get_key(int(id_))
        except NotFoundError:
            return ReadResult(None, {})
        if key.revoked_at is not None:
            return ReadResult(None, {})  # revoked out of band: gone, the next up creates a new one
        outs = {
            "name": key.name, "role": key.role, "workspace_id": key.workspace_id, "pipelines": key.pipelines,
            "read_logs": key.read_logs, "limits": {k: v for k, v in key.limits.items() if v is not None},
            "url": props.get("url"),
            # the program's spelling when it is the same instant, else the runtime's
            "expires_at": props.get("expires_at") if _instant(props.get("expires_at")) == (
                key.expires_at.timestamp() if key.expires_at else None) else _iso(key.expires_at),
            **_outputs(key), "key": _base.secret(props.get("key")), "token": _base.secret(props.get("token")),
        }
        return _base.read_result(id_, outs, ApiKeyInputs.model_fields)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _base.client(props).revoke_key(int(id_))
        except NotFoundError:
            pass


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _scope(key: Any) -> str:
    if key.role == "admin":
        return "everything"
    return f"pipelines {', '.join(key.pipelines)}" if key.pipelines else f"workspace {key.workspace_id}"


def _outputs(key: Any) -> dict[str, Any]:
    return {"key_id": key.id, "status": key.status, "created_at": _iso(key.created_at)}


class WallarooApiKey(Resource, module="wallaroo", name="ApiKey"):
    """An API key. `role`: "admin"; "deployer" (models, pipelines, listeners, logs and inference of
    `workspace_id`); "inference" (infer on `pipelines`, or every pipeline of `workspace_id`
    (default 1), and read their logs with `read_logs`). Limits per key: requests per minute, LLM
    tokens per minute and per day. Destroying it revokes the key.

    Outputs: `key` (secret), `key_id`, `status`, `created_at`.
    """

    key: pulumi.Output[str]
    key_id: pulumi.Output[int]
    status: pulumi.Output[str]
    created_at: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        role: Literal["admin", "deployer", "inference"],
        name: str | None = None,
        workspace_id: int | None = None,
        pipelines: list[Any] | None = None,
        read_logs: bool = False,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        tokens_per_day: int | None = None,
        expires_at: str | None = None,
        connection: Connection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        url, token = resolve(connection)
        limits = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute,
                  "tokens_per_day": tokens_per_day}
        props = {
            "name": name or resource_name,
            "role": role,
            "workspace_id": workspace_id,
            # a WallarooPipeline stands for its name (its key works before and after the deploy)
            "pipelines": [getattr(p, "pipeline_name", p) for p in pipelines] if pipelines is not None else None,
            "read_logs": read_logs,
            "limits": {k: v for k, v in limits.items() if v is not None},
            "expires_at": expires_at,
            "url": url,
            "token": token,
            **{k: None for k in OUTPUT_KEYS},
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["token", "key"]))
        super().__init__(ApiKeyProvider(), resource_name, props, opts)
