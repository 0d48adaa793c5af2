"""`SidekickSpec`: everything needed to run one model step's worker."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wallaroo_pulumi.deployment import check_env_names, parse_memory_quantity
from wallaroo_pulumi.runtime.sidekick.batching import DynamicBatching


class SidekickSpec(BaseModel):
    """Everything needed to run one model step's worker."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    step_name: str = Field(min_length=1, description="model/step name, used in messages and the logger name")
    model_version: str
    model_dir: Path = Field(description="the unpacked BYOP folder")
    env: dict[str, str] = Field(default_factory=dict, repr=False,
                                description="this model's sidekick env only (may hold credentials)")
    cpus: float = Field(default=1.0, gt=0)
    memory: str | None = Field(
        default=None, description="Kubernetes quantity, e.g. '512Mi': the resident memory past which the worker is killed")
    gpus: int = Field(default=0, ge=0)
    scratch_size: str | None = Field(
        default=None, description="Kubernetes quantity: the most its scratch folder (HOME, TMPDIR) may hold")
    max_processes: int | None = Field(default=None, ge=1, description="processes and threads it may run at once")
    gpu_ids: list[int] | None = Field(default=None, description="device ids to expose, when the caller allocates them")
    extra_pythonpath: list[Path] = Field(default_factory=list, description="the model's installed requirements")
    load_timeout_s: float = Field(default=120.0, gt=0)
    max_batch_rows: int = Field(default=64, ge=1, description="rows merged into one batch while the worker is busy")
    concurrency: int | None = Field(
        default=None, ge=1, description="batches answered at once (None: the model's own predict_concurrency)")
    batching: DynamicBatching | None = Field(
        default=None, description="the model version's dynamic_batching_config: batches wait to fill (D46)")

    @field_validator("memory", "scratch_size")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory_quantity(value)  # raises ValueError naming what is expected
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env_names(env)

    @model_validator(mode="after")
    def _gpu_ids(self) -> SidekickSpec:
        if self.gpu_ids is not None and len(self.gpu_ids) != self.gpus:
            raise ValueError(f"gpu_ids lists {len(self.gpu_ids)} device(s) but gpus is {self.gpus}; they must match")
        return self

    @property
    def memory_bytes(self) -> int | None:
        return parse_memory_quantity(self.memory) if self.memory is not None else None

    @property
    def scratch_bytes(self) -> int | None:
        return parse_memory_quantity(self.scratch_size) if self.scratch_size is not None else None
