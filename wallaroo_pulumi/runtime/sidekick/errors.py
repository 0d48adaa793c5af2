"""The failures a sidekick hands its callers; each names the model step (``step_name``)."""

from __future__ import annotations

from wallaroo_pulumi.runtime.core.errors import WallarooError


class SidekickError(WallarooError):
    """Base of sidekick failures."""

    status = 502
    source = "sidekick"

    def __init__(self, message: str, *, step_name: str) -> None:
        super().__init__(message)
        self.step_name = step_name


class SidekickLoadError(SidekickError):
    """The model failed to load (its message quotes the Python error), or timed out loading."""

    status = 503


class SidekickCrashedError(SidekickError):
    """The worker process died while handling a request; it is being restarted."""


class SidekickPredictError(SidekickError):
    """The model's ``_predict`` (or the conversion of its answer) raised; the worker is fine."""

    status = 500
    source = "model"

    def __init__(self, message: str, *, step_name: str, error_type: str | None = None) -> None:
        super().__init__(message, step_name=step_name)
        self.error_type = error_type


def stopped_error(step_name: str) -> SidekickError:
    """What a request waiting for, or in flight on, a sidekick that is stopped gets."""
    return SidekickError(f"sidekick of step {step_name!r} was stopped during a request", step_name=step_name)
