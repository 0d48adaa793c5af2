"""The adapters' HTTP transport (D64) over real sockets: keep-alive connections are reused, a refused
connection and a stream cut mid-answer come out as the adapters' connection errors (retried, or the
text so far with the error), and a streamed answer's lines arrive as they are sent."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from wallaroo_pulumi.adapters.openai_chat import OpenAIChatAdapter
from wallaroo_pulumi.adapters.transport import Transport
from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.standins import DEFAULT_API_KEY, DEFAULT_MODEL, OpenAIStandin

from .conftest import FAST_RETRY


class RawServer:
    """A TCP server on loopback that answers each connection with `handle(conn)`; counts connections."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._handle = handle
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += conn.recv(65536)
    return body


def _event(text: str) -> bytes:
    obj = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": DEFAULT_MODEL,
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    data = f"data: {json.dumps(obj)}\n\n".encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.fixture
def cut_stream() -> Iterator[RawServer]:
    """Answers a streamed chat call with two content events, then drops the connection mid-body."""

    def handle(conn: socket.socket) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.sendall(_event("half"))
            time.sleep(0.05)
            conn.sendall(_event(" an answer"))
            time.sleep(0.05)

    server = RawServer(handle)
    yield server
    server.close()


def _adapter(base_url: str, **extra: str) -> OpenAIChatAdapter:
    env = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": DEFAULT_API_KEY, "OPENAI_MODEL": DEFAULT_MODEL,
           **FAST_RETRY, **extra}
    return OpenAIChatAdapter.from_env(env)


def test_sequential_calls_reuse_one_keep_alive_connection(openai_server: OpenAIStandin) -> None:
    transport = Transport(5.0, 5.0, max_connections=2)
    try:
        url = f"{openai_server.openai_base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
        body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
        replies = [transport.post(url, body, headers) for _ in range(5)]
        assert [r.status_code for r in replies] == [200] * 5
        assert replies[0].json()["choices"][0]["message"]["content"] == "echo: hi"
        with transport.stream(url, {**body, "stream": True}, headers) as reply:
            lines = list(reply.iter_lines())
        assert lines[-2:] == ["data: [DONE]", ""]
        assert transport.post(url, body, headers).status_code == 200
    finally:
        transport.close()
    ports = {r.client_port for r in openai_server.stats.recent if r.path == "/v1/chat/completions"}
    assert len(ports) == 1, f"each call opened a connection of its own: client ports {sorted(ports)}"


def test_a_refused_connection_is_a_connection_error_and_retried() -> None:
    port = free_port()  # nothing listens there
    with _adapter(f"http://127.0.0.1:{port}/v1", MAX_RETRIES="1") as adapter:
        out = adapter.predict({"text": np.array(["hello"], dtype=object)})
    error = out["error"][0]
    assert error.startswith("openai: connection error (ConnectError: ") and error.endswith("after 2 attempts"), error


def test_a_stream_cut_mid_answer_keeps_the_text_so_far_and_says_why(cut_stream: RawServer) -> None:
    call = json.dumps({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    with _adapter(f"http://127.0.0.1:{cut_stream.port}/v1") as adapter:
        parts = adapter.predict_stream({"text": np.array(["hi"], dtype=object),
                                        "openai_request": np.array([call], dtype=object)})
        seen, t0 = [], time.monotonic()
        try:
            while True:
                chunk = next(parts)
                seen.append((chunk["delta"][0], time.monotonic() - t0))
        except StopIteration as done:
            final = done.value
    assert [text for text, _ in seen] == ["half", " an answer"]
    assert seen[1][1] - seen[0][1] >= 0.04  # each line as it came, not the body at its end
    assert final["generated_text"][0] == "half an answer"
    assert final["error"][0].startswith("openai: connection error mid-stream ("), final["error"][0]
    assert cut_stream.accepted == 1  # a stream that began is not retried
