"""BYOP model: forwards each prompt to a Google Vertex AI online-prediction endpoint.

Configured only by the pipeline's sidekick env for this model:
APPLICATION_CREDENTIALS (the service-account key JSON), VERTEX_ENDPOINT_URL,
optional VERTEX_INSTANCE_PARAMS, MAX_TOKENS, TEMPERATURE, MAX_CONCURRENCY, REQUEST_TIMEOUT_S, MAX_RETRIES (see README.md). The logic lives
in ``wallaroo_pulumi.adapters.vertex``, installed in the runtime.

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
from wallaroo_pulumi.adapters.vertex import VertexAIAdapter


class VertexLLMInference(Inference):
    @property
    def expected_model_types(self) -> set[Any]:
        return {VertexAIAdapter}

    @Inference.model.setter
    def model(self, model: VertexAIAdapter) -> None:
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _predict(self, input_data: InferenceData) -> InferenceData:
        try:
            return self.model.predict(input_data)
        except InputValidationError as exc:
            raise InferenceDataValidationError(str(exc)) from None


class VertexLLMInferenceBuilder(InferenceBuilder):
    @property
    def inference(self) -> VertexLLMInference:
        return VertexLLMInference()

    def create(self, config: CustomInferenceConfig) -> VertexLLMInference:
        inference = self.inference
        # Raises AdapterConfigError naming any missing variable, so the deploy fails with it.
        inference.model = VertexAIAdapter.from_env()
        return inference
