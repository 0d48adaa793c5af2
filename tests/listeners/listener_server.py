"""A real server process for restart tests: the listener service's router on uvicorn, on the
runtime's Database + LogStore in a data dir.

    python tests/listeners/listener_server.py DATA_DIR

Writes ``DATA_DIR/listener_server.json`` ({url, pid}) once listening.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from wallaroo_pulumi.runtime.db import Database
from wallaroo_pulumi.runtime.listeners import ListenerService
from wallaroo_pulumi.runtime.logstore import LogStore


def main() -> None:
    data = Path(sys.argv[1])
    mode = os.environ.get("LISTENER_EXECUTOR") or "sidekick"
    svc = ListenerService(Database(data / "runtime.db"), LogStore(data / "logs"), executor=mode, tick_seconds=0.1)
    app = FastAPI()
    app.include_router(svc.router)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    (data / "listener_server.json").write_text(json.dumps({"url": url, "pid": os.getpid(), "executor": mode}))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])


if __name__ == "__main__":
    main()
