"""The one Arrow schema codec (base64 of Schema.serialize()) that provider, client and runtime share."""

from __future__ import annotations

import base64

import pyarrow as pa
import pytest

from wallaroo_pulumi.schemas import describe, schema_from_b64, schema_to_b64

SCHEMA = pa.schema([("text", pa.string()), ("score", pa.float64())])


def test_round_trip() -> None:
    assert schema_from_b64(schema_to_b64(SCHEMA)) == SCHEMA
    assert describe(SCHEMA) == "text: string, score: double"


@pytest.mark.parametrize(("text", "message"), [
    ("%%%", "input_schema: not valid base64 (expected base64 of pyarrow Schema.serialize())"),
    (base64.b64encode(b"junk").decode(), "input_schema: base64 decodes but is not a serialized Arrow schema ("),
])
def test_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        schema_from_b64(text, "input_schema")
    assert str(exc.value).startswith(message)


def test_encoding_wants_a_schema() -> None:
    with pytest.raises(TypeError, match="expected a pyarrow.Schema, got dict"):
        schema_to_b64({})  # type: ignore[arg-type]
