"""BYOP model: forwards each prompt to a Google Vertex AI online-prediction endpoint.

Configured by the sidekick env (APPLICATION_CREDENTIALS, VERTEX_ENDPOINT_URL, optional VERTEX_*...: README.md).
Input ``text``; output ``LLM_OUTPUT_SCHEMA`` (``wallaroo_pulumi.adapters.schemas``).
"""

from wallaroo_pulumi.adapters import byop  # the module, so the only builder here is ours
from wallaroo_pulumi.adapters.vertex import VertexAIAdapter


class VertexLLMInference(byop.LLMInference):
    adapter_types = (VertexAIAdapter,)
    adapter_from_env = staticmethod(VertexAIAdapter.from_env)


class VertexLLMInferenceBuilder(byop.LLMInferenceBuilder):
    inference_class = VertexLLMInference
