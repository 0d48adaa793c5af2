"""`WallarooModel`: a Bring-Your-Own-Predict model version on the runtime (D13)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pulumi
import pyarrow as pa
from pulumi.dynamic import CreateResult, ReadResult, Resource, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import packaging
from ..client import NotFoundError
from ..schemas import schema_from_b64, schema_to_b64
from . import _base
from .connection import Connection, resolve
from .progress import Throttle, report

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class OpenAIConfigInput(BaseModel):
    """Wallaroo's `OpenaiConfig`: with `enabled`, the pipelines whose first step is this model answer
    `{inference url}/openai/v1/chat/completions` and `/completions`; the two configs are defaults
    for those requests (e.g. `{"max_tokens": 256, "temperature": 0.2}`)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    completion_config: dict[str, Any] = Field(default_factory=dict)
    chat_completion_config: dict[str, Any] = Field(default_factory=dict)


DISABLED = OpenAIConfigInput().model_dump()


class ModelInputs(BaseModel):
    """The provider-side view of the inputs; `check` reports each error by field name."""

    model_config = ConfigDict(extra="ignore")

    name: str
    path: str
    sha256: str
    framework: Literal["custom"] = "custom"
    input_schema: str
    output_schema: str
    requirements: list[str] = Field(default_factory=list)
    python_version: Literal["3.8", "3.9"] = "3.8"  # Wallaroo's enum; the runtime runs models on its own Python
    arch: Literal["x86", "arm"] = "x86"
    accel: Literal["none", "cuda", "jetson", "openvino", "qaic"] = "none"
    workspace_id: int = Field(default=1, ge=1)
    openai_config: OpenAIConfigInput | None = None
    url: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must be 1-63 lowercase letters, digits or '-', starting with a letter or digit "
                             "(Wallaroo model names are DNS labels)")
        return v

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _schema(cls, v: str, info: Any) -> str:
        schema_from_b64(v, info.field_name)
        return v


COMPARED = ("name", "sha256", "framework", "input_schema", "output_schema", "requirements",
            "python_version", "arch", "accel", "workspace_id", "url", "openai_config")
REPLACE_ON = ("name", "workspace_id")


class ModelProvider(ResourceProvider):
    """CRUD of model versions through the MLOps API."""

    serialize_as_secret_always = False  # it captures no secret: keep it readable and cheap to diff

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.check_inputs(ModelInputs, news, ModelInputs.model_fields)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.diff(olds, news, COMPARED, REPLACE_ON)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._upload(props)
        return CreateResult(str(outs["model_version_id"]), outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if all(olds.get(k) == news.get(k) for k in COMPARED if k != "openai_config") and olds.get("model_version_id"):
            # only the OpenAI config changed: set it on the same version, nothing to upload
            self._configure(news, int(olds["model_version_id"]), news.get("openai_config") or DISABLED)
            return UpdateResult({**olds, **news, **{k: olds.get(k) for k in OUTPUTS}, "upload_command": upload_command(news),
                                 "openai_config": news.get("openai_config")})
        return UpdateResult(self._upload(news, had_openai_config=bool(olds.get("openai_config"))))

    @staticmethod
    def _configure(props: dict[str, Any], model_version_id: int, config: dict[str, Any]) -> None:
        report(f"WallarooModel {props['name']}: openai_config enabled={bool(config.get('enabled'))}")
        _base.client(props).set_openai_config(model_version_id, _whole_numbers(config))

    def _upload(self, props: dict[str, Any], had_openai_config: bool = False) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="wallaroo-pack-") as tmp:
            artifact = packaging.pack(Path(props["path"]), Path(tmp))
            if artifact.sha256 != props["sha256"]:
                raise RuntimeError(
                    f"model {props['name']}: the files under {props['path']} changed between plan and "
                    f"apply (sha256 {props['sha256'][:12]} -> {artifact.sha256[:12]}); run `pulumi up` again"
                )
            report(f"WallarooModel {props['name']}: uploading {artifact.size / 1e6:.1f} MB (sha256 {artifact.sha256[:12]})")
            version = _base.client(props).upload_model(
                props["name"],
                artifact.path,
                input_schema=schema_from_b64(props["input_schema"], "input_schema"),
                output_schema=schema_from_b64(props["output_schema"], "output_schema"),
                framework=props.get("framework") or "custom",
                requirements=props.get("requirements") or [],
                python_version=props.get("python_version") or "3.8",
                arch=props.get("arch") or "x86",
                accel=props.get("accel") or "none",
                workspace_id=int(props.get("workspace_id") or 1),
                progress=Throttle(f"WallarooModel {props['name']}: upload"),
            )
        if props.get("openai_config") or had_openai_config:  # set it, or clear the one this stack set before
            self._configure(props, version.id, props.get("openai_config") or DISABLED)
        return {**props, **_outputs(version, props)}

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # The id stays the first version's (Pulumi ids never change on update); the state
        # knows the version this stack uploaded last. An import has only the id.
        try:
            version = _base.client(props).get_model_version(int(props.get("model_version_id") or id_))
        except NotFoundError:
            return ReadResult(None, {})  # gone: refresh drops it, the next up re-creates it
        base = {k: v for k, v in props.items() if k in ModelInputs.model_fields or k == "token"}
        base.update(name=version.name, sha256=version.sha,
                    workspace_id=getattr(version, "workspace_id", None) or base.get("workspace_id", 1))
        conversion = version.conversion or {}
        for key in ("framework", "python_version", "arch", "accel"):
            if conversion.get(key):
                base[key] = conversion[key]
        if "requirements" in conversion:
            base["requirements"] = list(conversion["requirements"] or [])
        if getattr(version, "input_schema", None):
            base["input_schema"] = version.input_schema
        if getattr(version, "output_schema", None):
            base["output_schema"] = version.output_schema
        config = _base.client(props).openai_config(version.id)
        base["openai_config"] = None if config in (None, DISABLED) and not props.get("openai_config") else config
        base.setdefault("url", props.get("url"))
        base["token"] = _base.secret(props.get("token"))
        return _base.read_result(id_, {**base, **_outputs(version, base)}, ModelInputs.model_fields)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _base.client(props).delete_model(props["name"], int(props.get("workspace_id") or 1))
        except NotFoundError:
            pass  # already gone: deleting is idempotent


