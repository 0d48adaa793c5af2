"""``InferenceBuilder``: how the runtime gets a ready inference out of a model folder.
:func:`resolve_inference` accepts both styles of Wallaroo examples (``inference`` a class or an instance).
"""

from __future__ import annotations

import abc
from typing import Any

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import InferenceBuilderError
from mac.inference.inference import Inference


class InferenceBuilder(abc.ABC):
    """Abstract base of a BYOP model's builder."""

    @property
    @abc.abstractmethod
    def inference(self) -> Inference | type[Inference]:
        """The inference this builder makes: an ``Inference`` subclass or an instance of one."""

    @abc.abstractmethod
    def create(self, config: CustomInferenceConfig) -> Inference:
        """Build the inference, load the model from ``config.model_path``, assign ``inference.model``."""


def resolve_inference(builder: InferenceBuilder, config: CustomInferenceConfig) -> Inference:
    """Call ``builder.create(config)`` and return the inference it made (ours, not Wallaroo's API).

    ``create`` normally returns an instance. When it returns the class or
    nothing, fall back to what it made of ``inference``, so builders written
    against either Wallaroo example style load. Kept out of the class so it can
    never clash with a method a user's builder defines.
    """
    made: Any = builder.create(config)
    if made is None:
        made = builder.inference
    if isinstance(made, type) and issubclass(made, Inference):
        made = made()
    if not isinstance(made, Inference):
        raise InferenceBuilderError(
            f"{type(builder).__name__}.create() returned {type(made).__name__}; "
            "expected an instance of a mac.inference.Inference subclass"
        )
    return made


__all__ = ["InferenceBuilder", "resolve_inference"]
