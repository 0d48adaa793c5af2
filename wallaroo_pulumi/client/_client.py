"""`WallarooClient`: the typed client for the runtime's Wallaroo-compatible MLOps API."""

from __future__ import annotations

import io
import json
import os
import shlex
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow as pa
import pydantic

if TYPE_CHECKING:  # pandas costs ~0.25 s to import: only the methods that return frames load it,
    import pandas as pd  # not every Pulumi provider process and program that merely connects

from wallaroo_pulumi import engine_config as ec
from wallaroo_pulumi.client import wire
from wallaroo_pulumi.client.errors import (
    AuthError,
    DeploymentError,
    InferenceError,
    NotFoundError,
    RuntimeUnavailableError,
    ValidationError,
    WallarooError,
)
from wallaroo_pulumi.client.keys import KeysAPI
from wallaroo_pulumi.client.model_config import ModelConfigAPI
from wallaroo_pulumi.client.models import (
    CreatedPipeline,
    DeploymentStatus,
    Model,
    ModelRef,
    ModelVersion,
    Pipeline,
    Task,
    TaskRun,
    Workspace,
)
from wallaroo_pulumi.client.transport import Transport
from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.orchestration import ORCHESTRATION_ID
from wallaroo_pulumi.schemas import schema_to_b64

JSON_RECORDS = "application/json; format=pandas-records"
ARROW_FILE = "application/vnd.apache.arrow.file"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
CHUNK = 1 << 20

UploadProgress = Callable[[int, int], None]
"""progress(bytes_sent, total_bytes)"""
DeployProgress = Callable[[str], None]
"""progress(message)"""


def _schema_b64(schema: pa.Schema | str) -> str:
    return schema if isinstance(schema, str) else schema_to_b64(schema)


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _step_dict(step: ModelRef | ModelVersion | dict[str, Any]) -> dict[str, Any]:
    if isinstance(step, ModelVersion):
        step = step.ref()
    if isinstance(step, ModelRef):
        return step.model_dump(exclude_none=True)
    return {k: v for k, v in dict(step).items() if v is not None}


