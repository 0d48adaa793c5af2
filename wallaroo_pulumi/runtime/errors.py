"""One error shape for every endpoint: {"code", "status": "error", "error", "source"}."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError


class APIError(Exception):
    def __init__(
        self, code: int, error: str, source: str = "runtime", headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(error)
        self.headers = headers or {}
        self.code = code
        self.error = error
        self.source = source
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "status": "error", "error": self.error, "source": self.source, **self.extra}


def bad_request(error: str, source: str = "request") -> APIError:
    return APIError(400, error, source)


def not_found(error: str, source: str = "runtime") -> APIError:
    return APIError(404, error, source)


def conflict(error: str, source: str = "runtime") -> APIError:
    return APIError(409, error, source)


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
