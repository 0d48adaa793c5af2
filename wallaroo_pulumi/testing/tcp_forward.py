"""A TCP forwarder on loopback: the tests' stand-in for the LoadBalancer or Ingress in front of a
runtime on the real node (which has no kube-proxy). Each connection goes to the address `target()`
names at that moment (the runtime pod of now, after a restart too); with none, it is closed at once,
as a load balancer with no ready backend refuses."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from wallaroo_pulumi.ports import free_port


class TcpForward:
    """`start()`; `url` (http://127.0.0.1:PORT); `stop()` closes the listener and every open connection."""

    def __init__(self, target: Callable[[], tuple[str, int] | None], host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.target = target
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpForward:
        listener = socket.create_server((self.host, self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="tcp-forward").start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        address = None
        with contextlib.suppress(Exception):  # no backend known (the API unreachable, no pod): refused
            address = self.target()
        try:
            upstream = socket.create_connection(address, timeout=5) if address else None
        except OSError:
            upstream = None
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._open.difference_update((src, dst))

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def __enter__(self) -> TcpForward:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