def records_to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Wallaroo-shaped records -> DataFrame with `time`, `in.*`, `out.*`, `anomaly.count`, `metadata.*`."""
    import pandas as pd
    if not records:
        return pd.DataFrame()
    frame = pd.json_normalize(records, max_level=1)
    if "time" in frame.columns:
        frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
    return frame


class WallarooClient(KeysAPI, ModelConfigAPI):
    """Client for the bundled runtime (or any server speaking the same API).

    >>> client = WallarooClient.from_data_dir("~/.wallaroo-pulumi")
    >>> client.health()
    """

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._transport = Transport(self.url, token, timeout)
        self._deployment_ids: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"WallarooClient(url={self.url!r})"

    def __enter__(self) -> WallarooClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    @classmethod
    def from_data_dir(cls, path: str | os.PathLike[str], timeout: float = 60.0) -> WallarooClient:
        """Connect to the runtime serving `path` (reads `runtime.json` and `admin.token`)."""
        data_dir = Path(path).expanduser()
        info_path = data_dir / "runtime.json"
        try:
            info = json.loads(info_path.read_text())
        except FileNotFoundError:
            raise RuntimeUnavailableError(f"(no {info_path}: is a runtime serving {data_dir}?)") from None
        try:
            token = (data_dir / "admin.token").read_text().strip()
        except FileNotFoundError:
            raise WallarooError(f"no admin token at {data_dir / 'admin.token'}") from None
        return cls(info["url"], token, timeout=timeout)

    # -- basics ------------------------------------------------------------
    def _post(self, path: str, payload: dict[str, Any], context: str = "", **kw: Any) -> Any:
        return self._transport.post_json(path, payload, context=context, **kw)

    def _graphql(self, query: str, variables: dict[str, Any], context: str) -> dict[str, Any]:
        """A query of Wallaroo's GraphQL (what the SDK reads objects with); errors raise WallarooError."""
        data = self._post("/v1/graphql", {"query": query, "variables": variables}, context)
        if data.get("errors"):
            raise WallarooError(f"{context}: " + "; ".join(e.get("message", str(e)) for e in data["errors"]), body=data)
        return data["data"]

    def health(self) -> dict[str, Any]:
        return self._transport.request("GET", "/health", context="health", auth=False).json()

    def list_workspaces(self) -> list[Workspace]:
        data = self._post("/v1/api/workspaces/list", {}, "list workspaces")
        return [Workspace.model_validate(w) for w in data["workspaces"]]

    def create_workspace(self, name: str) -> Workspace:
        data = self._post("/v1/api/workspaces/create", {"workspace_name": name}, f"create workspace {name!r}")
        if "workspace" in data:
            return Workspace.model_validate(data["workspace"])
        return next(w for w in self.list_workspaces() if w.id == data["workspace_id"])

    # -- models ------------------------------------------------------------
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
            "input_schema": _schema_b64(input_schema),
            "output_schema": _schema_b64(output_schema),
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

    # -- pipelines ---------------------------------------------------------
    def create_pipeline(
        self,
        name: str,
        steps: Sequence[ModelRef | ModelVersion | dict[str, Any]],
        workspace_id: int | None = None,
    ) -> CreatedPipeline:
        """Create the pipeline or a new version of it (an identical definition returns the current one)."""
        payload = {
            "pipeline_id": name,
            "workspace_id": workspace_id or 1,
            "definition": {"steps": [{"ModelInference": {"models": [_step_dict(s)]}} for s in steps]},
        }
        return CreatedPipeline.model_validate(self._post("/v1/api/pipelines/create", payload, f"create pipeline {name!r}"))

    def _pipelines(self, where: dict[str, Any], context: str) -> list[Pipeline]:
        out = []
        for node in self._graphql(wire.PIPELINES_QUERY, {"where": where}, context)["pipeline"]:
            dep = node.get("deployment") or {}
            status = None
            if dep.get("deployed"):
                try:
                    status = self.deployment_status(f"{node['pipeline_id']}-{dep['id']}")
                except NotFoundError:
                    pass  # deployed, but not serving yet
            pipeline = wire.pipeline(node, status)
            if pipeline.deployment_id is not None:
                self._deployment_ids[pipeline.name] = pipeline.deployment_id
            out.append(pipeline)
        return out

    def get_pipeline(self, name_or_id: str | int, workspace_id: int | None = None) -> Pipeline:
        """A pipeline by id, or by name in `workspace_id` (default 1): its current version and steps,
        its deployment and that deployment's status."""
        if isinstance(name_or_id, int):
            where: dict[str, Any] = {"id": {"_eq": name_or_id}}
        else:
            where = {"pipeline_id": {"_eq": name_or_id}, "workspace_id": {"_eq": workspace_id or 1}}
        found = self._pipelines(where, f"pipeline {name_or_id!r}")
        if not found:
            raise NotFoundError(f"pipeline {name_or_id!r}: no such pipeline"
                                + ("" if isinstance(name_or_id, int) else f" in workspace {workspace_id or 1}"))
        return found[0]

    def list_pipelines(self, workspace_id: int | None = None) -> list[Pipeline]:
        return self._pipelines({"workspace_id": {"_eq": workspace_id}} if workspace_id else {}, "list pipelines")

    def delete_pipeline(self, pipeline: int | str, workspace_id: int | None = None) -> None:
        """Undeploy (if deployed) and delete. Inference logs are kept."""
        if isinstance(pipeline, int):
            found = self.get_pipeline(pipeline)
            pipeline, workspace_id = found.name, found.workspace_id
        self._post("/v1/api/pipelines/delete_pipeline", {"pipeline_id": pipeline, "workspace_id": workspace_id or 1},
                   f"delete pipeline {pipeline!r}")

    def deploy(
        self,
        pipeline_name: str,
        *,
        pipeline_id: int | None = None,
        pipeline_version_pk_id: int | None = None,
        engine_config: Any = None,
        models: Sequence[ModelRef | ModelVersion | dict[str, Any]] | None = None,
    ) -> int:
        """Start (or restart with a new version / config) the deployment; returns its id.
        It comes up in the background: follow it with `wait_for_deployment`.

        `engine_config`: Wallaroo's nested form (`DeploymentConfigBuilder().build()`), sent as is, or
        our `DeploymentConfig` (or its dict), sent in the nested form with each sidekick keyed by its
        model version ('<model>-<model version id>', from `models` or the pipeline version's steps)."""
        if engine_config is None or not ec.is_engine_config(engine_config):
            try:
                config = DeploymentConfig.model_validate(engine_config or {})
            except pydantic.ValidationError as exc:
                problems = "; ".join(".".join(["engine_config", *map(str, e["loc"])]) + ": "
                                     + e["msg"].removeprefix("Value error, ") for e in exc.errors())
                raise ValidationError(f"deploy pipeline {pipeline_name!r}: {problems}") from None
            keys = self._image_keys(list(config.sidekicks), pipeline_name, pipeline_version_pk_id, models)
            engine_config = ec.from_config(config, keys.__getitem__)
        payload: dict[str, Any] = {"deploy_id": pipeline_name, "engine_config": engine_config}
        if pipeline_id is not None:
            payload["pipeline_id"] = pipeline_id
        if pipeline_version_pk_id is not None:
            payload["pipeline_version_pk_id"] = pipeline_version_pk_id
        if models is not None:
            payload["models"] = [{k: v for k, v in _step_dict(m).items() if k in ("name", "version", "sha")}
                                 for m in models]
        data = self._post("/v1/api/pipelines/deploy", payload, f"deploy pipeline {pipeline_name!r}")
        self._deployment_ids[pipeline_name] = int(data["id"])
        return int(data["id"])

    def _image_keys(self, names: list[str], pipeline_name: str, version_pk_id: int | None,
                    models: Sequence[ModelRef | ModelVersion | dict[str, Any]] | None) -> dict[str, str]:
        """'<model>-<model version id>' of each named model: from `models`, else the version's steps."""
        if not names:
            return {}
        refs = [_step_dict(m) for m in models or ()]
        if not refs or any(r.get("model_version_id") is None for r in refs if r.get("name") in names):
            if version_pk_id is None:
                version_pk_id = self.get_pipeline(pipeline_name).pipeline_version_pk_id
            found = self._graphql(wire.VERSION_DEFINITION_QUERY, {"id": version_pk_id}, f"pipeline version {version_pk_id}")
            refs = wire.steps((found["pipeline_version_by_pk"] or {}).get("definition"))
        keys = {}
        for ref in refs:
            if ref["name"] in names:
                version_id = ref.get("model_version_id")
                if version_id is None:
                    where = {"model_id": {"_eq": ref["name"]}, "model_version": {"_eq": ref["version"]}}
                    rows = self._graphql(wire.MODEL_VERSIONS_QUERY, {"where": where}, f"model {ref['name']!r}")["model"]
                    version_id = rows[0]["id"] if rows else None
                if version_id is not None:
                    keys[ref["name"]] = ec.image_key(ref["name"], version_id)
        missing = sorted(set(names) - set(keys))
        if missing:
            raise ValidationError(f"deploy pipeline {pipeline_name!r}: engine_config.sidekicks names "
                                  f"{', '.join(map(repr, missing))}, not a model of this pipeline version")
        return keys

    def undeploy(self, pipeline: int | str, deployment_id: int | None = None) -> None:
        if isinstance(pipeline, str):
            found = self.get_pipeline(pipeline)
            pipeline, deployment_id = found.pipeline_id, deployment_id or found.deployment_id
        payload: dict[str, Any] = {"pipeline_id": pipeline}
        if deployment_id is not None:
            payload["deployment_id"] = deployment_id
        self._post("/v1/api/pipelines/undeploy", payload, f"undeploy pipeline {pipeline!r}")

    def deployment_status(self, name: str) -> DeploymentStatus:
        """`name` is `<pipeline>-<deployment id>` (as Wallaroo) or just the pipeline name."""
        data = self._post("/v1/api/status/get_deployment", {"name": name}, f"deployment {name!r}")
        return wire.deployment_status({"name": name, **data})

    def wait_for_deployment(
        self,
        name: str,
        timeout_s: float = 300.0,
        progress: DeployProgress | None = None,
        poll_s: float = 0.25,
    ) -> str:
        """Poll until Running (returned) or Error (raises `DeploymentError` with the sidekick's reason)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            status = self.deployment_status(name)
            summary = status.status
            if status.sidekicks:
                summary += " (" + ", ".join(f"{s.name}: {s.status}" for s in status.sidekicks) + ")"
            if progress and summary != last:
                progress(summary)
            last = summary
            if status.status == "Running":
                return status.status
            if status.status == "Error":
                reasons = [f"{s.name}: {s.reason}" for s in status.sidekicks if s.reason]
                reason = status.reason or "; ".join(reasons) or "no reason given"
                raise DeploymentError(f"deployment {name} failed: {reason}", body=status.model_dump())
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"deployment {name} not Running after {timeout_s:.0f}s (last status: {summary})",
                    body=status.model_dump(),
                )
            time.sleep(poll_s)

    # -- inference ---------------------------------------------------------
    def _infer_path(self, pipeline_name: str) -> str:
        dep = self._deployment_ids.get(pipeline_name)
        if dep is None:
            try:
                pipeline = self.get_pipeline(pipeline_name)
            except AuthError as exc:
                if exc.status_code != 403:
                    raise
                return f"/v1/api/pipelines/infer/{pipeline_name}"  # an inference-only key: its current deployment
            if not pipeline.deployed or pipeline.deployment_id is None:
                raise NotFoundError(f"pipeline {pipeline_name!r} is not deployed (status: {pipeline.status})")
            dep = pipeline.deployment_id
        return f"/v1/api/pipelines/infer/{pipeline_name}-{dep}/{pipeline_name}"

    def _infer_raw(self, pipeline_name: str, body: bytes, content_type: str, accept: str, timeout: float | None) -> httpx.Response:
        try:
            return self._transport.request(
                "POST", self._infer_path(pipeline_name), content=body,
                headers={"Content-Type": content_type, "Accept": accept},
                timeout=timeout, context=f"inference on {pipeline_name!r}",
            )
        except NotFoundError:
            if pipeline_name not in self._deployment_ids:
                raise
            self._deployment_ids.pop(pipeline_name)  # maybe a stale deployment id: look it up once more
            return self._transport.request(
                "POST", self._infer_path(pipeline_name), content=body,
                headers={"Content-Type": content_type, "Accept": accept},
                timeout=timeout, context=f"inference on {pipeline_name!r}",
            )
        except WallarooError as exc:
            if exc.status_code is not None and exc.status_code >= 500:
                raise InferenceError(exc.message, status_code=exc.status_code, body=exc.body) from None
            raise

    def infer(
        self, pipeline_name: str, data: pd.DataFrame | pa.Table, timeout: float | None = None
    ) -> pd.DataFrame | pa.Table:
        """DataFrame in -> pandas-records JSON -> DataFrame out (`time`, `in.*`, `out.*`, ...);
        Arrow Table in -> Arrow file -> Arrow Table out."""
        import pandas as pd
        if isinstance(data, pa.Table):
            sink = io.BytesIO()
            with pa.ipc.new_file(sink, data.schema) as writer:
                writer.write_table(data)
            response = self._infer_raw(pipeline_name, sink.getvalue(), ARROW_FILE, ARROW_FILE, timeout)
            return pa.ipc.open_file(pa.py_buffer(response.content)).read_all()
        if isinstance(data, pd.DataFrame):
            body = data.to_json(orient="records").encode()
            response = self._infer_raw(pipeline_name, body, JSON_RECORDS, JSON_RECORDS, timeout)
            return records_to_frame(response.json())
        raise TypeError(f"data must be a pandas.DataFrame or pyarrow.Table, got {type(data).__name__}")

    def infer_from_file(self, pipeline_name: str, path: str | os.PathLike[str], timeout: float | None = None):
        """Send a `.json` (pandas records) or `.arrow` (IPC file) as-is, as the docs' curl does."""
        path = Path(path)
        body = path.read_bytes()
        if path.suffix.lower() == ".json":
            response = self._infer_raw(pipeline_name, body, JSON_RECORDS, JSON_RECORDS, timeout)
            return records_to_frame(response.json())
        if path.suffix.lower() in (".arrow", ".feather", ".arrows"):
            ctype = ARROW_STREAM if path.suffix.lower() == ".arrows" else ARROW_FILE
            response = self._infer_raw(pipeline_name, body, ctype, ARROW_FILE, timeout)
            return pa.ipc.open_file(pa.py_buffer(response.content)).read_all()
        raise ValueError(f"{path}: expected a .json (pandas records) or .arrow (Arrow IPC file)")

    # -- logs --------------------------------------------------------------
    def logs(
        self,
        pipeline_name: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        limit: int = 100,
        order: str = "Desc",
        workspace_id: int | None = None,
        page_size: int = 1000,
    ) -> pd.DataFrame:
        """Up to `limit` logged inferences (start <= time < end), newest first by default."""
        import pandas as pd
        if (start is None) != (end is None):
            end = end or datetime.now(UTC)
            start = start or datetime.fromtimestamp(0, UTC)
        frames: list[pd.DataFrame] = []
        cursor = None
        got = 0
        while got < limit:
            payload: dict[str, Any] = {
                "pipeline_name": pipeline_name,
                "workspace_id": workspace_id or 1,
                "order": order.lower(),
                "page_size": min(page_size, limit - got),
            }
            if start is not None:
                payload["start_time"] = _iso(start)
                payload["end_time"] = _iso(end)
            if cursor:
                payload["cursor"] = cursor
            response = self._transport.request(
                "POST", "/v1/api/pipelines/get_logs", json=payload,
                headers={"Accept": ARROW_FILE}, context=f"logs of {pipeline_name!r}",
            )
            table = pa.ipc.open_file(pa.py_buffer(response.content)).read_all()
            if table.num_rows:
                frames.append(table.to_pandas())
                got += table.num_rows
            cursor = response.headers.get("x-iteration-cursor")
            status = response.headers.get("x-iteration-status", "All")
            if status == "All" or not cursor or table.num_rows == 0 and status != "SchemaChange":
                break
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    # -- listener tasks ------------------------------------------------------
    def create_task(
        self,
        name: str,
        json_args: dict[str, Any],
        schedule: str | None = None,
        timeout_s: float | None = None,
        workspace_id: int = 1,
    ) -> Task:
        """Run the `llm-listener` orchestration once now, or on a cron `schedule`."""
        payload: dict[str, Any] = {"name": name, "workspace_id": workspace_id, "json": json_args, "orch_id": ORCHESTRATION_ID}
        if timeout_s is not None:
            payload["timeout"] = timeout_s
        if schedule is not None:  # "" is a bad schedule (the runtime says why), not "run once"
            payload["schedule"] = schedule
            return Task.model_validate(self._post("/v1/api/task/run_scheduled", payload, f"schedule task {name!r}"))
        return Task.model_validate(self._post("/v1/api/task/run_once", payload, f"run task {name!r}"))

    def get_task(self, task_id: str) -> Task:
        return Task.model_validate(self._post("/v1/api/task/get_by_id", {"id": task_id}, f"task {task_id}"))

    def list_tasks(self, workspace_id: int | None = None) -> list[Task]:
        payload = {} if workspace_id is None else {"workspace_id": workspace_id}
        return [Task.model_validate(t) for t in self._post("/v1/api/task/list", payload, "list tasks")]

    def update_task(
        self,
        task_id: str,
        schedule: str | None = None,
        json_args: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Task:
        """Change a task in place: it keeps its id and its record of rows already scored."""
        payload: dict[str, Any] = {"id": task_id}
        for key, value in (("schedule", schedule), ("json", json_args), ("timeout", timeout_s)):
            if value is not None:
                payload[key] = value
        return Task.model_validate(self._post("/v1/api/task/update", payload, f"update task {task_id}"))

    def kill_task(self, task_id: str) -> Task:
        return Task.model_validate(self._post("/v1/api/task/kill", {"id": task_id}, f"kill task {task_id}"))

    def delete_task(self, task_id: str) -> None:
        """Kill a task's run in progress and remove the task (its scores stay)."""
        self._post("/v1/api/task/delete", {"id": task_id}, f"delete task {task_id}")

    def list_task_runs(self, task_id: str, limit: int | None = None) -> list[TaskRun]:
        payload: dict[str, Any] = {"task_id": task_id}
        if limit is not None:
            payload["limit"] = limit
        return [TaskRun.model_validate(r) for r in self._post("/v1/api/task/list_task_runs", payload, f"runs of task {task_id}")]

    def wait_for_run(
        self,
        task_id: str,
        timeout_s: float = 120.0,
        poll_s: float = 0.25,
        after: TaskRun | str | None = None,
    ) -> TaskRun:
        """The task's newest run once it has finished (success, failure, timed_out or killed).

        `after` (a run or run id, e.g. the last one this returned): wait for a newer run than that,
        so a scheduled task's next run is awaited instead of its last finished one."""
        after_id = after.id if isinstance(after, TaskRun) else after
        deadline = time.monotonic() + timeout_s
        while True:
            runs = self.list_task_runs(task_id, limit=1)
            newest = runs[0] if runs and runs[0].id != after_id else None
            if newest is not None and newest.status != "running":
                return newest
            if time.monotonic() > deadline:
                state = newest.status if newest else ("no run yet" if after_id is None else f"no run after {after_id}")
                raise WallarooError(f"task {task_id}: no finished run after {timeout_s:g}s ({state})")
            time.sleep(poll_s)

    def task_run_logs(self, run_id: str, lines: int | None = None) -> list[str]:
        payload: dict[str, Any] = {"id": run_id}
        if lines is not None:
            payload["lines"] = lines
        return self._post("/v1/api/task/get_logs_for_run", payload, f"logs of run {run_id}")["logs"]

    def listener_results(
        self,
        pipeline: str,
        listener: str | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        limit: int = 1000,
        run_id: str | None = None,
        newest_first: bool = True,
    ) -> pd.DataFrame:
        """Scores stored for `pipeline`'s logged inferences, one row per scored inference, newest
        first (``newest_first=False``: oldest first); with `run_id`, only what that listener run scored
        (e.g. ``wait_for_run(...).id``), however many older runs the window holds."""
        import pandas as pd
        payload: dict[str, Any] = {"pipeline": pipeline, "limit": limit, "order": "Desc" if newest_first else "Asc"}
        if listener:
            payload["listener"] = listener
        if run_id is not None:
            payload["run_id"] = run_id
        if start is not None:
            payload["start"] = _iso(start)
        if end is not None:
            payload["end"] = _iso(end)
        data = self._post("/v1/api/listeners/results", payload, f"listener results of {pipeline!r}")
        frames = []
        for result in data["results"]:
            frame = records_to_frame(result["records"])
            if not frame.empty:
                frame.insert(0, "score_pipeline", result["score_pipeline"])
                frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def assay(
        self,
        pipeline: str,
        score: str,
        baseline: tuple[datetime | str, datetime | str],
        window: tuple[datetime | str, datetime | str],
        listener: str | None = None,
        width_seconds: float | None = None,
        **options: Any,
    ) -> pd.DataFrame:
        """Drift of one score: each slice of `window` against `baseline`, one row per slice
        (start, end, score, status OK/Warning/Alert, ...). `options`: metric, bins, threshold, ..."""
        import pandas as pd
        payload: dict[str, Any] = {
            "pipeline": pipeline, "score": score,
            "baseline": {"start": _iso(baseline[0]), "end": _iso(baseline[1])},
            "window": {"start": _iso(window[0]), "end": _iso(window[1])},
            **options,
        }
        if listener:
            payload["listener"] = listener
        if width_seconds is not None:
            payload["width_seconds"] = width_seconds
        data = self._post("/v1/api/assays/run", payload, f"assay of {score!r} on {pipeline!r}")
        return pd.json_normalize(data["windows"])
