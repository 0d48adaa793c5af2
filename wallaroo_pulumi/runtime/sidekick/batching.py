"""`DynamicBatching`: Wallaroo's `dynamic_batching_config` of a model version (set through
`models/insert_model_config`, the SDK's `configure(dynamic_batching_config=...)`), which drives a
step's request merging (:mod:`.merging`, D46). Sizes count rows: a request of one row is one."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from wallaroo_pulumi.runtime.core.errors import BadRequest


class DynamicBatching(BaseModel):
    """Merge waiting requests into batches of `batch_size_target` rows, holding the oldest at most
    `max_batch_delay_ms` for the batch to fill, never past `batch_size_limit` rows (the SDK's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_batch_delay_ms: PositiveInt = Field(default=10, description="the longest a request waits for its batch to fill")
    batch_size_target: PositiveInt = Field(default=4, description="a batch this big is sent without waiting longer")
    batch_size_limit: PositiveInt | None = Field(default=None, description="the most rows one batch may hold")

    @model_validator(mode="after")
    def _limit_holds_target(self) -> DynamicBatching:
        if self.batch_size_limit is not None and self.batch_size_limit < self.batch_size_target:
            raise ValueError(f"batch_size_limit ({self.batch_size_limit}) is below batch_size_target "
                             f"({self.batch_size_target}); raise the limit or lower the target")
        return self


def check_dynamic_batching(config: dict[str, Any], where: str = "dynamic_batching_config") -> DynamicBatching:
    """The config as the API got it; BadRequest naming the field and what was expected."""
    try:
        return DynamicBatching.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise BadRequest(f"{where}{'.' + param if param else ''}: {message}") from None
