"""`SidekickPool`: the workers of one step. Each request goes to the least busy ready worker;
with a `ScalePolicy` the pool grows and shrinks between its bounds (see :mod:`.autoscale`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick.autoscale import Autoscaler, ScalePolicy
from wallaroo_pulumi.runtime.sidekick.placement import Placement
from wallaroo_pulumi.runtime.sidekick.protocol import StreamPart
from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec
from wallaroo_pulumi.runtime.sidekick.supervisor import Sidekick

log = logging.getLogger("wallaroo.sidekick")


class SidekickPool:
    """The workers of one step, placed by ``placement``. With a `ScalePolicy` the pool grows and
    shrinks between its bounds (as far as the placement has room) as its workers' utilization
    asks; with None it keeps ``replicas`` workers."""

    def __init__(self, spec: SidekickSpec, replicas: int, policy: ScalePolicy | None, placement: Placement) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1; got {replicas}")
        if policy is not None:
            policy = placement.fit(spec, policy)
        if policy is not None:  # a fixed replica_count outside the autoscale bounds starts at the nearest bound
            replicas = min(max(replicas, policy.minimum), policy.maximum)
        self.spec = spec
        self.policy = policy
        self._placement = placement
        self._sidekicks = [Sidekick(spec, placement) for _ in range(replicas)]
        self._inflight: dict[Sidekick, int] = dict.fromkeys(self._sidekicks, 0)
        self._next = 0
        self._scaler: asyncio.Task[None] | None = None

    @property
    def sidekicks(self) -> list[Sidekick]:
        return list(self._sidekicks)

    @property
    def replicas(self) -> int:
        return len(self._sidekicks)

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self._sidekicks)

    async def start(self) -> None:
        """Start every replica; if any fails to load, stop them all and raise its error."""
        results = await asyncio.gather(*(s.start() for s in self._sidekicks), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]
        if self.policy is not None:
            self._scaler = asyncio.create_task(self._autoscale(self.policy), name=f"autoscale-{self.spec.step_name}")

    def _choose(self) -> Sidekick:
        n = len(self._sidekicks)
        order = [self._sidekicks[(self._next + i) % n] for i in range(n)]
        for wanted in ("ready", "starting"):
            candidates = [sk for sk in order if sk.state == wanted]
            if candidates:
                best = min(candidates, key=lambda sk: self._inflight[sk])  # ties: round-robin order
                self._next = (self._sidekicks.index(best) + 1) % n
                return best
        self._next = (self._next + 1) % n
        return order[0]

    async def predict(self, table: pa.Table) -> pa.Table:
        sidekick = self._choose()
        self._inflight[sidekick] += 1
        try:
            return await sidekick.predict(table)
        finally:
            if sidekick in self._inflight:  # not when _shrink gave up waiting and stopped it
                self._inflight[sidekick] -= 1

    async def predict_stream(self, table: pa.Table) -> AsyncIterator[StreamPart]:
        """A streamed answer from the least busy worker (`Sidekick.predict_stream`)."""
        sidekick = self._choose()
        self._inflight[sidekick] += 1
        try:
            async with contextlib.aclosing(sidekick.predict_stream(table)) as parts:
                async for part in parts:
                    yield part
        finally:
            if sidekick in self._inflight:
                self._inflight[sidekick] -= 1

    async def _autoscale(self, policy: ScalePolicy) -> None:
        scaler = Autoscaler(policy)
        while True:  # each sample starts after the last change, so it measures the pool as it is now
            seen = {sk: sk.busy_seconds for sk in self._sidekicks}
            since = time.monotonic()
            await asyncio.sleep(policy.interval_s)
            live = [sk for sk in self._sidekicks if sk.state == "ready"]
            busy = sum(sk.busy_seconds - seen.get(sk, sk.busy_seconds) for sk in live)
            utilization = min(1.0, busy / ((time.monotonic() - since) * len(live))) if live else 0.0
            # queued or answering, per worker slot: one batch on each of a worker's slots is a depth of 1 (D61)
            depth = sum(self._inflight[sk] / sk.concurrency for sk in live) / len(live) if live else 0.0
            change = scaler.decide(len(self._sidekicks), utilization, depth)
            if change:
                log.info("step %s: %d -> %d workers (utilization %.0f%%, target %.0f%%)", self.spec.step_name,
                         len(self._sidekicks), len(self._sidekicks) + change, utilization * 100, policy.target * 100)
                await (self._grow() if change > 0 else self._shrink())

    async def _grow(self) -> None:
        sidekick = Sidekick(self.spec, self._placement)
        self._sidekicks.append(sidekick)  # listed while it starts, so that stop() stops it too
        self._inflight[sidekick] = 0
        try:
            await sidekick.start()
        except Exception as exc:  # noqa: BLE001 - the pool keeps serving with the workers it has
            log.warning("step %s: an added worker failed to start: %s", self.spec.step_name, exc)
            self._sidekicks.remove(sidekick)
            del self._inflight[sidekick]
            await sidekick.stop()

    async def _shrink(self) -> None:
        """The newest worker leaves: no new requests go to it, and it stops once it has answered
        the ones it has (never more than a minute of waiting)."""
        sidekick = self._sidekicks.pop()
        deadline = time.monotonic() + 60
        try:
            while (self._inflight[sidekick] or sidekick.busy or sidekick.waiting) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:  # also when stop() cancels this: the worker is off the list, so stop() would miss it
            await asyncio.shield(sidekick.stop())
            del self._inflight[sidekick]

    async def stop(self) -> None:
        if self._scaler is not None:
            self._scaler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scaler
        await asyncio.gather(*(s.stop() for s in self._sidekicks), return_exceptions=True)
