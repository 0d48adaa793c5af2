"""The sidekick link: a worker's frames (:mod:`.protocol`) over TCP, after a short handshake of
frame types of its own, so a runtime reaches a sidekick server in another pod (D35).

    client                                   server (python -m ...sidekick.serve)
    HELLO  JSON {token, sha, name}   ->
                                     <-      DENIED JSON {message}            (wrong token / model)
                                     <-      NEED_MODEL                       (nothing loaded yet)
    MODEL  JSON header + zip         ->                                       (then, or at once:)
                                     <-      READY | LOAD_ERROR               (the worker's own frame)
    REQUEST ...                      ->      ... frames relayed until RESPONSE or ERROR

After the handshake every frame is relayed as it is, whatever its type, so frames added to the
worker protocol cross the link unchanged; an exchange ends at a frame in `TERMINAL`."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from wallaroo_pulumi.runtime.sidekick import protocol

HELLO = b"H"
NEED_MODEL = b"N"
MODEL = b"M"
DENIED = b"D"
#: Frames that end an exchange: the worker answers each request with exactly one of them.
TERMINAL = frozenset({protocol.RESPONSE, protocol.ERROR})
_JSON_LEN = struct.Struct(">I")


async def read(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The next frame, of any type (the relay does not judge what it carries)."""
    ftype, length = protocol.HEADER.unpack(await reader.readexactly(protocol.HEADER.size))
    return ftype, (await reader.readexactly(length) if length else b"")


def write(writer: asyncio.StreamWriter, ftype: bytes, payload: bytes | memoryview = b"") -> None:
    """Queue one frame (await ``writer.drain()`` to send it)."""
    if len(payload) > protocol.MAX_FRAME:
        raise protocol.ProtocolError(f"frame of {len(payload)} bytes exceeds the 4 GiB protocol limit")
    writer.write(protocol.HEADER.pack(ftype, len(payload)))
    if payload:
        writer.write(payload)


def model_payload(header: dict[str, Any], artifact: bytes) -> bytes:
    """MODEL: a length-prefixed JSON header ({"requirements": [...]}) then the artifact zip."""
    head = json.dumps(header).encode()
    return _JSON_LEN.pack(len(head)) + head + artifact


def parse_model_payload(payload: bytes) -> tuple[dict[str, Any], memoryview]:
    (n,) = _JSON_LEN.unpack_from(payload)
    view = memoryview(payload)
    return json.loads(bytes(view[_JSON_LEN.size:_JSON_LEN.size + n])), view[_JSON_LEN.size + n:]
