"""Inference wire formats: pandas-records JSON and Arrow IPC (file or stream),
input checking against a step's Arrow schema, and Wallaroo-shaped results."""

from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from wallaroo_pulumi.runtime.core.errors import BadRequest
from wallaroo_pulumi.runtime.store.logs import TIME_TYPE
from wallaroo_pulumi.runtime.wire.validations import Validation, evaluate

JSON_RECORDS = "application/json; format=pandas-records"
ARROW_FILE = "application/vnd.apache.arrow.file"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ACCEPTED = f"'{JSON_RECORDS}', '{ARROW_FILE}' or '{ARROW_STREAM}'"


class BadInput(BadRequest):
    """An inference body that does not decode or does not fit the schema."""

    source = "input"


def kind_of(content_type: str | None) -> str | None:
    """'json' | 'arrow-file' | 'arrow-stream' | None for a Content-Type / Accept value."""
    if not content_type:
        return None
    ct = content_type.lower()
    if "vnd.apache.arrow.stream" in ct:
        return "arrow-stream"
    if "vnd.apache.arrow" in ct:
        return "arrow-file"
    if "json" in ct:
        return "json"
    return None


def response_kind(accept: str | None, request_kind: str) -> str:
    if not accept:
        return request_kind
    for item in accept.split(","):
        item = item.strip()
        if not item or item.startswith("*/*"):
            continue
        kind = kind_of(item)
        if kind:
            return kind
    return request_kind


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _column_from_values(name: str, values: list[Any], field: pa.Field) -> pa.Array:
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    for i, value in enumerate(values):
        try:
            pa.array([value], type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise BadInput(f"column '{name}' row {i}: expected {field.type}, got {_type_name(value)} {shown}") from None
    raise BadInput(f"column '{name}': values do not convert to {field.type}")


def table_from_records(body: bytes, schema: pa.Schema) -> pa.Table:
    try:
        records = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"malformed JSON body: {exc}") from None
    if isinstance(records, dict):
        raise BadInput("expected pandas-records JSON: a list of objects like [{\"col\": value}, ...], got an object")
    if not isinstance(records, list):
        raise BadInput(f"expected pandas-records JSON: a list of objects, got {_type_name(records)}")
    if not records:
        raise BadInput("empty input: the JSON list has no records")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise BadInput(f"record {i}: expected an object of column values, got {_type_name(rec)}")
    columns = []
    for field in schema:
        values = [rec.get(field.name) for rec in records]
        if all(field.name not in rec for rec in records):
            raise BadInput(f"missing column '{field.name}' (expected {field.type}); input schema: {_schema_text(schema)}")
        if not field.nullable:
            for i, v in enumerate(values):
                if v is None:
                    raise BadInput(f"column '{field.name}' row {i}: null, but the column is not nullable")
        columns.append(_column_from_values(field.name, values, field))
    return pa.Table.from_arrays(columns, schema=schema)


def _schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def read_arrow(body: bytes, kind: str) -> pa.Table:
    buf = pa.py_buffer(body)
    first, second = (pa.ipc.open_file, pa.ipc.open_stream) if kind == "arrow-file" else (pa.ipc.open_stream, pa.ipc.open_file)
    try:
        return first(buf).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        try:
            return second(buf).read_all()
        except (pa.ArrowInvalid, OSError):
            label = "file" if kind == "arrow-file" else "stream"
            raise BadInput(f"malformed Arrow IPC {label} body: {exc}") from None


def conform(table: pa.Table, schema: pa.Schema, what: str = "input") -> pa.Table:
    """Select and (safely) cast `table`'s columns to `schema`; 400 naming the column otherwise."""
    columns = []
    names = table.schema.names
    for field in schema:
        if field.name not in names:
            raise BadInput(f"missing column '{field.name}' (expected {field.type}); {what} schema: {_schema_text(schema)}")
        col = table.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                got = table.schema.field(field.name).type
                raise BadInput(f"column '{field.name}': expected {field.type}, got {got}") from None
        if not field.nullable and col.null_count:
            raise BadInput(f"column '{field.name}': has nulls, but the column is not nullable")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def parse_input(body: bytes, content_type: str | None, schema: pa.Schema) -> tuple[pa.Table, str]:
    kind = kind_of(content_type)
    if kind is None:
        raise BadInput(f"Content-Type {content_type!r} is not supported; send {ACCEPTED}", status=415)
    if not body:
        raise BadInput("empty request body: send pandas-records JSON or an Arrow IPC file")
    if kind == "json":
        return table_from_records(body, schema), kind
    table = read_arrow(body, kind)
    if table.num_rows == 0:
        raise BadInput("empty input: the Arrow table has no rows")
    return conform(table, schema), kind


