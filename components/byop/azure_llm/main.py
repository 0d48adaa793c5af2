"""BYOP model: forwards each prompt to an Azure OpenAI deployment or an Azure ML online endpoint.

Configured by the sidekick env (AZURE_MODE, or whichever of AZURE_OPENAI_ENDPOINT / AZUREML_SCORE_URL is
set...: README.md). Input ``text``; output ``LLM_OUTPUT_SCHEMA`` (``wallaroo_pulumi.adapters.schemas``).
"""

from wallaroo_pulumi.adapters import byop  # the module, so the only builder here is ours
from wallaroo_pulumi.adapters.azure import AzureMLAdapter, AzureOpenAIAdapter, azure_adapter_from_env


class AzureLLMInference(byop.LLMInference):
    adapter_types = (AzureOpenAIAdapter, AzureMLAdapter)
    adapter_from_env = staticmethod(azure_adapter_from_env)


class AzureLLMInferenceBuilder(byop.LLMInferenceBuilder):
    inference_class = AzureLLMInference
