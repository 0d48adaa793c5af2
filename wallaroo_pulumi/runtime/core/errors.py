"""The runtime's one error hierarchy. Every failure a caller can see is a `WallarooError`;
`runtime/http_errors.py` alone turns one into an HTTP answer."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError


class WallarooError(Exception):
    """A failure with an HTTP status, the part of the system it came from, and extra body fields."""

    status: int = 500
    source: str = "runtime"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        source: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if source is not None:
            self.source = source
        self.headers = headers or {}
        self.extra = extra


class BadRequest(WallarooError):
    status = 400
    source = "request"


class NotFound(WallarooError):
    status = 404


class Conflict(WallarooError):
    status = 409


class TooLarge(WallarooError):
    status = 413
    source = "request"


class Unavailable(WallarooError):
    status = 503
    source = "engine"


def describe_validation_error(exc: PydanticValidationError, prefix: str = "") -> str:
    """`field.path: message; ...` from a pydantic error, naming every bad field."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
