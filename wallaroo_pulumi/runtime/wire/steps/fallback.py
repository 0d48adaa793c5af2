"""`Fallback` (ours, beyond Wallaroo): each row to the first model, then to the next for the rows
whose answer failed in one of the `on` ways, until one answers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wallaroo_pulumi.runtime.wire.steps.model_ref import ModelRef

FallThrough = Literal["timeout", "429", "5xx", "connection", "content_filter", "step_error"]
"""What sends a row on to the next model: an upstream timeout, HTTP 429, HTTP 5xx, a connection
error, a content filter's refusal, or the whole step failing (its sidekick crashed or raised)."""
DEFAULT_ON: tuple[FallThrough, ...] = ("timeout", "429", "5xx", "connection", "step_error")


class Fallback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[ModelRef] = Field(min_length=1)
    on: list[FallThrough] = Field(default_factory=lambda: list(DEFAULT_ON))

    def refs(self, where: str) -> list[tuple[str, ModelRef]]:
        return [(f"{where}.Fallback.models[{i}]", m) for i, m in enumerate(self.models)]

    def wire(self, models: list[dict]) -> dict:
        return {"Fallback": {"models": models, "on": list(self.on)}}
