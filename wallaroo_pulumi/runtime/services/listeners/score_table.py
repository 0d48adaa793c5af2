"""The score table a listener run appends to the score pipeline's logs: the listener's columns
as `out.*`, the scored row's key, time and text as `in.*`, and Wallaroo's metadata columns."""

from __future__ import annotations

import json

import pyarrow as pa

from wallaroo_pulumi.runtime.store.logs import TIME_TYPE

from .executor import ListenerModelRef


def resolve_text_column(columns: list[str], text_field: str) -> str | None:
    for c in (text_field, f"out.{text_field}", f"in.{text_field}"):
        if c in columns:
            return c
    return None


def _score_schema(out: pa.Table, store_text: bool) -> list[tuple[str, pa.DataType]]:
    fields: list[tuple[str, pa.DataType]] = [("time", TIME_TYPE)]
    if store_text:
        fields.append(("in.text", pa.string()))
    fields += [("in.source_key", pa.string()), ("in.source_time", TIME_TYPE), ("in.source_model", pa.string())]
    for name in out.column_names:
        t = out.column(name).type
        fields.append((f"out.{name}", pa.float64() if pa.types.is_floating(t) or pa.types.is_integer(t) else t))
    fields += [
        ("anomaly.count", pa.int64()),
        ("metadata.last_model", pa.string()),
        ("metadata.pipeline_version", pa.string()),
        ("metadata.step", pa.string()),
        ("metadata.partition", pa.string()),
        ("metadata.elapsed", pa.list_(pa.int64())),
        ("metadata.error", pa.string()),
        ("metadata.source_pipeline", pa.string()),
        ("metadata.task_id", pa.string()),
        ("metadata.run_id", pa.string()),
    ]
    return fields


def build_score_table(
    *,
    out: pa.Table,
    texts: list[str],
    keys: list[str],
    times_ms: list[int],
    partitions: list[str | None],
    ref: ListenerModelRef,
    monitored: str,
    task_id: str,
    run_id: str,
    elapsed_ns: int,
    store_text: bool,
    models: list[str | None] | None = None,
) -> pa.Table:
    n = len(keys)
    cols: dict[str, pa.Array] = {}
    schema = _score_schema(out, store_text)
    tm = pa.array(times_ms, pa.int64()).cast(TIME_TYPE)
    cols["time"] = tm
    if store_text:
        cols["in.text"] = pa.array(texts, pa.string())
    cols["in.source_key"] = pa.array(keys, pa.string())
    cols["in.source_time"] = tm
    cols["in.source_model"] = pa.array(models if models is not None else [None] * n, pa.string())
    for name in out.column_names:
        c = out.column(name)
        cols[f"out.{name}"] = c.cast(pa.float64()) if pa.types.is_floating(c.type) or pa.types.is_integer(c.type) else c
    last_model = json.dumps({"model_name": ref.name, "model_sha": ref.sha or ref.version})
    per_row = elapsed_ns // max(n, 1)
    cols["anomaly.count"] = pa.array([0] * n, pa.int64())
    cols["metadata.last_model"] = pa.array([last_model] * n, pa.string())
    cols["metadata.pipeline_version"] = pa.array([ref.version] * n, pa.string())
    cols["metadata.step"] = pa.array([ref.name] * n, pa.string())
    cols["metadata.partition"] = pa.array(partitions, pa.string())
    cols["metadata.elapsed"] = pa.array([[per_row]] * n, pa.list_(pa.int64()))
    cols["metadata.error"] = pa.nulls(n, pa.string())
    cols["metadata.source_pipeline"] = pa.array([monitored] * n, pa.string())
    cols["metadata.task_id"] = pa.array([task_id] * n, pa.string())
    cols["metadata.run_id"] = pa.array([run_id] * n, pa.string())
    return pa.table([cols[name].combine_chunks() if isinstance(cols[name], pa.ChunkedArray) else cols[name]
                     for name, _ in schema], names=[name for name, _ in schema])
