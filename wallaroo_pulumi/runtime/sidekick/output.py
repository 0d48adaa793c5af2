"""A worker's stderr: each line redacted, logged at the level it starts with (``WARNING ...``), and
the last lines kept for the messages that say why a worker failed."""

from __future__ import annotations

import asyncio
import collections
import logging

from wallaroo_pulumi.runtime.sidekick.redact import EnvRedactor

_TAIL_LINES = 20
_LEVELS = {
    "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
    "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL,
}


class WorkerOutput:
    """The stderr of one step's workers, one after another (`clear()` at each start)."""

    def __init__(self, step_name: str, redact: EnvRedactor) -> None:
        self.step_name = step_name
        self._redact = redact
        self._log = logging.getLogger(f"wallaroo.sidekick.{step_name}")
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)

    def clear(self) -> None:
        self._tail.clear()

    async def pump(self, proc: asyncio.subprocess.Process) -> None:
        """Read `proc`'s stderr to its end, line by line (a line over 64 KiB in pieces)."""
        assert proc.stderr is not None
        buf = b""
        while True:
            chunk = await proc.stderr.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self.emit(line, proc.pid)
            if len(buf) > 1 << 16:
                self.emit(buf, proc.pid)
                buf = b""
        if buf:
            self.emit(buf, proc.pid)

    def emit(self, raw: bytes, pid: int) -> None:
        text = self._redact(raw.decode("utf-8", "replace").rstrip())
        if not text:
            return
        self._tail.append(text)
        first = text.split(" ", 1)[0]
        level = _LEVELS.get(first, logging.INFO)
        self._log.log(level, "%s", text, extra={"sidekick_step": self.step_name, "sidekick_pid": pid})

    def tail_text(self, lines: int = 5) -> str:
        """``; last output: a | b | c`` from the last `lines` lines, or nothing."""
        if not self._tail:
            return ""
        return "; last output: " + " | ".join(list(self._tail)[-lines:])
