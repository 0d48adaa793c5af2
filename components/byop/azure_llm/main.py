"""BYOP model: forwards each prompt to Azure — an Azure OpenAI deployment or an Azure ML
online endpoint, chosen by the sidekick env (AZURE_MODE, or whichever of
AZURE_OPENAI_ENDPOINT / AZUREML_SCORE_URL is set; see README.md). The logic lives
in ``wallaroo_pulumi.adapters.azure``, installed in the runtime.

Input ``text`` (string); output ``generated_text``, ``prompt_tokens``,
``completion_tokens``, ``error`` (see ``wallaroo_pulumi.adapters.schemas``).
"""

from typing import Any

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import InferenceDataValidationError
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder
from mac.types import InferenceData
from wallaroo_pulumi.adapters.azure import AzureMLAdapter, AzureOpenAIAdapter, azure_adapter_from_env
from wallaroo_pulumi.adapters.http import InputValidationError


class AzureLLMInference(Inference):
    @property
    def expected_model_types(self) -> set[Any]:
        return {AzureOpenAIAdapter, AzureMLAdapter}

    @Inference.model.setter
    def model(self, model: Any) -> None:
        self._raise_error_if_model_is_wrong_type(model)
        self._model = model

    def _predict(self, input_data: InferenceData) -> InferenceData:
        try:
            return self.model.predict(input_data)
        except InputValidationError as exc:
            raise InferenceDataValidationError(str(exc)) from None


class AzureLLMInferenceBuilder(InferenceBuilder):
    @property
    def inference(self) -> AzureLLMInference:
        return AzureLLMInference()

    def create(self, config: CustomInferenceConfig) -> AzureLLMInference:
        inference = self.inference
        # Raises AdapterConfigError naming any missing variable, so the deploy fails with it.
        inference.model = azure_adapter_from_env()
        return inference
