"""The supervisor <-> worker wire protocol (length-prefixed frames over the worker's stdin and
its original stdout), and the conversion of batches between Arrow and BYOP's InferenceData."""

from __future__ import annotations

import json
import os
import struct
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.ipc

if TYPE_CHECKING:
    import asyncio

# A frame: 1 byte type, 4 bytes big-endian request id, 4 bytes big-endian payload length, the
# payload. Types are ASCII letters so a hexdump is readable:
#   READY       R  w -> s  JSON {"pid", "inference", "python", "concurrency"}
#   LOAD_ERROR  L  w -> s  JSON {"type", "message"}; the worker exits
#   REQUEST     Q  s -> w  Arrow IPC stream of one batch
#   STREAM      T  s -> w  Arrow IPC stream of one batch, whose answer is streamed (CHUNKs first)
#   CHUNK       C  w -> s  Arrow IPC stream of a part of a STREAM's answer (any number of rows)
#   RESPONSE    P  w -> s  Arrow IPC stream of the answer
#   ERROR       E  w -> s  JSON {"type", "message"}: the request failed, the worker keeps serving
#   SHUTDOWN    S  s -> w  empty; the worker exits 0 (so does EOF)
# After READY the worker answers each REQUEST with exactly one RESPONSE or ERROR, and each STREAM
# with zero or more CHUNKs and then exactly one RESPONSE (the whole answer, one row per input row)
# or ERROR, every one tagged with the id of the request it answers (D61): up to READY's
# `concurrency` requests may be in flight at once and their answers come back in any order; with
# a concurrency of 1 they come in order. Frames outside a request (READY, LOAD_ERROR, SHUTDOWN)
# carry id 0. A model streams when its inference has `predict_stream(data)`: a generator that
# yields chunks (dicts of arrays, like `_predict`'s answer) and returns the whole answer (D39);
# without it a STREAM is answered by `predict` alone, with no CHUNK.
READY = b"R"
LOAD_ERROR = b"L"
REQUEST = b"Q"
STREAM = b"T"
CHUNK = b"C"
RESPONSE = b"P"
ERROR = b"E"
SHUTDOWN = b"S"
FRAME_TYPES = frozenset({READY, LOAD_ERROR, REQUEST, STREAM, CHUNK, RESPONSE, ERROR, SHUTDOWN})


class StreamPart(NamedTuple):
    """One item of a streamed answer: a CHUNK's table, or (``final``) the whole answer last."""

    table: pa.Table
    final: bool


class Frame(NamedTuple):
    """One frame as read: its type, the id of the request it belongs to, its payload."""

    ftype: bytes
    rid: int
    payload: bytes


HEADER = struct.Struct(">cII")
MAX_FRAME = 2**32 - 1


class ProtocolError(Exception):
    """A frame was malformed, or of a type not expected at this point."""


class ConversionError(Exception):
    """A batch could not be converted between Arrow and InferenceData."""


def encode_header(ftype: bytes, length: int, rid: int = 0) -> bytes:
    if ftype not in FRAME_TYPES:
        raise ProtocolError(f"unknown frame type {ftype!r}")
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds the 4 GiB protocol limit")
    return HEADER.pack(ftype, rid, length)


def decode_header(header: bytes) -> tuple[bytes, int, int]:
    """A header's type, request id and payload length."""
    ftype, rid, length = HEADER.unpack(header)
    if ftype not in FRAME_TYPES:
        raise ProtocolError(f"unknown frame type {ftype!r}: the channel is out of step")
    return ftype, rid, length


# -- blocking I/O (the worker side) ------------------------------------------------
def write_frame(stream: BinaryIO, ftype: bytes, payload: bytes | memoryview | pa.Buffer = b"", rid: int = 0) -> None:
    """One frame; to a file descriptor as one gathered write (one syscall, the payload not copied).
    Writers on several threads hold one lock around it: a pipe write may be split."""
    header = encode_header(ftype, len(payload), rid)
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream
        stream.write(header)
        if payload:
            stream.write(payload)
        stream.flush()
        return
    stream.flush()  # nothing of ours may be left behind in its buffer
    parts = [memoryview(header), *([memoryview(payload)] if len(payload) else [])]
    while parts:
        written = os.writev(fd, parts)
        while parts and written >= len(parts[0]):
            written -= len(parts.pop(0))
        if parts:
            parts[0] = parts[0][written:]


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks: list[bytes] = []
    left = n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> Frame | None:
    """The next frame, or None at a clean end of stream."""
    header = _read_exact(stream, HEADER.size)
    if header is None:
        return None
    ftype, rid, length = decode_header(header)
    payload = _read_exact(stream, length) if length else b""
    if payload is None:
        raise ProtocolError(f"stream ended inside a {length}-byte frame")
    return Frame(ftype, rid, payload)


# -- asyncio I/O (the supervisor side) ----------------------------------------------
async def read_frame_async(reader: asyncio.StreamReader) -> Frame:
    header = await reader.readexactly(HEADER.size)
    ftype, rid, length = decode_header(header)
    payload = await reader.readexactly(length) if length else b""
    return Frame(ftype, rid, payload)


async def write_frame_async(writer: asyncio.StreamWriter, ftype: bytes, payload: bytes | memoryview = b"",
                            rid: int = 0) -> None:
    """Header and payload in one gathered write (uvloop: one writev, the payload not copied)."""
    header = encode_header(ftype, len(payload), rid)
    writer.writelines([header, payload] if payload else [header])
    await writer.drain()


def json_payload(**fields: Any) -> bytes:
    return json.dumps(fields, default=str).encode()


def parse_json_payload(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload.decode("utf-8", "replace"))
    except ValueError:
        return {"message": payload.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"message": str(value)}


