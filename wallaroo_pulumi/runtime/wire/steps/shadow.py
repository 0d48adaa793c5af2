"""A shadow deploy, as the SDK writes it: `ModelInference` of the champion and its challengers,
then `AuditResults {from: 1}` and `MultiOut {}`. Every row goes to all of them; the champion
answers, the challengers' answers are only logged."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AuditResults(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: int = Field(default=0, alias="from")
    to: int | None = None

    def wire(self) -> dict:
        return {"AuditResults": {"from": self.from_, "to": self.to}}


class MultiOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def wire(self) -> dict:
        return {"MultiOut": {}}
