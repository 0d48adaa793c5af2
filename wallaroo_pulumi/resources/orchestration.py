"""`WallarooOrchestration`: a folder or zip of the user's Python (main.py, at most one
requirements.txt), uploaded and packaged on the runtime; content-addressed like a model (D50)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource, ResourceProvider
from pydantic import BaseModel, ConfigDict, Field

from .. import packaging
from ..client import NotFoundError
from . import _base
from .connection import Connection, resolve
from .progress import report


class OrchestrationInputs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=128)
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    workspace_id: int = Field(default=1, ge=1)
    url: str


COMPARED = ("name", "sha256", "workspace_id", "url")
REPLACE_ON = ("name", "sha256", "workspace_id")  # every upload is an orchestration of its own (Wallaroo's way)
OUTPUTS = ("orchestration_id", "status", "file_name", "size")


class OrchestrationProvider(ResourceProvider):
    serialize_as_secret_always = False  # it captures no secret: keep it readable and cheap to diff

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.check_inputs(OrchestrationInputs, news, OrchestrationInputs.model_fields)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.diff(olds, news, COMPARED, REPLACE_ON)

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = _base.client(props)
        with tempfile.TemporaryDirectory(prefix="wallaroo-orch-") as tmp:
            artifact = packaging.pack(Path(props["path"]), Path(tmp))
            if artifact.sha256 != props["sha256"]:
                raise RuntimeError(f"orchestration {props['name']}: the files under {props['path']} changed between "
                                   f"plan and apply (sha256 {props['sha256'][:12]} -> {artifact.sha256[:12]}); run "
                                   "`pulumi up` again")
            report(f"WallarooOrchestration {props['name']}: uploading {artifact.size / 1e3:.1f} kB "
                   f"(sha256 {artifact.sha256[:12]})")
            orch = api.upload_orchestration(artifact.path.read_bytes(), Path(props["path"]).name
                                            if artifact.path == Path(props["path"]) else f"{props['name']}.zip",
                                            name=props["name"], workspace_id=int(props.get("workspace_id") or 1))
        report(f"WallarooOrchestration {props['name']}: packaging (its requirements are installed once)")
        orch = api.wait_for_orchestration(orch.id)
        return CreateResult(orch.id, {**props, **_outputs(orch)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            orch = _base.client(props).get_orchestration(id_)
        except NotFoundError:
            return ReadResult(None, {})
        outs = {**props, "name": orch.name or props.get("name"), "sha256": orch.sha, "workspace_id": orch.workspace_id,
                "token": _base.secret(props.get("token")), **_outputs(orch)}
        return _base.read_result(id_, outs, OrchestrationInputs.model_fields)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _base.client(props).delete_orchestration(id_)
        except NotFoundError:
            pass


def _outputs(orch: Any) -> dict[str, Any]:
    return {"orchestration_id": orch.id, "status": orch.status, "file_name": orch.file_name, "size": orch.file_size}


class WallarooOrchestration(Resource, module="wallaroo", name="Orchestration"):
    """A folder or zip holding `main.py` (and at most one `requirements.txt`) that tasks run.
    New content is a new orchestration (replaced, and the tasks running it with it).

    Outputs: `orchestration_id`, `status` (ready), `file_name`, `size`.
    """

    orchestration_id: pulumi.Output[str]
    status: pulumi.Output[str]
    file_name: pulumi.Output[str]
    size: pulumi.Output[int]

    def __init__(
        self,
        resource_name: str,
        *,
        path: str | Path,
        name: str | None = None,
        workspace_id: int = 1,
        connection: Connection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        source = Path(path).expanduser().resolve()
        if not source.exists():
            raise FileNotFoundError(f"WallarooOrchestration {resource_name}: path {source} does not exist; "
                                    "expected a folder holding main.py or a .zip of one")
        url, token = resolve(connection)
        props = {
            "name": name or resource_name, "path": str(source), "sha256": packaging.content_sha256(source),
            "workspace_id": workspace_id, "url": url, "token": token, **{k: None for k in OUTPUTS},
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["token"]))
        super().__init__(OrchestrationProvider(), resource_name, props, opts)
