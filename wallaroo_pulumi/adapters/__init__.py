"""LLM adapters behind the managed-endpoint BYOP models in ``components/byop/*_llm/``.

One module per upstream, configured only by the pipeline's sidekick env (tables: each folder's README);
``byop`` holds the folders' shared ``mac`` classes.
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
]
