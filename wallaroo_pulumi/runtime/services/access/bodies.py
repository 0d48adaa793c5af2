"""What a request body names, read before its route runs: a JSON body (buffered, it is small) or
an upload's leading `metadata` part (the file after it is not read here). Either way the route
then receives the body exactly as sent."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Message, Receive, Scope

from wallaroo_pulumi.runtime.core.errors import BadRequest, TooLarge

LIMIT = 2**20  # a JSON body, or the upload bytes before the end of `metadata`, for a scoped key


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """`receive` that first hands back the messages already read."""
    queue = deque(messages)

    async def replay() -> Message:
        return queue.popleft() if queue else await receive()

    return replay


def _as_object(raw: bytes, what: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadRequest(f"{what}: not valid JSON") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what}: expected a JSON object")
    return value


async def json_body(receive: Receive) -> tuple[dict[str, Any], Receive]:
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > LIMIT:
            raise TooLarge(f"request body exceeds {LIMIT} bytes, the most a scoped key may send to this endpoint")
        if not message.get("more_body"):
            break
    raw = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    return _as_object(raw, "body"), replaying(messages, receive)


class _Metadata:
    """python-multipart callbacks keeping the first `metadata` part (the uploads parser's way)."""

    def __init__(self) -> None:
        self.field = self.value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: bytes | None = None
        self.data = bytearray()
        self.found: bytes | None = None
        self.file_first = False

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field, "on_header_value": self.header_value,
                "on_header_end": self.header_end, "on_headers_finished": self.headers_finished,
                "on_part_data": self.part_data, "on_part_end": self.part_end}

    def begin(self) -> None:
        self.headers, self.name = {}, None

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.field.lower()] = self.value
        self.field = self.value = b""

    def headers_finished(self) -> None:
        self.name = parse_options_header(self.headers.get(b"content-disposition", b""))[1].get(b"name")
        if self.name == b"file" and self.found is None:
            self.file_first = True

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.name == b"metadata" and self.found is None:
            self.data += data[start:end]

    def part_end(self) -> None:
        if self.name == b"metadata" and self.found is None:
            self.found = bytes(self.data)


async def upload_metadata(scope: Scope, receive: Receive) -> tuple[dict[str, Any] | None, Receive]:
    """The upload's `metadata` JSON when it comes first; None when `file` comes first (the Wallaroo
    SDK's order) or metadata has not ended within LIMIT bytes: the route then checks the scope."""
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
    _, options = parse_options_header(content_type)
    if b"boundary" not in options:
        return {}, receive  # not multipart: the route answers why
    peek = _Metadata()
    parser = MultipartParser(options[b"boundary"], peek.callbacks())
    messages: list[Message] = []
    size = 0
    while peek.found is None:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        try:
            parser.write(chunk)
        except Exception:  # noqa: BLE001 - malformed: the route's parser answers why
            return {}, replaying(messages, receive)
        if peek.file_first or (peek.found is None and size > LIMIT):
            return None, replaying(messages, receive)
        if not message.get("more_body"):
            break
    return _as_object(peek.found or b"", "metadata"), replaying(messages, receive)
