"""The client's keys and usage API (admin keys only): `WallarooClient.create_key`, `list_keys`,
`get_key`, `update_key`, `revoke_key`, `usage`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from wallaroo_pulumi.client._shared import iso

if TYPE_CHECKING:
    import pandas as pd

Role = Literal["admin", "deployer", "inference"]
_UNSET: Any = object()


class ApiKey(BaseModel):
    """A key as the runtime lists it; its secret is never listed."""

    model_config = ConfigDict(extra="allow")
    id: int
    name: str
    role: Role
    workspace_id: int | None = None
    pipelines: list[str] | None = None
    read_logs: bool = False
    limits: dict[str, int | None] = {}
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    status: str = "active"


class CreatedKey(BaseModel):
    """A new key and its secret: the only time the runtime answers the secret."""

    key: ApiKey
    secret: SecretStr


class KeysAPI:
    """Mixed into `WallarooClient`; `_post` is its JSON POST."""

    _post: Callable[..., Any]

    def create_key(
        self,
        name: str,
        role: Role,
        *,
        workspace_id: int | None = None,
        pipelines: Sequence[str] | None = None,
        read_logs: bool = False,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        tokens_per_day: int | None = None,
        expires_at: datetime | str | None = None,
    ) -> CreatedKey:
        """A new key. `deployer`: models, pipelines, listeners, logs and inference of `workspace_id`;
        `inference`: infer on `pipelines` (or every pipeline) of `workspace_id` (default 1), and read
        their logs with `read_logs`. Limits: None is unlimited."""
        payload: dict[str, Any] = {"name": name, "role": role, "read_logs": read_logs,
                                   "limits": _limits(requests_per_minute, tokens_per_minute, tokens_per_day)}
        for field, value in (("workspace_id", workspace_id), ("expires_at", iso(expires_at)),
                             ("pipelines", list(pipelines) if pipelines is not None else None)):
            if value is not None:
                payload[field] = value
        return CreatedKey.model_validate(self._post("/v1/api/keys/create", payload, f"create key {name!r}"))

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        data = self._post("/v1/api/keys/list", {"include_revoked": include_revoked}, "list keys")
        return [ApiKey.model_validate(k) for k in data["keys"]]

    def get_key(self, key_id: int) -> ApiKey:
        return ApiKey.model_validate(self._post("/v1/api/keys/get", {"id": key_id}, f"key {key_id}")["key"])

    def update_key(
        self,
        key_id: int,
        *,
        name: str | None = None,
        pipelines: Sequence[str] | None = _UNSET,
        read_logs: bool | None = None,
        limits: dict[str, int | None] | None = _UNSET,
        expires_at: datetime | str | None = _UNSET,
    ) -> ApiKey:
        """Change a key in place (same secret). Left out: unchanged; `pipelines=None`: every pipeline
        of its workspace; `expires_at=None`: never expires; `limits`: the whole new set."""
        payload: dict[str, Any] = {"id": key_id}
        if name is not None:
            payload["name"] = name
        if read_logs is not None:
            payload["read_logs"] = read_logs
        if pipelines is not _UNSET:
            payload["pipelines"] = list(pipelines) if pipelines is not None else None
        if limits is not _UNSET:
            payload["limits"] = {k: v for k, v in (limits or {}).items() if v is not None}
        if expires_at is not _UNSET:
            payload["expires_at"] = iso(expires_at)
        return ApiKey.model_validate(self._post("/v1/api/keys/update", payload, f"update key {key_id}")["key"])

    def revoke_key(self, key_id: int) -> ApiKey:
        """From now on the key gets 401; revoking a revoked key changes nothing."""
        return ApiKey.model_validate(self._post("/v1/api/keys/revoke", {"id": key_id}, f"revoke key {key_id}")["key"])

    def usage(
        self,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        key_id: int | None = None,
        pipeline: str | None = None,
        group_by: Sequence[Literal["key", "pipeline", "hour"]] = ("key", "pipeline"),
    ) -> pd.DataFrame:
        """Requests, rows and LLM prompt/completion/total tokens in [start, end) (by the hour),
        one row per group: `key_id`/`key_name`, `pipeline`, `hour` as asked."""
        import pandas as pd

        payload: dict[str, Any] = {"group_by": list(group_by)}
        for field, value in (("start", iso(start)), ("end", iso(end)), ("key_id", key_id), ("pipeline", pipeline)):
            if value is not None:
                payload[field] = value
        rows = self._post("/v1/api/usage/get", payload, "usage")["usage"]
        columns = [c for g in group_by for c in (("key_id", "key_name") if g == "key" else (g,))]
        frame = pd.DataFrame(rows, columns=[*columns, "requests", "rows", "prompt_tokens", "completion_tokens", "total_tokens"])
        if "hour" in frame.columns:
            frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
        return frame


def _limits(rpm: int | None, tpm: int | None, tpd: int | None) -> dict[str, int]:
    values = {"requests_per_minute": rpm, "tokens_per_minute": tpm, "tokens_per_day": tpd}
    return {k: v for k, v in values.items() if v is not None}
