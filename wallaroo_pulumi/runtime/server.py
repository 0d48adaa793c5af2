"""Serve the app with uvicorn (uvloop's event loop, httptools' parser) on a pre-bound socket
(port 0 = pick a free one) and record `{url, pid}` in `<data_dir>/runtime.json`."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys

import uvicorn

from wallaroo_pulumi.runtime.core import memory, memprofile
from wallaroo_pulumi.runtime.core.auth import write_private
from wallaroo_pulumi.runtime.settings import RuntimeSettings


def serve(settings: RuntimeSettings) -> None:
    from wallaroo_pulumi.runtime.app import create_served_app

    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    memprofile.start_from_env(settings.data_dir)
    memory.use_returning_pool()
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    settings.port = sock.getsockname()[1]
    app = create_served_app(settings)  # creates the data dir, db and admin token
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}"
    info_path = settings.data_dir / "runtime.json"
    write_private(info_path, json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    logging.getLogger("wallaroo_pulumi.runtime").info(
        "serving %s (data dir %s, role %s%s)", url, settings.data_dir, settings.role,
        ", admin token from WALLAROO_ADMIN_TOKEN" if settings.admin_token is not None else "",
    )
    config = uvicorn.Config(
        app, log_level=settings.log_level, access_log=False, timeout_graceful_shutdown=10, lifespan="on",
        loop="asyncio" if sys.platform == "win32" else "uvloop", http="httptools",
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
        if not server.started:  # the app's startup failed (logged above): not a clean exit
            raise SystemExit(3)
    finally:
        try:
            current = json.loads(info_path.read_text())
            if current.get("pid") == os.getpid():
                info_path.unlink()
        except (OSError, ValueError):
            pass
