"""Exceptions BYOP code raises or catches, under Wallaroo's names, all derived from :class:`MacError`."""

from __future__ import annotations


class MacError(Exception):
    """Base class of every ``mac`` exception (ours, not Wallaroo's: a convenience)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InferenceDataValidationError(MacError):
    """The batch given to, or returned from, an inference is not valid InferenceData."""


class ModelNotAssignedError(MacError):
    """``predict`` was called before the builder assigned ``inference.model``."""


class ModelNotAvailableError(MacError):
    """A model artifact the builder needs is missing from the model folder."""


class ModelTypeError(MacError, TypeError):
    """``inference.model`` was set to an object outside ``expected_model_types``.

    Also a ``TypeError``, which is what code written against other versions catches.
    """


class InferenceBuilderError(MacError):
    """A builder did not produce a usable inference (e.g. ``create`` returned None)."""


class InferencePreprocessingError(MacError):
    """A preprocessing step failed on the batch."""


class InferencePostprocessingError(MacError):
    """A postprocessing step failed on the inference output."""


class ArrowRecordBatchConversionError(MacError):
    """Converting between Arrow record batches and InferenceData failed."""


class PythonStepError(MacError):
    """A Python step raised while serving a request."""


__all__ = [
    "ArrowRecordBatchConversionError",
    "InferenceBuilderError",
    "InferenceDataValidationError",
    "InferencePostprocessingError",
    "InferencePreprocessingError",
    "MacError",
    "ModelNotAssignedError",
    "ModelNotAvailableError",
    "ModelTypeError",
    "PythonStepError",
]
