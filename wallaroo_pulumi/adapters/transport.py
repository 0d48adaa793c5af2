"""The adapters' HTTP transport to their upstream: a pool of keep-alive connections over urllib3,
shared by the threads of one adapter. Plain requests are read whole; streamed ones are read line by
line as the upstream sends them. Errors come out as this module's own, so the adapters' retry loop
does not depend on the library underneath (D64: half httpx's CPU per upstream call)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError
from urllib3.exceptions import ProtocolError as Urllib3ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError


class TransportError(Exception):
    """The upstream could not be reached, or the connection broke (worth a retry)."""


class ConnectError(TransportError):
    pass


class RemoteProtocolError(TransportError):
    pass


class UpstreamTimeout(TransportError):
    """No answer (or no next byte of it) within the request timeout."""


class ConnectTimeout(UpstreamTimeout):
    pass


class ReadTimeout(UpstreamTimeout):
    pass


def _translated(exc: HTTPError) -> TransportError:
    message = str(exc)
    if message.startswith("<") and ">: " in message:  # "<HTTPConnection object at 0x..>: why"
        message = message.split(">: ", 1)[1]
    if isinstance(exc, NewConnectionError):  # (urllib3 makes it a ConnectTimeoutError too)
        return ConnectError(message)
    if isinstance(exc, ConnectTimeoutError):
        return ConnectTimeout(message)
    if isinstance(exc, ReadTimeoutError | Urllib3TimeoutError):
        return ReadTimeout(message)
    if isinstance(exc, Urllib3ProtocolError):
        return RemoteProtocolError(message)
    return TransportError(f"{type(exc).__name__}: {message}")


class Reply:
    """An upstream's answer: status, headers (any case), and its body, whole or line by line."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self.status_code: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self._body: bytes | None = None
        self.ended = False  # the body was read to its end

    @property
    def reason_phrase(self) -> str:
        reason = self._response.reason or ""
        if not reason:
            with contextlib.suppress(ValueError):
                reason = HTTPStatus(self.status_code).phrase
        return reason

    def read(self) -> bytes:
        if self._body is None:
            try:
                self._body = self._response.data
            except HTTPError as exc:
                raise _translated(exc) from exc
        return self._body

    @property
    def text(self) -> str:
        return self.read().decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.read())

    def iter_lines(self) -> Iterator[str]:
        """The body's lines as they arrive (without their line ends)."""
        rest = b""
        try:
            while chunk := self._response.read1(65536):
                rest += chunk
                *lines, rest = rest.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace").rstrip("\r")
            self.ended = True
        except HTTPError as exc:
            raise _translated(exc) from exc
        if rest:
            yield rest.decode("utf-8", errors="replace").rstrip("\r")


class Transport:
    """Keep-alive connections to any host, at most `max_connections` per host; no redirects, no
    retries (the adapters retry on their own terms)."""

    def __init__(self, timeout_s: float, connect_timeout_s: float, max_connections: int) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=16, maxsize=max_connections, block=False, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=timeout_s),
        )

    def _open(self, url: str, body: Any, headers: Mapping[str, str], params: Mapping[str, str] | None,
              stream: bool) -> Reply:
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        try:
            response = self._pool.request(
                "POST", url, body=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers},
                preload_content=not stream, redirect=False,
            )
        except HTTPError as exc:
            raise _translated(exc) from exc
        return Reply(response)

    def post(self, url: str, body: Any, headers: Mapping[str, str], params: Mapping[str, str] | None = None) -> Reply:
        """POST `body` as JSON; the answer read whole."""
        return self._open(url, body, headers, params, stream=False)

    @contextlib.contextmanager
    def stream(self, url: str, body: Any, headers: Mapping[str, str],
               params: Mapping[str, str] | None = None) -> Iterator[Reply]:
        """POST `body` as JSON; the answer read as it comes. The connection goes back to the pool
        when the body was read to its end, else it is closed."""
        reply = self._open(url, body, headers, params, stream=True)
        try:
            yield reply
        finally:
            if reply.ended:
                reply._response.release_conn()
            else:
                reply._response.close()

    def close(self) -> None:
        self._pool.clear()
