"""A model named in a definition step: `{name, version, sha}` as the SDK's `ModelForStep` writes it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ModelRef(BaseModel):
    """Name, and the version and sha once resolved (the SDK always sends all three)."""

    model_config = ConfigDict(extra="allow")
    name: str
    version: str | None = None
    sha: str | None = None
    model_version_id: int | None = None
