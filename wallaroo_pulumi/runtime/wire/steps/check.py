"""`Check`: the validations the SDK's `add_validations` writes (polars expressions as JSON, D44).
Evaluated on the pipeline's answer, so it comes after every model step."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tree: list[str] = Field(min_length=1, description="polars expressions as the SDK's add_validations writes them")

    def wire(self) -> dict:
        return {"Check": {"tree": self.tree}}
