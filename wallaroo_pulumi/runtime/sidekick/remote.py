"""`RemoteSidekick`: one sidekick server (a pod of a step) seen from the runtime, over
:mod:`.link`. It connects with a timeout, hands the server the model if it has none, and sends
one batch at a time (its frames tagged with ids, D61) behind the same merging queue as a local worker; a lost connection fails
the batch in flight as a crash (the pool sends it to another replica) and reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick import link, protocol
from wallaroo_pulumi.runtime.sidekick.batching import DynamicBatching
from wallaroo_pulumi.runtime.sidekick.errors import (
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPredictError,
    stopped_error,
)
from wallaroo_pulumi.runtime.sidekick.merging import MergingQueue

log = logging.getLogger("wallaroo.sidekick.remote")
CONNECT_TIMEOUT_S = 3.0


class LinkDenied(SidekickError):
    """The server refused the link (wrong token, or it serves another model)."""


@dataclass(frozen=True)
class ModelBundle:
    """What a server needs to load a step: the artifact zip, its sha and extra requirements."""

    sha: str
    artifact: Path
    requirements: list[str] = field(default_factory=list)


class RemoteSidekick:
    """One replica of a step, reached at ``host:port``; ``name`` is its pod's name."""

    def __init__(self, name: str, step_name: str, host: str, port: int, token: str, bundle: ModelBundle, *,
                 max_batch_rows: int = 64, batching: DynamicBatching | None = None, load_timeout_s: float = 120.0,
                 request_timeout_s: float = 300.0) -> None:
        self.name = name
        self.step_name = step_name
        self.host, self.port = host, port
        self._token = token
        self._bundle = bundle
        self.load_timeout_s = load_timeout_s
        self.request_timeout_s = request_timeout_s
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._state = "starting"
        self._last_error: str | None = None
        self._last_exit: str | None = None  # how its pod's container last ended badly (the kubelet's word)
        #: this replica's current link: a container restarted in place (same pod) is linked anew, and a
        #: request that failed on the old link may be tried on the new one
        self.link_id: tuple[str, int] = (name, 0)
        self._restarts = 0
        self.load_failed = False  # the server answered LOAD_ERROR: the model cannot load there
        self._lock = asyncio.Lock()
        self._last_id = 0  # the id of the last request sent (D61: frames carry it)
        self._busy = False
        self._busy_since = 0.0
        self._busy_total = 0.0
        self._queue = MergingQueue(self._exchange, step_name=step_name, max_batch_rows=max_batch_rows, batching=batching)

    # -- what the pool and status read ------------------------------------------------
    state = property(lambda self: self._state, doc="``starting`` | ``ready`` | ``failed`` | ``stopped``")
    last_error = property(lambda self: self._last_error or self._last_exit)
    restarts = property(lambda self: self._restarts)
    busy = property(lambda self: self._busy)
    waiting = property(lambda self: self._queue.waiting)
    concurrency = 1  # one exchange at a time over its link (the server relays one at a time)
    pid = None  # in another pod
    pod = property(lambda self: self.name)

    @property
    def busy_seconds(self) -> float:
        return self._busy_total + (time.monotonic() - self._busy_since if self._busy else 0.0)

    def note(self, message: str | None) -> None:
        """What the pool knows of this replica's pod (e.g. the scheduler's reason), for status."""
        self._last_error = message

    def ended(self, message: str) -> None:
        """Its pod ended for good (evicted, say): no longer a replica, never linked again; why, for status."""
        self._close()
        self._state, self._last_error, self.load_failed = "failed", message, True

    def note_exit(self, message: str | None) -> None:
        """How its pod's container last ended badly (OOMKilled, an error exit): kept in status
        after the container restarts, until the pod goes."""
        self._last_exit = message

    def __repr__(self) -> str:
        return f"RemoteSidekick({self.name!r}, {self.host}:{self.port}, {self._state})"

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (retrying while the server comes up) and load; raise `SidekickLoadError`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.load_timeout_s
        self._state = "starting"
        while True:
            try:
                await asyncio.wait_for(self._connect(), max(0.1, deadline - loop.time()))
                return
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self._last_error = f"pod {self.name} ({self.host}:{self.port}) not reachable: {exc or type(exc).__name__}"
                if loop.time() >= deadline:
                    self._state = "failed"
                    raise SidekickLoadError(f"model {self.step_name!r}: {self._last_error} within "
                                            f"{self.load_timeout_s:g}s", step_name=self.step_name) from None
                await asyncio.sleep(0.2)
            except SidekickError as exc:
                self._state = "failed"
                self._last_error = str(exc)
                raise
            except protocol.ProtocolError as exc:  # e.g. a model over the frame limit: no retry helps
                self._state, self.load_failed = "failed", True
                self._last_error = f"model {self.step_name!r}: {exc}"
                raise SidekickLoadError(self._last_error, step_name=self.step_name) from None

    async def _connect(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S)
        try:
            link.write(writer, link.HELLO, protocol.json_payload(token=self._token, sha=self._bundle.sha,
                                                                 name=self.step_name))
            await writer.drain()
            ftype, _, body = await link.read(reader)
            if ftype == link.NEED_MODEL:
                await link.send_model(writer, {"requirements": self._bundle.requirements}, self._bundle.artifact)
                ftype, _, body = await link.read(reader)
        except BaseException:
            writer.close()
            raise
        if ftype == link.DENIED:
            writer.close()
            raise LinkDenied(f"pod {self.name} refused the link: {protocol.parse_json_payload(body).get('message')}",
                             step_name=self.step_name)
        if ftype != protocol.READY:
            writer.close()
            message = protocol.parse_json_payload(body).get("message") or f"model {self.step_name!r} failed to load"
            self.load_failed = True
            raise SidekickLoadError(message, step_name=self.step_name)
        self._conn = (reader, writer)
        self._state = "ready"
        self._last_error = None
        self.link_id = (self.name, self.link_id[1] + 1)

    async def stop(self) -> None:
        self._state = "stopped"
        for task in self._queue.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._close()
        self._queue.fail_waiting(stopped_error(self.step_name))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    # -- requests ----------------------------------------------------------------------
    async def predict(self, table: pa.Table) -> pa.Table:
        return await self._queue.submit(table)

    async def _exchange(self, table: pa.Table) -> pa.Table:
        payload = memoryview(protocol.table_to_ipc(table))
        async with self._lock:
            reader, writer = await self._connection()
            self._busy, self._busy_since = True, time.monotonic()
            try:
                rid = self._send(writer, protocol.REQUEST, payload)
                ftype, body = await self._io(self._send_then_read(writer, reader, rid))
            finally:
                self._end_busy()
        return self._answer(ftype, body)

    def _send(self, writer: asyncio.StreamWriter, ftype: bytes, payload: memoryview) -> int:
        self._last_id = self._last_id % (2**32 - 1) + 1
        link.write(writer, ftype, payload, self._last_id)
        return self._last_id

    async def predict_stream(self, table: pa.Table) -> AsyncIterator[protocol.StreamPart]:
        """A streamed answer (STREAM, then CHUNKs, then the whole answer), as `Sidekick.predict_stream`.
        A consumer that stops early drops this connection: the server reads the rest of the answer
        from the worker itself, and the next request connects again."""
        payload = memoryview(protocol.table_to_ipc(table))
        async with self._lock:
            reader, writer = await self._connection()
            self._busy, self._busy_since = True, time.monotonic()
            finished = False
            try:
                rid = self._send(writer, protocol.STREAM, payload)
                ftype, body = await self._io(self._send_then_read(writer, reader, rid))
                while ftype == protocol.CHUNK:
                    yield protocol.StreamPart(protocol.ipc_to_table(body), final=False)
                    ftype, body = await self._io(self._read_answer(reader, rid))
                finished = True
                yield protocol.StreamPart(self._answer(ftype, body), final=True)
            finally:
                if not finished:
                    self._close()
                self._end_busy()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._conn is None and self._state != "stopped":
            await self._reconnect()
        if self._conn is None:
            raise SidekickCrashedError(f"pod {self.name} of step {self.step_name!r} is not connected "
                                       f"({self._last_error or self._state})", step_name=self.step_name)
        return self._conn

    @classmethod
    async def _send_then_read(cls, writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                              rid: int) -> tuple[bytes, bytes]:
        await writer.drain()
        return await cls._read_answer(reader, rid)

    @staticmethod
    async def _read_answer(reader: asyncio.StreamReader, rid: int) -> tuple[bytes, bytes]:
        """The next frame of request ``rid``'s answer; one of another request is the link out of step."""
        frame = await link.read(reader)
        if frame.rid != rid:
            raise protocol.ProtocolError(f"a frame of request {frame.rid} came while request {rid} was answered")
        return frame.ftype, frame.payload

    async def _io(self, io: Awaitable[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        """One frame of an answer, within the request timeout; a lost or silent server is a crash
        of this replica (the pool retries elsewhere) and its connection is dropped."""
        try:
            return await asyncio.wait_for(io, self.request_timeout_s)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, protocol.ProtocolError) as exc:
            self._close()
            self._state = "failed"
            what = (f"did not answer within {self.request_timeout_s:g}s" if isinstance(exc, TimeoutError)
                    else f"lost the connection ({type(exc).__name__})")
            self._last_error = f"pod {self.name} of step {self.step_name!r} {what}"
            log.warning("%s", self._last_error)
            raise SidekickCrashedError(self._last_error, step_name=self.step_name) from None

    def _end_busy(self) -> None:
        if self._busy:
            self._busy_total += time.monotonic() - self._busy_since
            self._busy = False

    def _answer(self, ftype: bytes, body: bytes) -> pa.Table:
        if ftype == protocol.RESPONSE:
            return protocol.ipc_to_table(body)
        if ftype == protocol.ERROR:
            info = protocol.parse_json_payload(body)
            raise SidekickPredictError(info.get("message") or "unknown error", step_name=self.step_name,
                                       error_type=info.get("type"))
        raise SidekickError(f"pod {self.name} answered with an unexpected frame {ftype!r}", step_name=self.step_name)

    async def _reconnect(self) -> None:
        """One quick attempt (a pod restarted in place keeps its address)."""
        try:
            await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_S * 2)
            self._restarts += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, SidekickError) as exc:
            self._state = "failed"
            self._last_error = f"pod {self.name} ({self.host}:{self.port}) not reachable: {exc or type(exc).__name__}"
