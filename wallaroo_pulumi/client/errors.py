"""One exception hierarchy for everything the client raises."""

from __future__ import annotations

from typing import Any


class WallarooError(Exception):
    """Any error from the runtime or on the way to it. `status_code` and `body`
    are set when the runtime answered."""

    def __init__(self, message: str, *, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body

    @property
    def source(self) -> str | None:
        return self.body.get("source") if isinstance(self.body, dict) else None


class AuthError(WallarooError):
    """401/403: missing, wrong or revoked token."""


class NotFoundError(WallarooError):
    """404: no such model, pipeline, deployment or version."""


class ValidationError(WallarooError):
    """400/413/422: the request was rejected; the message names the field."""


class ConflictError(WallarooError):
    """409: the operation conflicts with current state (e.g. deleting a deployed model)."""


class InferenceError(WallarooError):
    """5xx from an inference: a model step failed or its sidekick crashed (the message names the step)."""


class DeploymentError(WallarooError):
    """A deployment ended in Error (the message carries the sidekick's reason) or timed out."""


class RuntimeUnavailableError(WallarooError):
    """The runtime could not be reached at all."""

    def __init__(self, url: str, cause: BaseException | None = None) -> None:
        detail = f" ({type(cause).__name__}: {cause})" if cause else ""
        super().__init__(
            f"cannot reach the Wallaroo runtime at {url}{detail}; start it with "
            "`wallaroo-pulumi runtime serve --data-dir DIR` (or `pulumi up` a stack with LocalRuntime) "
            "and check the `wallaroo:url` stack config / WALLAROO_URL"
        )
        self.url = url


def error_for(status_code: int, body: Any, text: str, context: str) -> WallarooError:
    """Map an HTTP error answer to the matching exception."""
    message = None
    if isinstance(body, dict):
        message = body.get("error") or body.get("detail") or body.get("message")
        if isinstance(message, list):
            message = "; ".join(str(m) for m in message)
    message = str(message or text or f"HTTP {status_code}")
    full = f"{context}: {message}" if context else message
    if status_code in (401, 403):
        cls: type[WallarooError] = AuthError
    elif status_code == 404:
        cls = NotFoundError
    elif status_code == 409:
        cls = ConflictError
    elif status_code in (400, 413, 415, 422):
        cls = ValidationError
    else:
        cls = WallarooError
    return cls(full, status_code=status_code, body=body)
