"""`ModelInference`: one model on every row (several models, followed by `AuditResults` and
`MultiOut`, are a shadow deploy: see :mod:`.shadow`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wallaroo_pulumi.runtime.wire.steps.model_ref import ModelRef


class ModelInference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[ModelRef] = Field(min_length=1)

    def refs(self, where: str) -> list[tuple[str, ModelRef]]:
        return [(f"{where}.ModelInference.models[{i}]", m) for i, m in enumerate(self.models)]

    def wire(self, models: list[dict]) -> dict:
        return {"ModelInference": {"models": models}}
