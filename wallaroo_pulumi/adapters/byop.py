"""Shared ``mac`` bases of the LLM BYOP folders in ``components/byop/*_llm/``.

A folder's ``main.py`` subclasses both in a few lines: the inference names its adapter types and
the factory that builds one from the sidekick env; the builder names the inference class. Import the
module, not the classes, so the folder's only builder is its own.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, ClassVar

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import InferenceDataValidationError
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData
from wallaroo_pulumi.adapters.http import HttpLLMAdapter, InputValidationError

__all__ = ["LLMInference", "LLMInferenceBuilder"]


class LLMInference(Inference):
    """Forwards each row's ``text`` to the upstream through its adapter (``LLM_OUTPUT_SCHEMA`` out)."""

    adapter_types: ClassVar[tuple[type[HttpLLMAdapter], ...]] = ()  # the adapter classes `model` may be
    adapter_from_env: Callable[[], HttpLLMAdapter]  # staticmethod: build the adapter from os.environ

    @property
    def expected_model_types(self) -> set[Any]:
        return set(self.adapter_types)

    @property
    def predict_concurrency(self) -> int:
        """Batches the sidekick worker may answer at once (D61): the adapter's HTTP transport and its
        row pool are thread-safe, and its ``MAX_CONCURRENCY`` bounds the upstream calls of them all."""
        return int(self.model.settings.max_concurrency)

    @Inference.model.setter  # type: ignore[attr-defined]
    def model(self, model: Any) -> None:
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _predict(self, input_data: InferenceData) -> InferenceData:
        try:
            return self.model.predict(input_data)
        except InputValidationError as exc:
            raise InferenceDataValidationError(str(exc)) from None

    def predict_stream(self, input_data: InferenceData) -> Generator[InferenceData, None, InferenceData]:
        """The sidekick's streamed answer (its STREAM frame): ``{row, delta, finish_reason}`` chunks
        as the upstream sends them, then the whole answer."""
        try:
            return (yield from self.model.predict_stream(input_data))
        except InputValidationError as exc:
            raise InferenceDataValidationError(str(exc)) from None


class LLMInferenceBuilder(InferenceBuilder):
    """Builds ``inference_class`` with its adapter configured from the sidekick env."""

    inference_class: ClassVar[type[LLMInference]]

    @property
    def inference(self) -> LLMInference:
        cls = getattr(type(self), "inference_class", None)
        if not (isinstance(cls, type) and issubclass(cls, LLMInference)):
            raise TypeError(f"{type(self).__name__}.inference_class: expected an LLMInference subclass, got {cls!r}")
        return cls()

    def create(self, config: CustomInferenceConfig) -> LLMInference:
        inference = self.inference
        if not callable(getattr(inference, "adapter_from_env", None)):
            raise TypeError(f"{type(inference).__name__}.adapter_from_env: expected the adapter's factory, "
                            "e.g. staticmethod(OpenAIChatAdapter.from_env)")
        # Raises AdapterConfigError naming any missing variable, so the deploy fails with it.
        inference.model = inference.adapter_from_env()
        return inference
