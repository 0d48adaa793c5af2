"""Arrow schemas shared by every LLM BYOP model: ``text`` in; ``generated_text``, ``prompt_tokens`` /
``completion_tokens`` (int64, -1 when not reported) and ``error`` ("" when the row succeeded) out.
"""

from __future__ import annotations

import pyarrow as pa

LLM_INPUT_SCHEMA: pa.Schema = pa.schema([pa.field("text", pa.string())])

LLM_OUTPUT_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("generated_text", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("error", pa.string()),
    ]
)

INPUT_FIELD = "text"
OPENAI_FIELD = "openai_request"
"""Optional input column: JSON of `wallaroo_pulumi.adapters.chat.ChatCall`, set by the /openai/v1 endpoints."""
OUTPUT_FIELDS = tuple(LLM_OUTPUT_SCHEMA.names)

__all__ = ["LLM_INPUT_SCHEMA", "LLM_OUTPUT_SCHEMA", "INPUT_FIELD", "OPENAI_FIELD", "OUTPUT_FIELDS"]
