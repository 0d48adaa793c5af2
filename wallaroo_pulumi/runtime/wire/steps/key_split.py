"""`MetaValueSplit` (the SDK's key split): each row to the model its `split_key` column's value
routes to, the `control` model for every other value (or none)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wallaroo_pulumi.runtime.wire.steps.model_ref import ModelRef


class MetaValueSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split_key: str = Field(min_length=1)
    control: ModelRef
    routes: dict[str, ModelRef] = Field(default_factory=dict)

    def refs(self, where: str) -> list[tuple[str, ModelRef]]:
        return [(f"{where}.MetaValueSplit.control", self.control)] + [
            (f"{where}.MetaValueSplit.routes[{key!r}]", ref) for key, ref in self.routes.items()]

    def wire(self, models: list[dict]) -> dict:
        return {"MetaValueSplit": {"split_key": self.split_key, "control": models[0],
                                   "routes": dict(zip(self.routes, models[1:], strict=True))}}
