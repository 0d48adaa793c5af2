"""`GET /v1/api/config`: the platform settings the Wallaroo SDK reads when a `Client` starts
(no auth, as Wallaroo's)."""

from __future__ import annotations

import platform

from fastapi import APIRouter

router = APIRouter(tags=["platform"])


@router.get("/v1/api/config", summary="Platform settings for SDK clients (no auth)")
def config() -> dict:
    arch = "arm" if platform.machine().lower() in ("arm64", "aarch64") else "x86"
    return {"default_arch": arch}
