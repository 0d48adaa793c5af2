"""Typed answers of the runtime (pydantic). Unknown fields are kept (extra="allow")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from wallaroo_pulumi.schemas import schema_from_b64


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ModelRef(_Model):
    """One model version in a pipeline step."""

    name: str
    version: str | None = None
    sha: str | None = None
    model_version_id: int | None = None

    def __init__(self, name: str | None = None, version: str | None = None, sha: str | None = None, **kw: Any):
        if name is not None:
            kw["name"] = name
        super().__init__(version=version, sha=sha, **kw)


class Workspace(_Model):
    id: int
    name: str
    created_at: datetime | None = None


class ModelVersion(_Model):
    id: int
    model_id: int
    name: str
    version: str
    sha: str
    file_name: str
    file_size: int
    created_at: datetime
    input_schema: str
    output_schema: str
    conversion: dict[str, Any] = Field(default_factory=dict)
    status: str
    workspace_id: int = 1
    visibility: str = "private"

    @property
    def input_arrow_schema(self) -> pa.Schema:
        return schema_from_b64(self.input_schema, "input_schema")

    @property
    def output_arrow_schema(self) -> pa.Schema:
        return schema_from_b64(self.output_schema, "output_schema")

    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version, self.sha, model_version_id=self.id)


class Model(_Model):
    id: int
    name: str
    workspace_id: int
    visibility: str = "private"
    created_at: datetime
    versions: int = 0
    latest_version: ModelVersion | None = None


class CreatedPipeline(_Model):
    pipeline_id: int = Field(validation_alias=AliasChoices("pipeline_id", "pipeline_pk_id"))
    pipeline_version_pk_id: int = Field(validation_alias=AliasChoices("pipeline_version_pk_id", "pipeline_variant_pk_id"))
    version: str = Field(validation_alias=AliasChoices("version", "pipeline_variant_version"))


class Pipeline(_Model):
    pipeline_id: int = Field(validation_alias=AliasChoices("pipeline_id", "id"))
    name: str
    workspace_id: int = 1
    pipeline_version_pk_id: int | None = None
    version: str | None = None
    steps: list[dict[str, Any]] = Field(default_factory=list)
    deployment_id: int | None = None
    deployed: bool = False
    status: str = "undeployed"
    reason: str | None = None
    engine_config: dict[str, Any] | None = None
    inference_path: str | None = None
    created_at: datetime | None = None


class SidekickStatus(_Model):
    name: str
    step: str | None = None
    status: str
    pid: int | None = None
    restarts: int = 0
    reason: str | None = None
    limits: dict[str, Any] = Field(default_factory=dict)
    """Ours: what holds its limits here (``enforced``, ``not_enforced``) and the kernel's counts
    (``cpu_throttled_periods``, ``oom_kills``, ``processes``, ...)."""


class DeploymentStatus(_Model):
    name: str
    status: str
    """Running | Starting | Error"""
    details: list[Any] = Field(default_factory=list)
    reason: str | None = None
    engines: list[dict[str, Any]] = Field(default_factory=list)
    engine_lbs: list[dict[str, Any]] = Field(default_factory=list)
    sidekicks: list[SidekickStatus] = Field(default_factory=list)


class Orchestration(_Model):
    """An uploaded orchestration: its status goes pending_packaging -> packaging -> ready | error."""

    id: str
    name: str | None = None
    file_name: str = ""
    sha: str = ""
    status: str
    error: str | None = None
    """Why packaging failed (status error): the requirement and pip's reason."""
    workspace_id: int = 1
    file_size: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Task(_Model):
    """A Wallaroo task: an orchestration (the built-in `llm-listener` or an uploaded one) run once,
    on a schedule, or continuously."""

    id: str
    name: str
    orch_id: str | None = None
    workspace_id: int = 1
    type: str
    status: str
    """Wallaroo's task status: pending | started | pending_kill | killed"""
    killed: bool = False
    schedule: str | None = None
    timeout: float | None = None
    json_args: dict[str, Any] = Field(default_factory=dict, validation_alias="input_data")
    monitored_pipeline: str | None = None
    listener_model: dict[str, Any] | None = None
    score_pipeline: str | None = None
    next_run: datetime | None = None
    last_tick: datetime | None = None
    last_run_status: str | None = None
    """The newest run's status: running | success | failure | timed_out | killed"""
    last_runs: list[TaskRun] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class TaskRun(_Model):
    """One run of a task: its state, window and row counts."""

    id: str = Field(validation_alias="run_id")
    task_id: str = Field(validation_alias="task")
    status: str
    """Wallaroo's run status: running | success | failure | timed_out | killed"""
    tick: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    rows_read: int = 0
    rows_scored: int = 0
    rows_skipped: int = 0
    error: str | None = None
