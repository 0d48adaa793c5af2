"""Progress from inside a dynamic provider, sent to the engine's `Log` service so `pulumi up` shows it (D14)."""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import Any

_ADDRESS = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\]):\d+$")
_lock = threading.Lock()
_stub: Any = None
_checked = False


def _engine() -> Any:
    global _stub, _checked
    with _lock:
        if not _checked:
            _checked = True
            address = next((a for a in reversed(sys.argv[1:]) if _ADDRESS.match(a)), None)
            if address:
                import grpc
                from pulumi.runtime.proto import engine_pb2_grpc

                _stub = engine_pb2_grpc.EngineStub(grpc.insecure_channel(address))
        return _stub


def report(message: str, *, ephemeral: bool = False, warning: bool = False) -> None:
    """Show `message` in the CLI's output (stderr when not under the engine)."""
    stub = _engine()
    if stub is None:
        print(message, file=sys.stderr, flush=True)
        return
    from pulumi.runtime.proto import engine_pb2

    severity = engine_pb2.WARNING if warning else engine_pb2.INFO
    try:
        stub.Log(engine_pb2.LogRequest(severity=severity, message=message, ephemeral=ephemeral))
    except Exception:  # noqa: BLE001 - progress must never fail the operation
        print(message, file=sys.stderr, flush=True)


class Throttle:
    """Call `report` at most every `interval` seconds, plus once at 100%."""

    def __init__(self, label: str, interval: float = 1.0) -> None:
        self.label = label
        self.interval = interval
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.interval:
            return
        self.last = now
        pct = 100.0 * done / total if total else 100.0
        report(f"{self.label}: {pct:5.1f}% ({done / 1e6:.1f}/{total / 1e6:.1f} MB)", ephemeral=done < total)
