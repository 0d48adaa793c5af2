"""Pipeline routes: create (a new version when steps change), get, list, delete, deploy,
undeploy, deployment status."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wallaroo_pulumi.runtime.routes import runtime_of

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


@router.post("/pipelines/create")
def create_pipeline(request: Request, body: CreatePipeline) -> dict:
    refs = [step.ModelInference.models[0].model_dump() for step in body.definition.steps]
    return runtime_of(request).pipelines.create(body.pipeline_id, body.workspace_id, refs)


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


@router.post("/pipelines/deploy")
async def deploy(request: Request, body: DeployPipeline) -> dict:
    rt = runtime_of(request)
    pipeline = rt.pipelines.find(body.pipeline_id, body.deploy_id, body.workspace_id)
    return {"id": await rt.deployments.deploy(pipeline, body.pipeline_version_pk_id, body.engine_config)}


class Undeploy(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: int | None = None
    name: str | None = None
    deployment_id: int | None = None
    workspace_id: int | None = None


@router.post("/pipelines/undeploy")
async def undeploy(request: Request, body: Undeploy) -> dict:
    rt = runtime_of(request)
    pipeline = rt.pipelines.find(body.pipeline_id, body.name, body.workspace_id)
    await rt.deployments.undeploy(pipeline, body.deployment_id)
    return {"pipeline_id": pipeline["id"], "deployment_id": body.deployment_id, "status": "undeployed"}


class GetPipeline(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: int | str | None = None
    name: str | None = None
    workspace_id: int | None = None


@router.post("/pipelines/get")
def get_pipeline(request: Request, body: GetPipeline) -> dict:
    rt = runtime_of(request)
    pid, name = body.pipeline_id, body.name
    if isinstance(pid, str):
        pid, name = (int(pid), name) if pid.isdigit() else (None, pid)
    return rt.deployments.describe_with_versions(rt.pipelines.find(pid, name, body.workspace_id))


class ListPipelines(BaseModel):
    model_config = ConfigDict(extra="allow")
    workspace_id: int | None = None


@router.post("/pipelines/list")
def list_pipelines(request: Request, body: ListPipelines | None = None) -> dict:
    return {"pipelines": runtime_of(request).deployments.list((body or ListPipelines()).workspace_id)}


class DeletePipeline(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: int


@router.post("/pipelines/delete")
async def delete_pipeline(request: Request, body: DeletePipeline) -> dict:
    rt = runtime_of(request)
    pipeline = rt.pipelines.find(body.pipeline_id)
    await rt.deployments.delete_pipeline(pipeline)
    return {"deleted": True, "pipeline_id": pipeline["id"]}


class GetDeployment(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="'<pipeline>-<deployment id>' (or the pipeline name)")
    workspace_id: int | None = None


@router.post("/status/get_deployment")
def get_deployment(request: Request, body: GetDeployment) -> dict:
    return runtime_of(request).deployments.status(body.name, body.workspace_id)
