"""Arrow schemas shared by every managed-inference-endpoint (LLM) BYOP model.

The Pulumi stacks pass these to ``WallarooModel`` as the model's input and
output schemas; the adapters produce exactly these columns.

Input:  ``text`` (string) — the prompt.
Output: ``generated_text`` (string) — the completion ("" when the row failed);
        ``prompt_tokens`` / ``completion_tokens`` (int64) — upstream usage, -1
        when the upstream does not report it; ``error`` (string) — "" when the
        row succeeded, else a short message naming the upstream and its status.
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
OUTPUT_FIELDS = tuple(LLM_OUTPUT_SCHEMA.names)

__all__ = ["LLM_INPUT_SCHEMA", "LLM_OUTPUT_SCHEMA", "INPUT_FIELD", "OUTPUT_FIELDS"]
