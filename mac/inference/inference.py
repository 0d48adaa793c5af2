"""The ``Inference`` base class every BYOP model extends: ``expected_model_types``, the ``model``
setter and ``_predict``. :meth:`Inference.predict` checks both sides are ``InferenceData``, naming the field.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from mac.exceptions import InferenceDataValidationError, ModelNotAssignedError, ModelTypeError
from mac.types import InferenceData

logger = logging.getLogger(__name__)


class Inference(abc.ABC):
    """Abstract base of a BYOP model's inference object."""

    def __init__(self) -> None:
        self._model: Any = None

    # -- the model ---------------------------------------------------------------
    @property
    @abc.abstractmethod
    def expected_model_types(self) -> set[Any]:
        """The types ``model`` may be an instance of."""

    @property
    def model(self) -> Any:
        """The loaded model object (None until the builder assigns it)."""
        return getattr(self, "_model", None)

    @model.setter
    def model(self, model: Any) -> None:
        # Subclasses redeclare this with ``@Inference.model.setter``; the default does what
        # Wallaroo's examples do, so a subclass that omits the setter still works.
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _raise_error_if_model_is_wrong_type(self, model: Any) -> None:
        """Raise :class:`ModelTypeError` unless ``model`` is one of ``expected_model_types``."""
        types = tuple(self.expected_model_types or ())
        if not types or not any(isinstance(model, t) for t in types):
            names = sorted(getattr(t, "__qualname__", repr(t)) for t in types)
            raise ModelTypeError(
                f"{type(self).__name__}.model must be an instance of one of "
                f"[{', '.join(names)}]; got {type(model).__module__}.{type(model).__qualname__}"
            )

    def _raise_error_if_model_is_not_assigned(self) -> None:
        """Raise :class:`ModelNotAssignedError` while ``model`` is still None."""
        if self.model is None:
            raise ModelNotAssignedError(
                f"{type(self).__name__}.model is not assigned: the InferenceBuilder's create() "
                "must set `inference.model = ...` before the inference can predict"
            )

    # -- scoring -----------------------------------------------------------------
    @abc.abstractmethod
    def _predict(self, input_data: InferenceData) -> InferenceData:
        """Score one batch: a dict of numpy arrays in, a dict of numpy arrays out."""

    def predict(self, input_data: InferenceData) -> InferenceData:
        """Check the batch, call ``_predict``, check its answer.

        Raises :class:`InferenceDataValidationError` naming the field when either
        side is not a dict of numpy arrays keyed by strings.
        """
        self._raise_error_if_model_is_not_assigned()
        _check_inference_data(input_data, "input")
        output = self._predict(input_data)
        _check_inference_data(output, f"{type(self).__name__}._predict output")
        return output


def _check_inference_data(data: Any, what: str) -> None:
    if not isinstance(data, Mapping):
        raise InferenceDataValidationError(
            f"{what} must be a dict of numpy arrays (InferenceData); got {type(data).__name__}"
        )
    for key, value in data.items():
        if not isinstance(key, str):
            raise InferenceDataValidationError(f"{what}: keys must be strings; got {key!r} ({type(key).__name__})")
        if not isinstance(value, np.ndarray):
            raise InferenceDataValidationError(
                f"{what}: field {key!r} must be a numpy.ndarray; got {type(value).__name__}"
            )
