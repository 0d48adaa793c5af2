"""Model registry: streamed BYOP uploads, versions (content-addressed), delete."""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import time
import uuid
from typing import Any, Literal

import anyio
import pyarrow as pa
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wallaroo_pulumi.runtime.artifacts import validate_byop_zip
from wallaroo_pulumi.runtime.errors import bad_request, conflict, describe_validation_error, not_found
from wallaroo_pulumi.runtime.routes.workspaces import require_workspace
from wallaroo_pulumi.runtime.state import Runtime, get_rt, iso
from wallaroo_pulumi.runtime.uploads import parse_streaming_upload

router = APIRouter(prefix="/v1/api/models", tags=["models"])

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
SUPPORTED_FRAMEWORKS = ("custom",)


def decode_schema(text: str, field: str) -> pa.Schema:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{field}: not valid base64 (expected base64 of pyarrow Schema.serialize())") from None
    try:
        return pa.ipc.read_schema(pa.py_buffer(raw))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
        raise ValueError(f"{field}: base64 decodes but is not a serialized Arrow schema ({exc})") from None


class Conversion(BaseModel):
    model_config = ConfigDict(extra="allow")
    framework: str = "custom"
    python_version: str = "3.8"
    requirements: list[str] = Field(default_factory=list)
    arch: Literal["x86", "arm"] = "x86"
    accel: str | dict[str, Any] = "none"
    input_schema: str | None = None
    output_schema: str | None = None

    @field_validator("framework")
    @classmethod
    def _framework(cls, v: str) -> str:
        if v not in SUPPORTED_FRAMEWORKS:
            raise ValueError(
                f"framework {v!r} is not supported by this runtime; use 'custom' "
                "(Arbitrary Python / BYOP: a zip with mac.inference classes)"
            )
        return v


class UploadMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    visibility: Literal["public", "private"] = "private"
    workspace_id: int = Field(default=1, ge=1)
    conversion: Conversion = Field(default_factory=Conversion)
    input_schema: str | None = None
    output_schema: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must be 1-128 letters, digits, '-' or '_' starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _schemas(self) -> UploadMetadata:
        for field in ("input_schema", "output_schema"):
            value = getattr(self, field) or getattr(self.conversion, field)
            if not value:
                raise ValueError(
                    f"{field} is required for framework 'custom' "
                    "(base64 of pyarrow Schema.serialize(), at the top level of metadata or in conversion)"
                )
            setattr(self, field, value)
            decode_schema(value, field)
        return self


def version_row(rt: Runtime, where: str, params: tuple) -> dict[str, Any] | None:
    return rt.db.one(
        "SELECT mv.*, m.name AS name, m.workspace_id AS workspace_id, m.visibility AS visibility "
        f"FROM model_versions mv JOIN models m ON m.id = mv.model_id WHERE {where}",
        params,
    )


def version_rows(rt: Runtime, where: str, params: tuple) -> list[dict[str, Any]]:
    return rt.db.all(
        "SELECT mv.*, m.name AS name, m.workspace_id AS workspace_id, m.visibility AS visibility "
        f"FROM model_versions mv JOIN models m ON m.id = mv.model_id WHERE {where} ORDER BY mv.id",
        params,
    )


def version_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "model_id": row["model_id"],
        "name": row["name"],
        "version": row["version"],
        "sha": row["sha"],
        "file_name": row["file_name"],
        "file_size": row["file_size"],
        "created_at": iso(row["created_at"]),
        "input_schema": row["input_schema"],
        "output_schema": row["output_schema"],
        "conversion": json.loads(row["conversion"]),
        "status": row["status"],
        "workspace_id": row["workspace_id"],
        "visibility": row["visibility"],
    }


