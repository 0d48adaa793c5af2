"""The client's models API: upload (streamed), versions, the curl command for an upload; mixed into `WallarooClient`."""

from __future__ import annotations

import json
import os
import shlex
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow as pa

if TYPE_CHECKING:  # pandas costs ~0.25 s to import: only the methods that return frames load it,
    pass  # not every Pulumi provider process and program that merely connects

from wallaroo_pulumi.client import wire
from wallaroo_pulumi.client._shared import (
    CHUNK,
    ClientArea,
    UploadProgress,
    schema_b64,
)
from wallaroo_pulumi.client.errors import NotFoundError
from wallaroo_pulumi.client.models import (
    Model,
    ModelVersion,
)


class ModelsAPI(ClientArea):
    """Mixed into `WallarooClient`."""

    def _upload_metadata(
        self, name: str, input_schema: pa.Schema | str, output_schema: pa.Schema | str, framework: str,
        requirements: Sequence[str], python_version: str, arch: str, accel: str, workspace_id: int | None,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "visibility": "private",
            "workspace_id": workspace_id or 1,
            "conversion": {
                "framework": framework,
                "python_version": python_version,
                "requirements": list(requirements),
                "arch": arch,
                "accel": accel,
            },
            "input_schema": schema_b64(input_schema),
            "output_schema": schema_b64(output_schema),
        }

    def upload_model(
        self,
        name: str,
        file_path: str | os.PathLike[str],
        input_schema: pa.Schema | str,
        output_schema: pa.Schema | str,
        framework: str = "custom",
        requirements: Sequence[str] = (),
        python_version: str = "3.8",
        arch: str = "x86",
        accel: str = "none",
        workspace_id: int | None = None,
        progress: UploadProgress | None = None,
    ) -> ModelVersion:
        """Upload a BYOP zip (streamed in 1 MiB chunks: constant memory). Same name +
        same content returns the existing version; new content makes a new one."""
        path = Path(file_path)
        total = path.stat().st_size
        metadata = self._upload_metadata(
            name, input_schema, output_schema, framework, requirements, python_version, arch, accel, workspace_id
        )
        boundary = f"wallaroo-{uuid.uuid4().hex}"
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="metadata"\r\n'
            "Content-Type: application/json\r\n\r\n"
            f"{json.dumps(metadata)}\r\n"
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            sent = 0
            if progress:
                progress(0, total)
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    sent += len(chunk)
                    yield chunk
                    if progress:
                        progress(sent, total)
            yield tail

        response = self._transport.request(
            "POST",
            "/v1/api/models/upload_and_convert",
            content=body(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + total + len(tail)),
            },
            timeout=httpx.Timeout(max(self._transport.timeout, 600.0), connect=10.0),
            context=f"upload model {name!r}",
        )
        version_id = response.json()["insert_models"]["returning"][0]["models"][0]["id"]
        return self.get_model_version(version_id)

    def generate_upload_model_api_command(
        self,
        name: str,
        file_path: str | os.PathLike[str],
        input_schema: pa.Schema | str,
        output_schema: pa.Schema | str,
        framework: str = "custom",
        requirements: Sequence[str] = (),
        python_version: str = "3.8",
        arch: str = "x86",
        accel: str = "none",
        workspace_id: int | None = None,
    ) -> str:
        """Print (and return) the documented curl upload. The token is `$TOKEN`, never inline."""
        metadata = self._upload_metadata(
            name, input_schema, output_schema, framework, requirements, python_version, arch, accel, workspace_id
        )
        command = (
            "curl --progress-bar -X POST \\\n"
            '  -H "Authorization: Bearer $TOKEN" \\\n'
            f"  -F {shlex.quote('metadata=' + json.dumps(metadata) + ';type=application/json')} \\\n"
            f"  -F {shlex.quote('file=@' + str(file_path) + ';type=application/octet-stream')} \\\n"
            f"  {self.url}/v1/api/models/upload_and_convert"
        )
        print(command)
        return command

    def get_model_version(self, model_version_id: int) -> ModelVersion:
        context = f"model version {model_version_id}"
        data = self._post("/v1/api/models/get_model_version_by_id", {"model_version_id": model_version_id}, context)
        configured = data["model_version"]
        models_pk_id = configured["model_version"].get("model_id")
        if models_pk_id is None:  # not in Wallaroo's answer: its GraphQL has it
            found = self._graphql(wire.MODEL_VERSIONS_QUERY, {"where": {"id": {"_eq": model_version_id}}}, context)
            models_pk_id = found["model"][0]["models_pk_id"]
        return wire.model_version(configured, models_pk_id)

    def list_models(self, workspace_id: int | None = None) -> list[Model]:
        data = self._post("/v1/api/models/list", {"workspace_id": workspace_id or 1}, "list models")
        return [wire.model(m) for m in data["models"]]

    def list_model_versions(self, name: str, workspace_id: int | None = None) -> list[ModelVersion]:
        data = self._post("/v1/api/models/list", {"workspace_id": workspace_id or 1}, f"versions of model {name!r}")
        for item in data["models"]:
            if item["model"]["name"] == name:
                return [wire.model_version(v, item["model"]["id"]) for v in item["model_versions"]]
        raise NotFoundError(f"versions of model {name!r}: no model named {name!r} in workspace {workspace_id or 1}")

    def delete_model(self, name: str, workspace_id: int | None = None) -> None:
        """Every version of the model `name`; refused (ConflictError) while a deployed pipeline uses it."""
        self._post("/v1/api/models/delete_model", {"model_id": name, "workspace_id": workspace_id or 1},
                   f"delete model {name!r}")