def _whole_numbers(value: Any) -> Any:
    """Pulumi carries every number as a float: 256.0 goes back to 256 (max_tokens is an integer)."""
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


OUTPUTS = ("model_id", "model_version_id", "version", "sha256", "size", "created_at", "upload_command")


def _outputs(version: Any, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_id": version.model_id,
        "model_version_id": version.id,
        "version": version.version,
        "sha256": version.sha,
        "size": version.file_size,
        "created_at": str(version.created_at),
        "upload_command": upload_command(props),
    }


def upload_command(props: dict[str, Any]) -> str:
    """The documented curl upload, with the token read from $WALLAROO_TOKEN (never inline)."""
    import json

    metadata = {
        "name": props["name"], "visibility": "private", "workspace_id": int(props.get("workspace_id") or 1),
        "conversion": {"framework": props.get("framework", "custom"),
                       "python_version": props.get("python_version", "3.8"),
                       "requirements": props.get("requirements") or [],
                       "arch": props.get("arch", "x86"), "accel": props.get("accel", "none")},
        "input_schema": props["input_schema"], "output_schema": props["output_schema"],
    }
    if props.get("openai_config"):
        metadata["openai_config"] = _whole_numbers(props["openai_config"])
    return (
        f"curl --progress-bar -X POST {props['url'].rstrip('/')}/v1/api/models/upload_and_convert "
        '-H "Authorization: Bearer $WALLAROO_TOKEN" '
        f"-F 'metadata={json.dumps(metadata, separators=(',', ':'))};type=application/json' "
        f"-F 'file=@{Path(props.get('path') or props['name'] + '.zip').name};type=application/octet-stream'"
    )


class WallarooModel(Resource, module="wallaroo", name="Model"):
    """A BYOP model version. Same name + new content = a new version, updated in place.

    Outputs: `model_id`, `model_version_id`, `version` (uuid), `sha256`, `size`,
    `created_at`, `upload_command` (curl, token from `$WALLAROO_TOKEN`).

    `openai_config` (Wallaroo's OpenaiConfig as a dict: `enabled`, `completion_config`,
    `chat_completion_config`) turns on the OpenAI-compatible endpoints of the pipelines whose first
    step is this model; changing only it updates the version in place, without an upload.
    """

    model_id: pulumi.Output[int]
    model_version_id: pulumi.Output[int]
    version: pulumi.Output[str]
    sha256: pulumi.Output[str]
    size: pulumi.Output[int]
    created_at: pulumi.Output[str]
    upload_command: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        path: str | Path,
        input_schema: pa.Schema,
        output_schema: pa.Schema,
        name: str | None = None,
        framework: str = "custom",
        requirements: list[str] | None = None,
        python_version: str = "3.8",
        arch: str = "x86",
        accel: str = "none",
        workspace_id: int = 1,
        openai_config: Mapping[str, Any] | None = None,
        connection: Connection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        self.model_name = name or resource_name
        source = Path(path).expanduser().resolve()
        if not source.exists():
            raise FileNotFoundError(
                f"WallarooModel {resource_name}: path {source} does not exist; "
                "expected a folder of BYOP Python files or a .zip"
            )
        url, token = resolve(connection)
        props = {
            "name": self.model_name,
            "path": str(source),
            "sha256": packaging.content_sha256(source),
            "framework": framework,
            "input_schema": schema_to_b64(input_schema),
            "output_schema": schema_to_b64(output_schema),
            "requirements": list(requirements) if requirements is not None else _requirements(source),
            "python_version": python_version,
            "arch": arch,
            "accel": accel,
            "workspace_id": workspace_id,
            "openai_config": dict(openai_config) if openai_config is not None else None,
            "url": url,
            "token": token,
            **{k: None for k in OUTPUTS if k != "sha256"},
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["token"]))
        super().__init__(ModelProvider(), resource_name, props, opts)


def _requirements(source: Path) -> list[str]:
    """A folder's requirements.txt, as Wallaroo reads it (comments and blanks dropped)."""
    req = source / "requirements.txt" if source.is_dir() else None
    if req is None or not req.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in req.read_text().splitlines())
    return [line for line in lines if line]