@router.post(
    "/upload_and_convert",
    summary="Upload a BYOP model (multipart: 'metadata' JSON + 'file' zip), streamed to disk",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["metadata", "file"],
                        "properties": {
                            "metadata": {"type": "string", "description": (
                                "JSON: name, visibility, workspace_id, conversion{framework, python_version, "
                                "requirements, arch, accel}, input_schema, output_schema (base64 Arrow schemas)")},
                            "file": {"type": "string", "format": "binary"},
                        },
                    }
                }
            },
            "required": True,
        }
    },
)
async def upload_and_convert(request: Request) -> dict:
    rt = get_rt(request)
    upload = await parse_streaming_upload(request, rt.artifacts, rt.settings.max_upload_bytes)
    writer = upload.file
    try:
        raw = upload.fields.get("metadata")
        if raw is None:
            raise bad_request("metadata: missing multipart part 'metadata' (JSON with name, conversion, input_schema, output_schema)")
        if writer is None:
            raise bad_request("file: missing multipart part 'file' (the model zip)")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"metadata: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise bad_request("metadata: expected a JSON object")
        try:
            meta = UploadMetadata.model_validate(data)
        except ValidationError as exc:
            raise bad_request(describe_validation_error(exc, "metadata")) from None
        require_workspace(rt.db, meta.workspace_id)
        if writer.size == 0:
            raise bad_request("file: the uploaded file is empty")
        try:
            await anyio.to_thread.run_sync(validate_byop_zip, writer.tmp_path)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        sha, _path = await anyio.to_thread.run_sync(writer.commit)
    except BaseException:
        writer.abort() if writer is not None else None
        raise
    conversion = meta.conversion.model_dump(exclude={"input_schema", "output_schema"})
    now = time.time()
    with rt.db.tx() as c:
        model = c.execute(
            "SELECT id FROM models WHERE workspace_id = ? AND name = ?", (meta.workspace_id, meta.name)
        ).fetchone()
        if model is None:
            model_id = c.execute(
                "INSERT INTO models (workspace_id, name, visibility, created_at) VALUES (?, ?, ?, ?)",
                (meta.workspace_id, meta.name, meta.visibility, now),
            ).lastrowid
        else:
            model_id = model["id"]
        existing = c.execute("SELECT id FROM model_versions WHERE model_id = ? AND sha = ?", (model_id, sha)).fetchone()
        if existing is not None:
            version_id = existing["id"]
        else:
            version_id = c.execute(
                "INSERT INTO model_versions (model_id, version, sha, file_name, file_size, input_schema, "
                "output_schema, conversion, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ready', ?)",
                (
                    model_id, str(uuid.uuid4()), sha, upload.file_name or f"{meta.name}.zip", writer.size,
                    meta.input_schema, meta.output_schema, json.dumps(conversion), now,
                ),
            ).lastrowid
    return {"insert_models": {"returning": [{"models": [{"id": version_id}]}]}}


class ListModels(BaseModel):
    model_config = ConfigDict(extra="allow")
    workspace_id: int | None = None


@router.post("/list")
def list_models(request: Request, body: ListModels | None = None) -> dict:
    rt = get_rt(request)
    body = body or ListModels()
    where, params = ("1=1", ()) if body.workspace_id is None else ("workspace_id = ?", (body.workspace_id,))
    out = []
    for m in rt.db.all(f"SELECT * FROM models WHERE {where} ORDER BY id", params):
        versions = version_rows(rt, "mv.model_id = ?", (m["id"],))
        out.append(
            {
                "id": m["id"], "name": m["name"], "workspace_id": m["workspace_id"], "visibility": m["visibility"],
                "created_at": iso(m["created_at"]), "versions": len(versions),
                "latest_version": version_json(versions[-1]) if versions else None,
            }
        )
    return {"models": out}


