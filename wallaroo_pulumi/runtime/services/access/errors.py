"""The answers of access control: 401 (no valid key), 403 (the key lacks a right), 429 (over a limit)."""

from __future__ import annotations

import math

from wallaroo_pulumi.runtime.core.errors import WallarooError


class Unauthorized(WallarooError):
    """No key, an unknown key, or one expired or revoked."""

    status = 401
    source = "auth"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(WallarooError):
    """A valid key without the permission or scope the request needs; the message names it."""

    status = 403
    source = "auth"


class RateLimited(WallarooError):
    """A key over one of its limits; `Retry-After` says when the request would pass."""

    status = 429
    source = "limits"

    def __init__(self, message: str, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(f"{message}; retry after {seconds} s", headers={"Retry-After": str(seconds)},
                         retry_after=seconds)
