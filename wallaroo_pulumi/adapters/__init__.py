"""LLM adapters behind the managed-inference-endpoint BYOP models.

The BYOP folders under ``components/byop/`` are thin ``mac`` wrappers; the logic
lives here so it can be unit-tested and is importable inside the runtime's
sidekick process. Configuration comes only from environment variables (the
pipeline's per-model sidekick env): see each module's docstring for its table.
"""

from wallaroo_pulumi.adapters.config import AdapterConfigError
from wallaroo_pulumi.adapters.http import (
    CommonSettings,
    HttpLLMAdapter,
    InputValidationError,
    RowResult,
    parse_retry_after,
)
from wallaroo_pulumi.adapters.schemas import LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA

__all__ = [
    "AdapterConfigError",
    "CommonSettings",
    "HttpLLMAdapter",
    "InputValidationError",
    "LLM_INPUT_SCHEMA",
    "LLM_OUTPUT_SCHEMA",
    "RowResult",
    "parse_retry_after",
    "openai_adapter_from_env",
    "vertex_adapter_from_env",
    "azure_adapter_from_env",
]


def openai_adapter_from_env(environ=None):  # type: ignore[no-untyped-def]
    from wallaroo_pulumi.adapters.openai_chat import OpenAIChatAdapter

    return OpenAIChatAdapter.from_env(environ)


def vertex_adapter_from_env(environ=None):  # type: ignore[no-untyped-def]
    from wallaroo_pulumi.adapters.vertex import VertexAIAdapter

    return VertexAIAdapter.from_env(environ)


def azure_adapter_from_env(environ=None):  # type: ignore[no-untyped-def]
    from wallaroo_pulumi.adapters.azure import azure_adapter_from_env as _azure

    return _azure(environ)
