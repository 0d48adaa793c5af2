"""Arrow input/output schemas of the built-in listener BYOP models, for ``WallarooModel``::

    from wallaroo_pulumi.scorers.schemas import listener_schemas
    inp, out = listener_schemas("toxicity")
"""

from __future__ import annotations

import pyarrow as pa

from .registry import LISTENERS, VALIDATOR, VALIDATOR_SCORER, columns_for

TEXT_FIELD = "text"


def _scores(name: str) -> list[pa.Field]:
    return [pa.field(c, pa.float64()) for c in columns_for(name)]


def listener_input_schema(text_field: str = TEXT_FIELD) -> pa.Schema:
    return pa.schema([pa.field(text_field, pa.string())])


def listener_output_schema(name: str) -> pa.Schema:
    return pa.schema(_scores(name))


def listener_schemas(name: str, text_field: str = TEXT_FIELD,
                     carry: pa.Schema | None = None) -> tuple[pa.Schema, pa.Schema]:
    """(input, output) schema of listener ``name`` (one of LISTENERS) or of ``"validator"``.

    ``carry`` (validator only): the previous step's output schema, e.g. ``LLM_OUTPUT_SCHEMA``.
    A pipeline step receives only the columns its input schema declares, so the validator
    passes the LLM's ``error`` and token columns through only when it declares them.
    """
    if name == VALIDATOR:
        if carry is None:
            return VALIDATOR_INPUT_SCHEMA, VALIDATOR_OUTPUT_SCHEMA
        if "generated_text" not in carry.names:
            raise ValueError(f"carry: the validator scores 'generated_text', which {carry.names} lacks")
        return carry, pa.schema(list(carry) + _scores(VALIDATOR_SCORER))
    if name not in LISTENERS:
        raise ValueError(f"unknown listener {name!r}: expected one of {list(LISTENERS) + [VALIDATOR]}")
    return listener_input_schema(text_field), listener_output_schema(name)


TOXICITY_INPUT_SCHEMA, TOXICITY_OUTPUT_SCHEMA = listener_schemas("toxicity")
SENTIMENT_INPUT_SCHEMA, SENTIMENT_OUTPUT_SCHEMA = listener_schemas("sentiment")
PROFANITY_INPUT_SCHEMA, PROFANITY_OUTPUT_SCHEMA = listener_schemas("profanity")
HATE_INPUT_SCHEMA, HATE_OUTPUT_SCHEMA = listener_schemas("hate")
COMBINED_INPUT_SCHEMA, COMBINED_OUTPUT_SCHEMA = listener_schemas("combined")

#: In-line validation step: ``[llm, validator]`` returns the generated text with its scores.
VALIDATOR_INPUT_SCHEMA = pa.schema([pa.field("generated_text", pa.string())])
VALIDATOR_OUTPUT_SCHEMA = pa.schema([pa.field("generated_text", pa.string())] + _scores(VALIDATOR_SCORER))
