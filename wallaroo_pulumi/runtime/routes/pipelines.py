"""Pipelines, their versions ("variants") and deployments."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.runtime.convergence import apply_row, mark_applied
from wallaroo_pulumi.runtime.db import dumps
from wallaroo_pulumi.runtime.errors import bad_request, describe_validation_error, not_found
from wallaroo_pulumi.runtime.routes.models import decode_schema, resolve_model_ref, version_row
from wallaroo_pulumi.runtime.routes.workspaces import require_workspace
from wallaroo_pulumi.runtime.state import Runtime, get_rt, iso

log = logging.getLogger("wallaroo_pulumi.runtime.pipelines")
router = APIRouter(prefix="/v1/api", tags=["pipelines"])

PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
NAME_HELP = "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit (it becomes part of the inference URL)"


class ModelStep(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: str | None = None
    sha: str | None = None
    model_version_id: int | None = None


class ModelInference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[ModelStep] = Field(min_length=1, max_length=1)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ModelInference: ModelInference


class Definition(BaseModel):
    model_config = ConfigDict(extra="allow")
    steps: list[Step] = Field(min_length=1)


class CreatePipeline(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: str = Field(description="the pipeline name")
    workspace_id: int = 1
    definition: Definition

    @field_validator("pipeline_id")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PIPELINE_NAME.match(v):
            raise ValueError(NAME_HELP)
        return v


def _steps_of(definition: dict[str, Any]) -> list[dict[str, Any]]:
    return [s["ModelInference"]["models"][0] for s in definition["steps"]]


def pipeline_by(rt: Runtime, pipeline_id: int | None = None, name: str | None = None, workspace_id: int | None = None) -> dict[str, Any]:
    if pipeline_id is not None:
        row = rt.db.one("SELECT * FROM pipelines WHERE id = ?", (pipeline_id,))
        if row is None:
            raise not_found(f"pipeline_id: no pipeline with id {pipeline_id}")
        if name is not None and row["name"] != name:
            raise bad_request(f"pipeline_id {pipeline_id} is pipeline {row['name']!r}, not {name!r}")
        return row
    if name is None:
        raise bad_request("pipeline_id or name: one is required")
    row = rt.db.one("SELECT * FROM pipelines WHERE name = ? AND workspace_id = ?", (name, workspace_id or 1))
    if row is None:
        raise not_found(f"no pipeline named {name!r} in workspace {workspace_id or 1}")
    return row


@router.post("/pipelines/create")
def create_pipeline(request: Request, body: CreatePipeline) -> dict:
    rt = get_rt(request)
    require_workspace(rt.db, body.workspace_id)
    steps = []
    for i, step in enumerate(body.definition.steps):
        ref = step.ModelInference.models[0].model_dump()
        row = resolve_model_ref(rt, ref, body.workspace_id, f"definition.steps[{i}].ModelInference.models[0]")
        steps.append({"ModelInference": {"models": [{"name": row["name"], "version": row["version"], "sha": row["sha"]}]}})
    definition = {"steps": steps}
    text = dumps(definition)
    now = time.time()
    with rt.db.tx() as c:
        p = c.execute("SELECT * FROM pipelines WHERE name = ? AND workspace_id = ?", (body.pipeline_id, body.workspace_id)).fetchone()
        if p is None:
            pid = c.execute(
                "INSERT INTO pipelines (workspace_id, name, created_at) VALUES (?, ?, ?)", (body.workspace_id, body.pipeline_id, now)
            ).lastrowid
            current = None
        else:
            pid = p["id"]
            current = c.execute("SELECT * FROM pipeline_versions WHERE id = ?", (p["current_version_id"],)).fetchone()
        if current is not None and current["definition"] == text:
            vid, version = current["id"], current["version"]
        else:
            version = str(uuid.uuid4())
            vid = c.execute(
                "INSERT INTO pipeline_versions (pipeline_id, version, definition, created_at) VALUES (?, ?, ?, ?)",
                (pid, version, text, now),
            ).lastrowid
            c.execute("UPDATE pipelines SET current_version_id = ? WHERE id = ?", (vid, pid))
    return {"pipeline_pk_id": pid, "pipeline_variant_pk_id": vid, "pipeline_variant_version": version}


class DeployPipeline(BaseModel):
    model_config = ConfigDict(extra="allow")
    deploy_id: str | None = Field(default=None, description="the pipeline name")
    pipeline_id: int | None = Field(default=None, description="the pipeline's pk id")
    pipeline_version_pk_id: int | None = None
    workspace_id: int | None = None
    engine_config: dict[str, Any] | None = None
    models: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one(self) -> DeployPipeline:
        if self.deploy_id is None and self.pipeline_id is None:
            raise ValueError("give deploy_id (the pipeline name) or pipeline_id")
        return self


def step_rows(rt: Runtime, definition: dict[str, Any], workspace_id: int) -> list[dict[str, Any]]:
    rows = []
    for i, ref in enumerate(_steps_of(definition)):
        row = version_row(
            rt, "m.name = ? AND m.workspace_id = ? AND mv.version = ?", (ref["name"], workspace_id, ref["version"])
        )
        if row is None:
            raise bad_request(
                f"definition.steps[{i}]: model {ref['name']!r} version {ref['version']} no longer exists; "
                "create a new pipeline version with an existing model version"
            )
        conversion = json.loads(row["conversion"])
        rows.append(
            {
                "id": row["id"], "name": row["name"], "version": row["version"], "sha": row["sha"],
                "input_schema": decode_schema(row["input_schema"], "input_schema"),
                "output_schema": decode_schema(row["output_schema"], "output_schema"),
                "requirements": conversion.get("requirements") or [],
            }
        )
    return rows


async def start_deployment(rt: Runtime, pipeline: dict[str, Any], version: dict[str, Any], config: DeploymentConfig, dep_id: int) -> None:
    steps = step_rows(rt, json.loads(version["definition"]), pipeline["workspace_id"])
    await rt.engine.deploy(dep_id, pipeline["id"], pipeline["name"], version, steps, config)


@router.post("/pipelines/deploy")
async def deploy(request: Request, body: DeployPipeline) -> dict:
    rt = get_rt(request)
    pipeline = pipeline_by(rt, body.pipeline_id, body.deploy_id, body.workspace_id)
    if body.pipeline_version_pk_id is not None:
        version = rt.db.one(
            "SELECT * FROM pipeline_versions WHERE id = ? AND pipeline_id = ?", (body.pipeline_version_pk_id, pipeline["id"])
        )
        if version is None:
            raise not_found(f"pipeline_version_pk_id: pipeline {pipeline['name']!r} has no version with id {body.pipeline_version_pk_id}")
    else:
        version = rt.db.one("SELECT * FROM pipeline_versions WHERE id = ?", (pipeline["current_version_id"],))
    try:
        config = DeploymentConfig.model_validate(body.engine_config or {})
    except ValidationError as exc:
        raise bad_request(describe_validation_error(exc, "engine_config")) from None
    names = {s["name"] for s in _steps_of(json.loads(version["definition"]))}
    unknown = sorted(set(config.sidekicks) - names)
    if unknown:
        raise bad_request(
            f"engine_config.sidekicks: {', '.join(map(repr, unknown))} is not a model of pipeline "
            f"{pipeline['name']!r} (its models: {', '.join(sorted(names))})"
        )
    steps = step_rows(rt, json.loads(version["definition"]), pipeline["workspace_id"])  # validates before storing
    now = time.time()
    with rt.db.tx() as c:
        existing = c.execute("SELECT id FROM deployments WHERE pipeline_id = ?", (pipeline["id"],)).fetchone()
        # full config, env sealed (runtime/secrets.py): needed to redeploy after a restart
        stored = dumps(rt.secrets.seal_config(config.model_dump(mode="json")))
        if existing is None:
            dep_id = c.execute(
                "INSERT INTO deployments (pipeline_id, deploy_name, pipeline_version_id, engine_config, desired, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'deployed', ?, ?)",
                (pipeline["id"], pipeline["name"], version["id"], stored, now, now),
            ).lastrowid
        else:
            dep_id = existing["id"]
            c.execute(
                "UPDATE deployments SET pipeline_version_id = ?, engine_config = ?, desired = 'deployed', updated_at = ? WHERE id = ?",
                (version["id"], stored, now, dep_id),
            )
    mark_applied(rt, dep_id, now)  # before any await: replica convergence must not apply it again
    log.info("deploying %s-%d version %s config %s", pipeline["name"], dep_id, version["version"], json.dumps(config.redacted()))
    await rt.engine.deploy(dep_id, pipeline["id"], pipeline["name"], version, steps, config)
    return {"id": dep_id}


async def restore_deployments(rt: Runtime) -> None:
    """At startup: bring every deployment back to its last desired state."""
    for row in rt.db.all("SELECT * FROM deployments"):
        await apply_row(rt, row)


class Undeploy(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: int | None = None
    name: str | None = None
    deployment_id: int | None = None
    workspace_id: int | None = None


async def undeploy_pipeline(rt: Runtime, pipeline: dict[str, Any], deployment_id: int | None = None) -> bool:
    dep = rt.db.one("SELECT * FROM deployments WHERE pipeline_id = ?", (pipeline["id"],))
    if dep is None:
        return False
    if deployment_id is not None and dep["id"] != deployment_id:
        raise not_found(f"deployment_id: pipeline {pipeline['name']!r} has deployment {dep['id']}, not {deployment_id}")
    with rt.db.tx() as c:
        now = time.time()
        c.execute("UPDATE deployments SET desired = 'undeployed', updated_at = ? WHERE id = ?", (now, dep["id"]))
    mark_applied(rt, dep["id"], now)
    await rt.engine.undeploy(pipeline["name"])
    return True


@router.post("/pipelines/undeploy")
async def undeploy(request: Request, body: Undeploy) -> dict:
    rt = get_rt(request)
    pipeline = pipeline_by(rt, body.pipeline_id, body.name, body.workspace_id)
    await undeploy_pipeline(rt, pipeline, body.deployment_id)
    return {"pipeline_id": pipeline["id"], "deployment_id": body.deployment_id, "status": "undeployed"}


def pipeline_json(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    version = rt.db.one("SELECT * FROM pipeline_versions WHERE id = ?", (p["current_version_id"],))
    dep = rt.db.one("SELECT * FROM deployments WHERE pipeline_id = ?", (p["id"],))
    steps = []
    if version is not None:
        for ref in _steps_of(json.loads(version["definition"])):
            row = version_row(rt, "m.name = ? AND mv.version = ?", (ref["name"], ref["version"]))
            steps.append({**ref, "model_version_id": row["id"] if row else None})
    deployed = dep is not None and dep["desired"] == "deployed"
    state = rt.engine.get(p["name"])
    status, reason = "undeployed", None
    if deployed:
        status = {"starting": "Starting", "running": "Running", "failed": "Error"}.get(state.state, "Starting") if state else "Starting"
        reason = state.reason if state else None
    deployed_version = None
    if dep is not None:
        dv = rt.db.one("SELECT version FROM pipeline_versions WHERE id = ?", (dep["pipeline_version_id"],))
        deployed_version = dv["version"] if dv else None
    return {
        "id": p["id"],
        "pipeline_id": p["id"],
        "name": p["name"],
        "workspace_id": p["workspace_id"],
        "created_at": iso(p["created_at"]),
        "pipeline_version_pk_id": version["id"] if version else None,
        "version": version["version"] if version else None,
        "definition": json.loads(version["definition"]) if version else None,
        "steps": steps,
        "deployment_id": dep["id"] if dep else None,
        "deployed": deployed,
        "deployed_version": deployed_version if deployed else None,
        "status": status,
        "reason": reason,
        "engine_config": DeploymentConfig.model_validate(json.loads(dep["engine_config"])).redacted() if dep else None,
        "inference_path": f"/v1/api/pipelines/infer/{p['name']}-{dep['id']}/{p['name']}" if deployed else None,
    }


class GetPipeline(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: int | str | None = None
    name: str | None = None
    workspace_id: int | None = None


@router.post("/pipelines/get")
def get_pipeline(request: Request, body: GetPipeline) -> dict:
    rt = get_rt(request)
    pid, name = body.pipeline_id, body.name
    if isinstance(pid, str):
        pid, name = (int(pid), name) if pid.isdigit() else (None, pid)
    p = pipeline_by(rt, pid, name, body.workspace_id)
    out = pipeline_json(rt, p)
    out["versions"] = [
        {"id": v["id"], "version": v["version"], "created_at": iso(v["created_at"])}
        for v in rt.db.all("SELECT * FROM pipeline_versions WHERE pipeline_id = ? ORDER BY id", (p["id"],))
    ]
    return out


class ListPipelines(BaseModel):
    model_config = ConfigDict(extra="allow")
    workspace_id: int | None = None


@router.post("/pipelines/list")
def list_pipelines(request: Request, body: ListPipelines | None = None) -> dict:
    rt = get_rt(request)
    body = body or ListPipelines()
    where, params = ("1=1", ()) if body.workspace_id is None else ("workspace_id = ?", (body.workspace_id,))
    return {"pipelines": [pipeline_json(rt, p) for p in rt.db.all(f"SELECT * FROM pipelines WHERE {where} ORDER BY id", params)]}


class DeletePipeline(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: int


@router.post("/pipelines/delete")
async def delete_pipeline(request: Request, body: DeletePipeline) -> dict:
    rt = get_rt(request)
    p = pipeline_by(rt, body.pipeline_id)
    await undeploy_pipeline(rt, p)
    with rt.db.tx() as c:
        c.execute("DELETE FROM deployments WHERE pipeline_id = ?", (p["id"],))
        c.execute("DELETE FROM pipeline_versions WHERE pipeline_id = ?", (p["id"],))
        c.execute("DELETE FROM pipelines WHERE id = ?", (p["id"],))
    return {"deleted": True, "pipeline_id": p["id"]}


class GetDeployment(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="'<pipeline>-<deployment id>' (or the pipeline name)")
    workspace_id: int | None = None


def split_deploy_name(rt: Runtime, name: str, workspace_id: int | None = None) -> tuple[dict[str, Any], int | None]:
    """'<pipeline>-<id>' (pipeline names may contain '-') or a bare pipeline name."""
    base, _, tail = name.rpartition("-")
    if base and tail.isdigit():
        row = rt.db.one("SELECT * FROM pipelines WHERE name = ? AND workspace_id = ?", (base, workspace_id or 1))
        if row is not None:
            return row, int(tail)
    row = rt.db.one("SELECT * FROM pipelines WHERE name = ? AND workspace_id = ?", (name, workspace_id or 1))
    if row is None:
        raise not_found(f"no deployment named {name!r}: expected '<pipeline>-<deployment id>' of an existing pipeline")
    return row, None


@router.post("/status/get_deployment")
def get_deployment(request: Request, body: GetDeployment) -> dict:
    rt = get_rt(request)
    pipeline, dep_id = split_deploy_name(rt, body.name, body.workspace_id)
    dep = rt.db.one("SELECT * FROM deployments WHERE pipeline_id = ?", (pipeline["id"],))
    if dep is None or (dep_id is not None and dep["id"] != dep_id):
        raise not_found(f"deployment {body.name!r} does not exist (pipeline {pipeline['name']!r} "
                        + (f"has deployment {dep['id']})" if dep else "was never deployed)"))
    state = rt.engine.get(pipeline["name"])
    if dep["desired"] == "deployed" and (state is None or rt.applied_deployments.get(dep["id"]) != dep["updated_at"]):
        # Deployed through another replica and not caught up yet (within a second), or this
        # replica is between storing the change and registering it with its engine: this route
        # runs on a worker thread, so it can look in while the event loop is in that gap.
        return {"name": f"{pipeline['name']}-{dep['id']}", "status": "Starting", "reason": None,
                "details": ["this replica is applying the latest deploy"], "engines": [], "engine_lbs": []}
    if dep["desired"] != "deployed" or state is None:
        raise not_found(f"deployment {pipeline['name']}-{dep['id']} is not deployed (undeployed); deploy it with /v1/api/pipelines/deploy")
    return rt.engine.status(state)
