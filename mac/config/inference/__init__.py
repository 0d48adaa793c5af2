"""``CustomInferenceConfig``: what ``InferenceBuilder.create`` receives (``config.model_path`` is the
unpacked model folder, a ``pathlib.Path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mac.types import SupportedFrameworks


class InferenceConfig(BaseModel):
    """Fields shared by every framework's config."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="allow", protected_namespaces=())

    framework: SupportedFrameworks = SupportedFrameworks.CUSTOM
    model_path: Path
    modelconfig: dict[str, Any] | None = Field(
        default=None, description="Free-form settings a model may be given alongside its files."
    )

    @field_validator("framework", mode="before")
    @classmethod
    def _framework(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() != SupportedFrameworks.CUSTOM.value:
            raise ValueError(f"framework must be 'custom' for BYOP models; got {value!r}")
        return value.lower() if isinstance(value, str) else value


class CustomInferenceConfig(InferenceConfig):
    """Config of a BYOP (framework ``custom``) model.

    ``model_path`` must be a directory: the model's Python files and artifacts
    are read relative to it. ``modules_to_include`` lists the Python files the
    runtime imported from it (filled in when not given).
    """

    matching_files: set[Path] | None = None
    modules_to_include: set[Path] = Field(default_factory=set)

    @model_validator(mode="after")
    def _folder(self) -> CustomInferenceConfig:
        if not self.model_path.is_dir():
            raise ValueError(f"model_path {str(self.model_path)!r} is not a directory; expected the unpacked model folder")
        if not self.modules_to_include:
            self.modules_to_include = {p for p in self.model_path.glob("*.py") if p.is_file()}
        return self


__all__ = ["CustomInferenceConfig", "InferenceConfig"]
