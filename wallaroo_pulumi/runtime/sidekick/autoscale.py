"""When a step's pool grows or shrinks (``replica_autoscale_min_max``): `Autoscaler` turns
samples of its workers' busy time (D12), or with ``scale_up_queue_depth`` of its queue depth (D46),
into one-worker steps under a `ScalePolicy`."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from wallaroo_pulumi.deployment import DeploymentConfig

DEFAULT_TARGET_PCT = 75.0


@dataclass(frozen=True)
class ScalePolicy:
    minimum: int
    maximum: int
    target: float = DEFAULT_TARGET_PCT / 100
    interval_s: float = 1.0
    up_after: int = 3
    down_after: int = 30
    queue_up: int | None = None  # queue depth per worker (queued + in flight) that grows the pool; None: busy time
    queue_down: int = 1
    window_s: float = 300.0  # the queue depth is averaged over this long

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"autoscale: expected 1 <= minimum <= maximum, got {self.minimum} and {self.maximum}")
        if not 0 < self.target <= 1:
            raise ValueError(f"autoscale target: expected a share in (0, 1], got {self.target}")
        if self.queue_up is not None and not 1 <= self.queue_down <= self.queue_up:
            raise ValueError(f"queue-depth autoscale: expected 1 <= scale_down ({self.queue_down}) <= scale_up "
                             f"({self.queue_up})")
        if self.window_s <= 0:
            raise ValueError(f"autoscaling window: expected seconds > 0, got {self.window_s}")


class BusyClock:
    """One worker's busy time, the sample `Autoscaler` scales on: the batches answered so far and
    those in flight. A worker that answers ``slots`` batches at once (D61) is busy in proportion:
    one batch of four slots counts a quarter of the time it takes, four count all of it."""

    def __init__(self) -> None:
        self.slots = 1
        self._running = 0
        self._since = 0.0
        self._total = 0.0

    @property
    def busy(self) -> bool:
        return self._running > 0

    def _share(self) -> float:
        return min(self._running, self.slots) / self.slots

    def _advance(self) -> None:
        now = time.monotonic()
        if self._running:
            self._total += (now - self._since) * self._share()
        self._since = now

    def start(self) -> None:
        self._advance()
        self._running += 1

    def stop(self) -> None:
        if self._running:
            self._advance()
            self._running -= 1

    @property
    def seconds(self) -> float:
        return self._total + ((time.monotonic() - self._since) * self._share() if self._running else 0.0)


class Autoscaler:
    """Turns utilization samples into +1 / -1 / 0 worker decisions under a `ScalePolicy`."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self._high = 0
        self._low = 0
        self._depths: collections.deque[float] = collections.deque(maxlen=max(1, round(policy.window_s / policy.interval_s)))

    def decide(self, replicas: int, utilization: float, queue_depth: float = 0.0) -> int:
        """+1, -1 or 0 workers after one sample: busy share of the workers, or requests per worker."""
        p = self.policy
        if p.queue_up is not None:
            return self._by_queue(replicas, queue_depth, p.queue_up)
        self._high = self._high + 1 if utilization >= p.target else 0
        self._low = self._low + 1 if utilization < p.target / 2 else 0
        if self._high >= p.up_after and replicas < p.maximum:
            self._high = self._low = 0
            return 1
        if self._low >= p.down_after and replicas > p.minimum:
            self._high = self._low = 0
            return -1
        return 0

    def _by_queue(self, replicas: int, depth: float, up: int) -> int:
        """Once a window of samples is in: grow at an average of `up` or more, shrink below `queue_down`."""
        self._depths.append(depth)
        if len(self._depths) < (self._depths.maxlen or 1):
            return 0
        average = sum(self._depths) / len(self._depths)
        change = 1 if average >= up and replicas < self.policy.maximum else (
            -1 if average < self.policy.queue_down and replicas > self.policy.minimum else 0)
        if change:
            self._depths.clear()  # the next window measures the pool as it is now
        return change


def policy_for(config: DeploymentConfig) -> ScalePolicy | None:
    """The policy a deployment config asks for; None when its pools keep a fixed size.

    The floor is ``autoscale_min`` but at least one worker: a step scaled to zero would make
    the next request wait for a model load, which an inference endpoint should not do."""
    if config.autoscale_max is None:
        return None
    minimum = max(1, config.autoscale_min or 0)
    if config.autoscale_max <= minimum:
        return None
    target = (config.autoscale_cpu_utilization or DEFAULT_TARGET_PCT) / 100
    if config.scale_up_queue_depth is not None:
        return ScalePolicy(minimum=minimum, maximum=config.autoscale_max, target=target,
                           queue_up=config.scale_up_queue_depth, queue_down=config.scale_down_queue_depth or 1,
                           window_s=float(config.autoscaling_window or 300))
    return ScalePolicy(minimum=minimum, maximum=config.autoscale_max, target=target)
