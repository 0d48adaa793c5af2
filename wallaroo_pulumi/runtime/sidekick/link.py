"""The sidekick link: a worker's frames (:mod:`.protocol`) over TCP, after a short handshake of
frame types of its own, so a runtime reaches a sidekick server in another pod (D35).

    client                                   server (python -m ...sidekick.serve)
    HELLO  JSON {token, sha, name}   ->
                                     <-      DENIED JSON {message}            (wrong token / model)
                                     <-      NEED_MODEL                       (nothing loaded yet)
    MODEL  JSON header + zip         ->                                       (then, or at once:)
                                     <-      READY | LOAD_ERROR               (the worker's own frame)
    REQUEST ...                      ->      ... frames relayed until RESPONSE or ERROR

After the handshake every frame is relayed as it is, whatever its type and request id (D61), so
frames added to the worker protocol cross the link unchanged; an exchange ends at a frame in
`TERMINAL` with its request's id. Frames of the handshake carry id 0."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

from wallaroo_pulumi.runtime.sidekick import protocol

HELLO = b"H"
NEED_MODEL = b"N"
MODEL = b"M"
DENIED = b"D"
#: Frames that end an exchange: the worker answers each request with exactly one of them.
TERMINAL = frozenset({protocol.RESPONSE, protocol.ERROR})
_JSON_LEN = struct.Struct(">I")
_CHUNK = 1 << 20


async def read(reader: asyncio.StreamReader) -> protocol.Frame:
    """The next frame, of any type (the relay does not judge what it carries)."""
    ftype, rid, length = protocol.HEADER.unpack(await reader.readexactly(protocol.HEADER.size))
    return protocol.Frame(ftype, rid, await reader.readexactly(length) if length else b"")


def write(writer: asyncio.StreamWriter, ftype: bytes, payload: bytes | memoryview = b"", rid: int = 0) -> None:
    """Queue one frame (await ``writer.drain()`` to send it)."""
    if len(payload) > protocol.MAX_FRAME:
        raise protocol.ProtocolError(f"frame of {len(payload)} bytes exceeds the 4 GiB protocol limit")
    header = protocol.HEADER.pack(ftype, rid, len(payload))
    writer.writelines([header, payload] if payload else [header])


async def send_model(writer: asyncio.StreamWriter, header: dict[str, Any], artifact: Path) -> None:
    """MODEL: a length-prefixed JSON header ({"requirements": [...]}) then the artifact zip, sent
    from the file in chunks (a model may be gigabytes)."""
    head = json.dumps(header).encode()
    size = artifact.stat().st_size
    if _JSON_LEN.size + len(head) + size > protocol.MAX_FRAME:
        raise protocol.ProtocolError(f"a model of {size} bytes exceeds the link's 4 GiB frame limit")
    writer.write(protocol.HEADER.pack(MODEL, 0, _JSON_LEN.size + len(head) + size) + _JSON_LEN.pack(len(head)) + head)
    with artifact.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, _CHUNK):
            writer.write(chunk)
            await writer.drain()
    await writer.drain()


async def receive_model(reader: asyncio.StreamReader, length: int, dest: Path) -> dict[str, Any]:
    """The rest of a MODEL frame of ``length`` bytes: its header, the artifact written to ``dest``."""
    (n,) = _JSON_LEN.unpack(await reader.readexactly(_JSON_LEN.size))
    header = json.loads(await reader.readexactly(n))
    left = length - _JSON_LEN.size - n
    with dest.open("wb") as fh:
        while left:
            chunk = await reader.readexactly(min(left, _CHUNK))
            await asyncio.to_thread(fh.write, chunk)
            left -= len(chunk)
    return header


async def read_header(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """A frame's type and length, its payload left to read."""
    ftype, _, length = protocol.HEADER.unpack(await reader.readexactly(protocol.HEADER.size))
    return ftype, length
