"""Model registry routes: streamed BYOP uploads, models, versions, delete."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wallaroo_pulumi.runtime.core.errors import BadRequest, describe_validation_error
from wallaroo_pulumi.runtime.routes import runtime_of
from wallaroo_pulumi.runtime.services.access.deferred import check_deferred
from wallaroo_pulumi.runtime.services.openai_api.requests import check_config
from wallaroo_pulumi.runtime.sidekick.batching import check_dynamic_batching
from wallaroo_pulumi.runtime.store.uploads import parse_streaming_upload
from wallaroo_pulumi.runtime.wire import answers
from wallaroo_pulumi.schemas import schema_from_b64

router = APIRouter(prefix="/v1/api/models", tags=["models"])

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
SUPPORTED_FRAMEWORKS = ("custom",)


class Conversion(BaseModel):
    model_config = ConfigDict(extra="allow")
    framework: str = "custom"
    python_version: Literal["3.8", "3.9"] = "3.8"  # Wallaroo's PythonVersion enum; models run on the runtime's Python
    requirements: list[str] = Field(default_factory=list)
    arch: Literal["x86", "arm"] = "x86"
    accel: str | dict[str, Any] = "none"
    framework_config: dict[str, Any] | None = None
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
    openai_config: dict[str, Any] | None = Field(
        default=None, description="Wallaroo's OpenaiConfig (enabled, completion_config, chat_completion_config)")

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
            schema_from_b64(value, field)
        return self


@router.post(
    "/upload_and_convert",
    status_code=202,
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
    rt = runtime_of(request)
    upload = await parse_streaming_upload(request, rt.artifacts, rt.settings.max_upload_bytes)
    writer = upload.file
    try:
        raw = upload.fields.get("metadata")
        if raw is None:
            raise BadRequest("metadata: missing multipart part 'metadata' (JSON with name, conversion, input_schema, output_schema)")
        if writer is None:
            raise BadRequest("file: missing multipart part 'file' (the model zip)")
        meta = _metadata(raw)
        check_deferred(request.scope.get("state", {}), meta.workspace_id)
        openai_config = None if meta.openai_config is None else check_config(
            meta.openai_config, "metadata.openai_config").model_dump()
    except BaseException:
        writer.abort() if writer is not None else None
        raise
    version_id = await rt.registry.add_version(
        workspace_id=meta.workspace_id, name=meta.name, visibility=meta.visibility,
        conversion=meta.conversion.model_dump(exclude={"input_schema", "output_schema"}),
        input_schema=meta.input_schema, output_schema=meta.output_schema, writer=writer, file_name=upload.file_name,
        openai_config=openai_config,
    )
    return {"insert_models": {"returning": [{"models": [{"id": version_id}]}]}}


def _metadata(raw: str) -> UploadMetadata:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"metadata: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest("metadata: expected a JSON object")
    try:
        return UploadMetadata.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc, "metadata")) from None


class ListModels(BaseModel):
    model_config = ConfigDict(extra="allow")
    workspace_id: int | None = None
    workspace_name: str | None = None


@router.post("/list")
def list_models(request: Request, body: ListModels | None = None) -> dict:
    rt, body = runtime_of(request), body or ListModels()
    workspace_id = body.workspace_id
    if workspace_id is None and body.workspace_name is not None:
        workspace_id = rt.registry.workspace_named(body.workspace_name)["id"]
    return {"models": rt.registry.models(workspace_id)}


class ListVersions(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_id: str | None = Field(default=None, description="the model's name")
    models_pk_id: int | None = None
    workspace_id: int = Field(default=1, description="ours: the workspace to look the name up in")

    @model_validator(mode="after")
    def _one(self) -> ListVersions:
        if self.model_id is None and self.models_pk_id is None:
            raise ValueError("give model_id (the model's name) or models_pk_id")
        return self


@router.post("/list_versions")
def list_versions(request: Request, body: ListVersions) -> list[dict]:
    return runtime_of(request).registry.versions(body.models_pk_id, body.model_id, body.workspace_id)


class GetVersion(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_version_id: int


@router.post("/get_model_version_by_id")
def get_model_version_by_id(request: Request, body: GetVersion) -> dict:
    return {"model_version": answers.configured_model_version(runtime_of(request).registry.version(body.model_version_id))}


class InsertModelConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_version_id: int
    openai_config: dict[str, Any] | None = None
    dynamic_batching_config: dict[str, Any] | None = None


@router.post("/insert_model_config", summary="Configure a model version (the SDK's configure(): openai_config and "
                                             "dynamic_batching_config are stored)")
def insert_model_config(request: Request, body: InsertModelConfig) -> dict:
    registry = runtime_of(request).registry
    ignored = sorted(k for k, v in (body.model_extra or {}).items() if v is not None)
    if ignored:
        raise BadRequest(f"{ignored[0]}: not configurable here; this runtime stores openai_config and "
                         f"dynamic_batching_config only (got {', '.join(ignored)})")
    openai = None if body.openai_config is None else check_config(body.openai_config).model_dump()
    batching = (None if body.dynamic_batching_config is None
                else check_dynamic_batching(body.dynamic_batching_config).model_dump())
    row = registry.version(body.model_version_id)
    if openai is not None:
        row = registry.set_openai_config(body.model_version_id, openai)
    if batching is not None:
        row = registry.set_dynamic_batching(body.model_version_id, batching)
    return {"model_config": answers.model_config(row)}


@router.post("/get_version_by_id", summary="The model version as the SDK's upload flow reads it")
def get_version_by_id(request: Request, body: GetVersion) -> dict:
    return answers.sdk_model_version(runtime_of(request).registry.version(body.model_version_id))


class DeleteModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_id: str = Field(description="the model's name")
    workspace_id: int
    confirm_delete: bool | None = None


@router.post("/delete_model")
def delete_model(request: Request, body: DeleteModel) -> dict:
    return runtime_of(request).registry.delete_model(body.model_id, body.workspace_id)
