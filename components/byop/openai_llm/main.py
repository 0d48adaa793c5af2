"""BYOP model: forwards each prompt to OpenAI (or any OpenAI-compatible server).

Configured only by the pipeline's sidekick env for this model: OPENAI_API_KEY,
OPENAI_MODEL, optional OPENAI_BASE_URL, SYSTEM_PROMPT, MAX_TOKENS, TEMPERATURE,
MAX_CONCURRENCY, REQUEST_TIMEOUT_S, MAX_RETRIES (see README.md). The logic lives
in ``wallaroo_pulumi.adapters.openai_chat``, installed in the runtime.

Input ``text`` (string); output ``generated_text``, ``prompt_tokens``,
``completion_tokens``, ``error`` (see ``wallaroo_pulumi.adapters.schemas``).
"""

from typing import Any

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import InferenceDataValidationError
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData
from wallaroo_pulumi.adapters.http import InputValidationError
from wallaroo_pulumi.adapters.openai_chat import OpenAIChatAdapter


class OpenAIChatInference(Inference):
    @property
    def expected_model_types(self) -> set[Any]:
        return {OpenAIChatAdapter}

    @Inference.model.setter
    def model(self, model: OpenAIChatAdapter) -> None:
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _predict(self, input_data: InferenceData) -> InferenceData:
        try:
            return self.model.predict(input_data)
        except InputValidationError as exc:
            raise InferenceDataValidationError(str(exc)) from None


class OpenAIChatInferenceBuilder(InferenceBuilder):
    @property
    def inference(self) -> OpenAIChatInference:
        return OpenAIChatInference()

    def create(self, config: CustomInferenceConfig) -> OpenAIChatInference:
        inference = self.inference
        # Raises AdapterConfigError naming any missing variable, so the deploy fails with it.
        inference.model = OpenAIChatAdapter.from_env()
        return inference