def result_table(
    inputs: pa.Table | None,
    outputs: pa.Table | None,
    *,
    rows: int,
    time_ms: int,
    pipeline_version: str,
    last_model: str,
    elapsed: list[int],
    partition: str,
    step: str | None,
    error: str | None,
    output_schema: pa.Schema | None = None,
    validations: list[Validation] | tuple[()] = (),
) -> pa.Table:
    """Flat Wallaroo result/log table: time, in.*, out.*, check_failures, anomaly.count, anomaly.<validation>,
    metadata.*. The validations are evaluated over the in.*/out.* columns of an answered call; a failed one
    has no verdicts (null)."""
    names: list[str] = ["time"]
    arrays: list[pa.Array] = [pa.repeat(pa.scalar(time_ms, TIME_TYPE), rows)]
    if inputs is not None:
        for name in inputs.schema.names:
            names.append(f"in.{name}")
            arrays.append(inputs.column(name).combine_chunks())
    if outputs is not None:
        for name in outputs.schema.names:
            names.append(f"out.{name}")
            arrays.append(outputs.column(name).combine_chunks())
    elif output_schema is not None:
        for field in output_schema:
            names.append(f"out.{field.name}")
            arrays.append(pa.nulls(rows, field.type))
    verdicts = ([pa.nulls(rows, pa.bool_()) for _ in validations] if outputs is None
                else evaluate(list(validations), pa.Table.from_arrays(arrays, names=names)) if validations else [])
    failures, count = anomalies(verdicts, rows)
    names += ["check_failures", "anomaly.count", *(f"anomaly.{v.name}" for v in validations)]
    arrays += [failures, count, *verdicts]
    names += ["metadata.last_model", "metadata.pipeline_version",
              "metadata.elapsed", "metadata.dropped", "metadata.partition", "metadata.step", "metadata.error"]
    arrays += [
        _constant(last_model, pa.string(), rows),
        _constant(pipeline_version, pa.string(), rows),
        pa.repeat(pa.scalar(elapsed, _ELAPSED), rows),
        _constant((), _DROPPED, rows),
        _constant(partition, pa.string(), rows),
        _constant(step, pa.string(), rows),
        _constant(None, pa.string(), rows) if error is None else pa.repeat(pa.scalar(error, pa.string()), rows),
    ]
    return pa.Table.from_arrays(arrays, names=names)


_ELAPSED, _DROPPED, _FAILURES = pa.list_(pa.uint64()), pa.list_(pa.string()), pa.list_(pa.int64())


_CACHED_ROWS = 64  # longer constant columns are built each time: the cache holds at most 1024 x 64 values


def _constant(value: Any, type_: pa.DataType, rows: int) -> pa.Array:
    """`rows` copies of one value. Short ones (a request's rows) are built in Arrow once and shared
    (arrays are immutable): these columns repeat per deployment and row count, and building one
    cost 5-12 us per call. Per-call values (an error's text) are never passed here (D62)."""
    if rows > _CACHED_ROWS:
        return pa.repeat(pa.scalar(value, type_), rows)
    return _cached_constant(value, type_, rows)


@lru_cache(maxsize=1024)
def _cached_constant(value: Any, type_: pa.DataType, rows: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), rows)


def anomalies(verdicts: list[pa.Array], rows: int) -> tuple[pa.Array, pa.Array]:
    """(check_failures, anomaly.count) per row: the indices of the validations that flagged it, and how many."""
    if not verdicts:
        return _constant((), _FAILURES, rows), _constant(0, pa.int64(), rows)
    flags = [v.to_pylist() for v in verdicts]
    failed = [[i for i, column in enumerate(flags) if column[r]] for r in range(rows)]
    return pa.array(failed, pa.list_(pa.int64())), pa.array([len(f) for f in failed], pa.int64())


RESPONSE_DROP = ("metadata.step", "metadata.error")


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _nan_to_null(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_floating(col.type) and col.length() and pc.any(pc.is_nan(col)).as_py():
        return pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
    return col


def _clean_float(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean_float(v) for v in value]
    return value


def _epoch_ms(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp column as int64 milliseconds since the epoch (a ms column is reinterpreted: a cast
    kernel call cost ~30 us)."""
    if col.type.unit == "ms":
        return pa.chunked_array([chunk.view(pa.int64()) for chunk in col.chunks], pa.int64())
    return col.cast(TIME_TYPE).cast(pa.int64())


def nested_records(table: pa.Table, time_as_ms: bool = True) -> list[dict[str, Any]]:
    """Flat `a.b` columns -> [{"a": {"b": ...}}] records (Wallaroo's JSON shape). Column by column
    into Python lists, then rows: for the answers' few rows faster than Arrow's own to_pylist of
    struct columns (measured 2x slower for one row, D46)."""
    columns: dict[str, list[Any]] = {}
    for name, col in zip(table.schema.names, table.columns, strict=True):
        if name == "time" and time_as_ms and pa.types.is_timestamp(col.type):
            col = _epoch_ms(col)
        floats = pa.types.is_floating(col.type)
        values = (_nan_to_null(col) if floats else col).to_pylist()
        if pa.types.is_list(col.type) and pa.types.is_floating(col.type.value_type):
            values = [_clean_float(v) for v in values]
        columns[name] = values
    records: list[dict[str, Any]] = []
    for i in range(table.num_rows):
        rec: dict[str, Any] = {}
        for name, values in columns.items():
            head, dot, rest = name.partition(".")
            if dot and head in ("in", "out", "anomaly", "metadata"):
                rec.setdefault(head, {})[rest] = values[i]
            else:
                rec[name] = values[i]
        records.append(rec)
    return records


def encode_records(records: list[dict[str, Any]]) -> bytes:
    return json.dumps(records, default=_json_default, separators=(",", ":")).encode()


def encode_table(table: pa.Table, kind: str) -> tuple[bytes, str]:
    if kind == "json":
        return encode_records(nested_records(table)), JSON_RECORDS
    sink = pa.BufferOutputStream()
    if kind == "arrow-stream":
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes(), ARROW_STREAM
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes(), ARROW_FILE
