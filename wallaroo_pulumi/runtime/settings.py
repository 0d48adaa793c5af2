"""Runtime settings: one data directory plus limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

GiB = 2**30
MiB = 2**20


class RuntimeSettings(BaseModel):
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    max_upload_bytes: int = Field(default=10 * GiB, gt=0, description="largest model artifact accepted")
    max_request_bytes: int = Field(
        default=256 * MiB, gt=0, description="largest inference / JSON request body accepted"
    )
    redeploy_on_start: bool = True
    listeners: bool = Field(default=True, description="serve listener tasks (/v1/api/task/*) and their scheduler")
    log_level: str = "info"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
