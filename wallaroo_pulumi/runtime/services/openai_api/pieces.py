"""A streamed answer's pieces on their way to the caller: sent as they come, or, with response
guardrails, held and let through in checked batches (D45) so that none reaches the caller
unchecked; the first policy that fires cuts the stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa

from wallaroo_pulumi.runtime.services.guardrails.screen import Finding
from wallaroo_pulumi.runtime.services.openai_api import guarded

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.services.openai_api.call import Call


class Pieces:
    def __init__(self, call: Call, put: Callable[[bytes | None], None], first_sent: Callable[[], None]) -> None:
        self.call = call
        self.put = put
        self.first_sent = first_sent  # called once, as the first piece goes out
        self.guard = call.guard if call.guard is not None and call.guard.checks_response else None
        self.include = call.request.include_usage
        self.score: guarded.Scorer | None = None  # the later steps on a text so far (set per streamed model)
        self.sent = 0  # pieces the caller has
        self.restart()

    def restart(self) -> None:
        """Forget what a model streamed that never reached the caller (a fallback goes on to the next)."""
        self.held: list[str] = []  # pieces not yet checked
        self.so_far = ""
        self.finish: str | None = None
        self.stopped: Finding | None = None

    def send(self, delta: str) -> None:
        if not self.sent:
            self.first_sent()
        self.put(self.call.answer.delta(delta, first=not self.sent, include_usage=self.include))
        self.sent += 1

    def flush(self) -> None:
        for piece in self.held:
            self.send(piece)
        self.held = []

    async def take(self, chunk: pa.Table) -> None:
        """A chunk of the model's stream (`delta`, `finish_reason` per piece): out, or held for the next check."""
        for delta, reason in zip(chunk.column("delta").to_pylist(), chunk.column("finish_reason").to_pylist(), strict=True):
            self.finish = reason or self.finish
            if delta and self.guard is None:
                self.send(delta)
            elif delta:
                self.held.append(delta)
                self.so_far += delta
                if self.guard.spec.streaming == "check" and len(self.held) >= self.guard.spec.check_every:
                    assert self.score is not None
                    fired = await guarded.fired(self.guard, self.so_far, self.score)
                    if fired is not None:
                        self.stopped = guarded.cut(fired, self.sent)
                        self.call.findings.append(self.stopped)
                        return
                    self.flush()
