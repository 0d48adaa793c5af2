"""The kubelet's log endpoint for pods that `PodRunner` runs (kwok serves none): the API server's
`pods/log` reaches it at the kwok nodes' `daemonEndpoints.kubeletEndpoint.Port`, over TLS, and
gets the container's output as a kubelet gives it (plain lines; `follow=true` streams until the
process has exited)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

#: pod name -> (its log file, whether its process still runs); None: no such pod here
Find = Callable[[str], tuple[Path, Callable[[], bool]] | None]


class PodLogServer:
    def __init__(self, find: Find, cert: Path, key: Path) -> None:
        handler = type("Handler", (_Handler,), {"find": staticmethod(find)})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="pod-logs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    find: Find

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")  # containerLogs/<namespace>/<pod>/<container>
        found = self.find(parts[2]) if len(parts) == 4 and parts[0] == "containerLogs" else None
        if found is None:
            self.send_error(404, "no such pod here")
            return
        path, running = found
        follow = parse_qs(url.query).get("follow") == ["true"]
        self.send_response(200)  # HTTP/1.0: the body ends when the connection closes
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        offset = 0
        while True:
            alive = running()
            data = path.read_bytes()[offset:] if path.exists() else b""
            if data:
                self.wfile.write(data)
                self.wfile.flush()
                offset += len(data)
            if not follow or not alive:
                break
            time.sleep(0.1)
