"""`RandomSplit`: each row to one model, chosen by weight; a `hash_key` column makes the choice
sticky (the same value always picks the same model while the weights stay)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wallaroo_pulumi.runtime.wire.steps.model_ref import ModelRef


class ModelWeight(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelRef
    weight: float = Field(ge=0, allow_inf_nan=False)


class RandomSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: list[ModelWeight] = Field(min_length=1)
    hash_key: str | None = None

    def refs(self, where: str) -> list[tuple[str, ModelRef]]:
        if sum(w.weight for w in self.weights) <= 0:
            raise ValueError(f"{where}.RandomSplit.weights: the weights add up to 0; give at least one model a weight > 0")
        return [(f"{where}.RandomSplit.weights[{i}].model", w.model) for i, w in enumerate(self.weights)]

    def wire(self, models: list[dict]) -> dict:
        return {"RandomSplit": {"hash_key": self.hash_key,
                                "weights": [{"model": m, "weight": w.weight} for m, w in zip(models, self.weights, strict=True)]}}
