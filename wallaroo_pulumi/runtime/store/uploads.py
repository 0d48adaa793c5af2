"""Streaming multipart parsing for model uploads.

The body is fed chunk by chunk from `request.stream()` into python-multipart's
`MultipartParser`; the `file` part goes straight into an `ArtifactWriter`
(temp file + sha256), small parts (`metadata`) are kept in memory up to a cap.
Parsing and disk writes run in a worker thread, a megabyte at a time, so a
multi-gigabyte upload neither holds the body in memory nor stalls the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from wallaroo_pulumi.runtime.core.errors import BadRequest, TooLarge, WallarooError
from wallaroo_pulumi.runtime.store.artifacts import ArtifactStore, ArtifactWriter, UploadTooLarge

SMALL_PART_LIMIT = 16 * 2**20
BATCH = 2**20


@dataclass
class ParsedUpload:
    fields: dict[str, bytes] = field(default_factory=dict)
    file: ArtifactWriter | None = None
    file_name: str | None = None


class _Handler:
    def __init__(self, store: ArtifactStore, limit: int, file_field: str) -> None:
        self.store = store
        self.limit = limit
        self.file_field = file_field
        self.result = ParsedUpload()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._sink: ArtifactWriter | None = None
        self._buf: bytearray | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._sink = None
        self._buf = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self._name = name
        if name == self.file_field:
            if self.result.file is not None:
                raise BadRequest(f"more than one '{self.file_field}' part in the upload", source="request")
            self._sink = self.store.writer(self.limit)
            self.result.file = self._sink
            filename = options.get(b"filename")
            self.result.file_name = filename.decode("utf-8", "replace") if filename else None
        else:
            self._buf = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            self._sink.write(memoryview(data)[start:end])
        elif self._buf is not None:
            self._buf += data[start:end]
            if len(self._buf) > SMALL_PART_LIMIT:
                raise TooLarge(f"multipart field '{self._name}' exceeds {SMALL_PART_LIMIT} bytes", source="request")

    def on_part_end(self) -> None:
        if self._buf is not None and self._name:
            if self._name in self.result.fields:  # a scoped key's workspace was read from the first one
                raise BadRequest(f"more than one '{self._name}' part in the upload", source="request")
            self.result.fields[self._name] = bytes(self._buf)
        self._buf = None
        self._sink = None


async def parse_streaming_upload(
    request: Request, store: ArtifactStore, limit: int, file_field: str = "file"
) -> ParsedUpload:
    """Parse a multipart/form-data body as a stream. On any error the partial
    artifact is removed before the error propagates."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest(
            "expected a multipart/form-data body with a 'metadata' (JSON) part and a 'file' part "
            f"(got Content-Type {request.headers.get('content-type')!r})",
            source="request",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + SMALL_PART_LIMIT:
        raise TooLarge(f"upload of {int(length)} bytes exceeds the limit of {limit} bytes (max_upload_bytes)", source="request")
    handler = _Handler(store, limit, file_field)
    parser = MultipartParser(params[b"boundary"], handler.callbacks())
    pending: list[bytes] = []
    pending_size = 0

    def feed(chunks: list[bytes]) -> None:
        for chunk in chunks:
            parser.write(chunk)

    try:
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= BATCH:
                    batch, pending, pending_size = pending, [], 0
                    await anyio.to_thread.run_sync(feed, batch)
            if pending:
                await anyio.to_thread.run_sync(feed, pending)
            parser.finalize()
        except UploadTooLarge as exc:
            raise TooLarge(f"upload exceeds the limit of {exc.limit} bytes (max_upload_bytes)", source="request") from exc
        except ClientDisconnect as exc:
            raise BadRequest("client disconnected before the upload finished", source="request") from exc
        except WallarooError:
            raise
        except Exception as exc:  # noqa: BLE001 - python-multipart raises several kinds
            raise BadRequest(f"malformed multipart body: {exc}", source="request") from exc
    except BaseException:
        if handler.result.file is not None:
            handler.result.file.abort()
        raise
    return handler.result
