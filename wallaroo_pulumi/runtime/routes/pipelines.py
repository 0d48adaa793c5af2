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


class Definition(BaseModel):
    model_config = ConfigDict(extra="allow")
    steps: list[dict[str, Any]] = Field(default_factory=list, description="Wallaroo's steps; checked by the pipelines service")


class CreatePipeline(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: str = Field(description="the pipeline name")
    workspace_id: int = 1
    definition: Definition = Field(default_factory=Definition)

    @field_validator("pipeline_id")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PIPELINE_NAME.match(v):
            raise ValueError(NAME_HELP)
        return v


@router.post("/pipelines/create")
def create_pipeline(request: Request, body: CreatePipeline) -> dict:
    return runtime_of(request).pipelines.create(body.pipeline_id, body.workspace_id, body.definition.steps)


class DeployPipeline(BaseModel):
    model_config = ConfigDict(extra="allow")
    deploy_id: str = Field(description="the deployment's name: the pipeline's name")
    pipeline_version_pk_id: int | None = None
    pipeline_id: int | None = Field(default=None, description="the pipeline's pk id")
    pipeline_version: str | None = Field(default=None, description="the pipeline version's uuid")
    engine_config: dict[str, Any] | None = Field(default=None, description="what the SDK's DeploymentConfigBuilder builds")
    models: list[dict[str, Any]] | None = Field(default=None, description="ignored: the pipeline version names its models")
    model_configs: list[int] | None = None
    model_ids: list[int] | None = None


@router.post("/pipelines/deploy")
async def deploy(request: Request, body: DeployPipeline) -> dict:
    rt = runtime_of(request)
    workspace_id = (body.engine_config or {}).get("workspace_id")
    pipeline, version_id = rt.pipelines.for_deploy(body.deploy_id, body.pipeline_id, body.pipeline_version_pk_id,
                                                   body.pipeline_version, workspace_id)
    return {"id": await rt.deployments.deploy(pipeline, version_id, body.engine_config)}


class Undeploy(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: int | None = None
    deployment_id: int | None = None

    @model_validator(mode="after")
    def _one(self) -> Undeploy:
        if self.pipeline_id is None and self.deployment_id is None:
            raise ValueError("give deployment_id or pipeline_id")
        return self


@router.post("/pipelines/undeploy")
async def undeploy(request: Request, body: Undeploy) -> dict:
    await runtime_of(request).deployments.undeploy_by_id(body.pipeline_id, body.deployment_id)
    return {}


class ByName(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_name: str
    workspace_id: int


@router.post("/pipelines/get_pipeline_by_name")
def get_pipeline_by_name(request: Request, body: ByName) -> dict:
    rt = runtime_of(request)
    return rt.deployments.item(rt.pipelines.find(None, body.pipeline_name, body.workspace_id))


class ListPipelines(BaseModel):
    model_config = ConfigDict(extra="allow")
    workspace_id: int | None = None
    workspace_name: str | None = None


@router.post("/pipelines/list_pipelines")
def list_pipelines(request: Request, body: ListPipelines | None = None) -> dict:
    rt, body = runtime_of(request), body or ListPipelines()
    workspace_id = body.workspace_id
    if workspace_id is None and body.workspace_name is not None:
        workspace_id = rt.registry.workspace_named(body.workspace_name)["id"]
    return {"pipelines": [rt.deployments.item(p) for p in rt.pipelines.all(workspace_id)]}


class PipelineOfWorkspace(BaseModel):
    model_config = ConfigDict(extra="allow")
    pipeline_id: str = Field(description="the pipeline's name")
    workspace_id: int


@router.post("/pipelines/list_pipeline_versions")
def list_pipeline_versions(request: Request, body: PipelineOfWorkspace) -> dict:
    rt = runtime_of(request)
    return {"pipeline_versions": rt.deployments.version_items(rt.pipelines.find(None, body.pipeline_id, body.workspace_id))}


@router.post("/pipelines/delete_pipeline")
async def delete_pipeline(request: Request, body: PipelineOfWorkspace) -> dict:
    rt = runtime_of(request)
    pipeline = rt.pipelines.find(None, body.pipeline_id, body.workspace_id)
    await rt.deployments.delete_pipeline(pipeline)
    return {"pipeline_id": pipeline["name"], "workspace_id": pipeline["workspace_id"]}


class GetDeployment(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="'<pipeline>-<deployment id>' (or the pipeline name)")
    workspace_id: int | None = None


@router.post("/status/get_deployment")
def get_deployment(request: Request, body: GetDeployment) -> dict:
    return runtime_of(request).deployments.status(body.name, body.workspace_id)
