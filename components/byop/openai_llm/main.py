"""BYOP model: forwards each prompt to OpenAI or any OpenAI-compatible server.

Configured by the sidekick env (OPENAI_API_KEY, OPENAI_MODEL, optional OPENAI_BASE_URL...: README.md).
Input ``text``; output ``LLM_OUTPUT_SCHEMA`` (``wallaroo_pulumi.adapters.schemas``).
"""

from wallaroo_pulumi.adapters import byop  # the module, so the only builder here is ours
from wallaroo_pulumi.adapters.openai_chat import OpenAIChatAdapter


class OpenAIChatInference(byop.LLMInference):
    adapter_types = (OpenAIChatAdapter,)
    adapter_from_env = staticmethod(OpenAIChatAdapter.from_env)


class OpenAIChatInferenceBuilder(byop.LLMInferenceBuilder):
    inference_class = OpenAIChatInference