# -- Arrow IPC -----------------------------------------------------------------------
# Given explicitly: without options pyarrow reads two environment variables for every writer (both
# ends of the pipe are ours, so the legacy formats they select are never wanted).
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions()
_READ_OPTIONS = pa.ipc.IpcReadOptions()


def table_to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue()


def ipc_to_table(payload: bytes | pa.Buffer) -> pa.Table:
    source = pa.py_buffer(payload) if isinstance(payload, bytes) else payload
    return pa.ipc.open_stream(source, options=_READ_OPTIONS).read_all()


# -- Arrow -> numpy ------------------------------------------------------------------
def table_to_inference_data(table: pa.Table) -> dict[str, np.ndarray]:
    """One numpy array per column, the way BYOP code expects them: numbers as numeric arrays
    (nulls in integer columns become NaN floats), strings as object arrays of ``str``, list
    columns as a 2-D (or N-D) array when every row has the same shape and no nulls, else as an
    object array holding one array per row."""
    data: dict[str, np.ndarray] = {}
    for name in table.column_names:
        try:
            data[name] = column_to_numpy(table.column(name))
        except Exception as exc:  # noqa: BLE001 - report the column, keep the cause
            raise ConversionError(
                f"input field {name!r} ({table.schema.field(name).type}) could not be converted "
                f"to numpy: {type(exc).__name__}: {exc}"
            ) from exc
    return data


def column_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    typ = array.type
    if isinstance(typ, pa.ExtensionType):
        if isinstance(typ, pa.FixedShapeTensorType) and array.null_count == 0:
            return np.asarray(array.to_numpy_ndarray())
        array = array.storage
        typ = array.type
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return _list_to_numpy(array)
    if pa.types.is_dictionary(typ):
        array = array.dictionary_decode()
        typ = array.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        out = np.empty(len(array), dtype=object)
        out[:] = array.to_pylist()
        return out
    if pa.types.is_struct(typ) or pa.types.is_map(typ):
        out = np.empty(len(array), dtype=object)
        out[:] = array.to_pylist()
        return out
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _list_to_numpy(array: pa.Array) -> np.ndarray:
    n = len(array)
    if array.null_count == 0:
        if pa.types.is_fixed_size_list(array.type):
            width = array.type.list_size
            values = array.flatten()
            inner = column_to_numpy(values)
            if inner.dtype != object or inner.ndim > 1 or width == 0:
                return inner.reshape((n, width) + inner.shape[1:])
        else:
            offsets = array.offsets.to_numpy()
            lengths = np.diff(offsets)
            if n and np.all(lengths == lengths[0]):
                inner = column_to_numpy(array.flatten())
                if inner.dtype != object or inner.ndim > 1:
                    return inner.reshape((n, int(lengths[0])) + inner.shape[1:])
    # Ragged, nullable or strings: one array per row.
    out = np.empty(n, dtype=object)
    for i in range(n):
        item = array[i]
        out[i] = None if not item.is_valid else column_to_numpy(item.values)
    return out


# -- numpy -> Arrow ------------------------------------------------------------------
def inference_data_to_table(data: dict[str, Any], num_rows: int | None) -> pa.Table:
    """Build the answer table, checking every array has one entry per input row (``num_rows``;
    None for a streamed chunk: as many rows as its first array)."""
    if not isinstance(data, dict):
        raise ConversionError(f"_predict must return a dict of numpy arrays; got {type(data).__name__}")
    if num_rows is None:
        first = next(iter(data.values()), None)
        num_rows = len(first) if first is not None and np.ndim(first) > 0 else 0
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name, value in data.items():
        arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if arr.ndim == 0:
            raise ConversionError(
                f"output field {name!r} is a scalar; expected an array with one entry per input row ({num_rows})"
            )
        if arr.shape[0] != num_rows:
            raise ConversionError(
                f"output field {name!r} has {arr.shape[0]} rows but the input batch has {num_rows}; "
                "every output array needs one entry per input row"
            )
        try:
            arrays.append(numpy_to_arrow(arr))
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(
                f"output field {name!r} (numpy {arr.dtype}, shape {arr.shape}) could not be converted "
                f"to Arrow: {type(exc).__name__}: {exc}"
            ) from exc
        names.append(str(name))
    if not arrays:
        return pa.table({})
    return pa.Table.from_arrays(arrays, names=names)


def numpy_to_arrow(arr: np.ndarray) -> pa.Array:
    if arr.ndim > 1:
        n, width = arr.shape[0], arr.shape[1]
        inner = numpy_to_arrow(arr.reshape((n * width,) + arr.shape[2:]))
        offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32) if n * width < 2**31 else
                           np.arange(0, n * width + 1, width, dtype=np.int64))
        if offsets.type == pa.int64():
            return pa.LargeListArray.from_arrays(offsets, inner)
        return pa.ListArray.from_arrays(offsets, inner)
    if arr.dtype == object:
        return pa.array([_to_python(v) for v in arr])
    if arr.dtype.kind == "U":
        return pa.array(arr.tolist(), type=pa.string())
    if arr.dtype.kind == "S":
        return pa.array(arr.tolist(), type=pa.binary())
    return pa.array(arr)


def _to_python(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_to_python(v) for v in value] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    return value


def warm_up() -> None:
    """Run the whole conversion path once on a tiny batch.

    pyarrow imports pandas lazily on first use (~0.3 s); doing it while the
    model loads keeps that cost out of the first request's latency.
    """
    table = ipc_to_table(table_to_ipc(pa.table({"s": ["x"], "f": [1.0], "l": [[1, 2]]})))
    inference_data_to_table(table_to_inference_data(table), table.num_rows)