class ListVersions(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_id: int | None = None
    name: str | None = None
    workspace_id: int | None = None

    @model_validator(mode="after")
    def _one(self) -> ListVersions:
        if self.model_id is None and self.name is None:
            raise ValueError("give model_id or name")
        return self


@router.post("/list_versions")
def list_versions(request: Request, body: ListVersions) -> list[dict]:
    rt = get_rt(request)
    if body.model_id is not None:
        model = rt.db.one("SELECT id FROM models WHERE id = ?", (body.model_id,))
        label = f"id {body.model_id}"
    else:
        model = rt.db.one(
            "SELECT id FROM models WHERE name = ? AND workspace_id = ?", (body.name, body.workspace_id or 1)
        )
        label = f"name {body.name!r}"
    if model is None:
        raise not_found(f"no model with {label}")
    return [version_json(r) for r in version_rows(rt, "mv.model_id = ?", (model["id"],))]


class GetVersion(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_version_id: int


@router.post("/get_version_by_id")
def get_version_by_id(request: Request, body: GetVersion) -> dict:
    row = version_row(get_rt(request), "mv.id = ?", (body.model_version_id,))
    if row is None:
        raise not_found(f"model_version_id: no model version with id {body.model_version_id}")
    return {"model_version": version_json(row)}


class DeleteModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_id: int


def deployed_users(rt: Runtime, model_name: str, workspace_id: int) -> list[str]:
    """Names of deployed pipelines whose deployed version uses a model of this name."""
    users = []
    rows = rt.db.all(
        "SELECT p.name, pv.definition FROM deployments d JOIN pipelines p ON p.id = d.pipeline_id "
        "JOIN pipeline_versions pv ON pv.id = d.pipeline_version_id WHERE d.desired = 'deployed' AND p.workspace_id = ?",
        (workspace_id,),
    )
    for row in rows:
        definition = json.loads(row["definition"])
        for step in definition.get("steps", []):
            for m in step.get("ModelInference", {}).get("models", []):
                if m.get("name") == model_name:
                    users.append(row["name"])
    return sorted(set(users))


@router.post("/delete")
def delete_model(request: Request, body: DeleteModel) -> dict:
    rt = get_rt(request)
    model = rt.db.one("SELECT * FROM models WHERE id = ?", (body.model_id,))
    if model is None:
        raise not_found(f"model_id: no model with id {body.model_id}")
    users = deployed_users(rt, model["name"], model["workspace_id"])
    if users:
        raise conflict(
            f"model {model['name']!r} is used by deployed pipeline(s) {', '.join(users)}; undeploy them first"
        )
    shas = [r["sha"] for r in rt.db.all("SELECT sha FROM model_versions WHERE model_id = ?", (body.model_id,))]
    with rt.db.tx() as c:
        c.execute("DELETE FROM model_versions WHERE model_id = ?", (body.model_id,))
        c.execute("DELETE FROM models WHERE id = ?", (body.model_id,))
    for sha in set(shas):
        if rt.db.one("SELECT id FROM model_versions WHERE sha = ?", (sha,)) is None:
            rt.artifacts.delete(sha)
            shutil.rmtree(rt.settings.data_dir / "models" / sha, ignore_errors=True)
    return {"deleted": True, "model_id": body.model_id, "versions": len(shas)}


def resolve_model_ref(rt: Runtime, ref: dict[str, Any], workspace_id: int, where: str) -> dict[str, Any]:
    """A {name, version?, sha?, model_version_id?} step model -> its version row (latest when unspecified)."""
    name = ref.get("name")
    if ref.get("model_version_id") is not None:
        row = version_row(rt, "mv.id = ?", (ref["model_version_id"],))
        if row is None or (name and row["name"] != name):
            raise bad_request(f"{where}.model_version_id: no version {ref['model_version_id']} of model {name!r}")
        return row
    if not name:
        raise bad_request(f"{where}.name: required")
    clauses, params = ["m.name = ?", "m.workspace_id = ?"], [name, workspace_id]
    if ref.get("version"):
        clauses.append("mv.version = ?")
        params.append(ref["version"])
    if ref.get("sha"):
        clauses.append("mv.sha = ?")
        params.append(ref["sha"])
    rows = version_rows(rt, " AND ".join(clauses), tuple(params))
    if not rows:
        detail = ", ".join(f"{k} {ref[k]!r}" for k in ("version", "sha") if ref.get(k))
        raise bad_request(
            f"{where}: no model {name!r}" + (f" with {detail}" if detail else "") + f" in workspace {workspace_id}; upload it first"
        )
    return rows[-1]
