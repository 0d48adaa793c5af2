"""Guardrail policy routes (ours, D45): set and get a pipeline's policies. A change applies to the
next call of its deployment: no new pipeline version, no redeploy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from wallaroo_pulumi.runtime.routes import runtime_of

router = APIRouter(prefix="/v1/api", tags=["guardrails"])


class PipelineNamed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline_id: str = Field(description="the pipeline's name")
    workspace_id: int = 1


class SetGuardrails(PipelineNamed):
    guardrails: dict[str, Any] | None = Field(
        description="{policies: [...], fields?, streaming?, check_every?} (see the README's Guardrails); null: none")


@router.post("/pipelines/set_guardrails")
def set_guardrails(request: Request, body: SetGuardrails) -> dict:
    return runtime_of(request).guardrails.set(body.pipeline_id, body.workspace_id, body.guardrails)


@router.post("/pipelines/get_guardrails")
def get_guardrails(request: Request, body: PipelineNamed) -> dict:
    return runtime_of(request).guardrails.get(body.pipeline_id, body.workspace_id)
