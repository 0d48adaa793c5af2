"""The listener routes alone on a bare app (`listener_app`), and as a real server process for
restart tests, on the runtime's Database + LogStore in a data dir:

    python tests/listeners/listener_server.py DATA_DIR

Writes ``DATA_DIR/listener_server.json`` ({url, pid}) once listening.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from wallaroo_pulumi.runtime.routes.listeners import router
from wallaroo_pulumi.runtime.services.listeners import ListenerService
from wallaroo_pulumi.runtime.store.db import SqliteDatabase
from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.runtime.wire import http_errors


def listener_app(service: ListenerService) -> FastAPI:
    """An app serving only the listener routes, wired as the runtime wires them."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(lifespan=lifespan)
    app.state.listeners = service
    http_errors.install(app)
    app.include_router(router)
    return app


def main() -> None:
    data = Path(sys.argv[1])
    mode = os.environ.get("LISTENER_EXECUTOR") or "sidekick"
    svc = ListenerService(SqliteDatabase(data / "runtime.db"), LogStore(data / "logs"), executor=mode, tick_seconds=0.1)
    app = listener_app(svc)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    (data / "listener_server.json").write_text(json.dumps({"url": url, "pid": os.getpid(), "executor": mode}))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])


if __name__ == "__main__":
    main()
