"""When a step's pool grows or shrinks (``replica_autoscale_min_max``): `Autoscaler` turns
samples of its workers' busy time into one-worker steps under a `ScalePolicy` (docs/decisions.md, D12)."""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"autoscale: expected 1 <= minimum <= maximum, got {self.minimum} and {self.maximum}")
        if not 0 < self.target <= 1:
            raise ValueError(f"autoscale target: expected a share in (0, 1], got {self.target}")


class Autoscaler:
    """Turns utilization samples into +1 / -1 / 0 worker decisions under a `ScalePolicy`."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self._high = 0
        self._low = 0

    def decide(self, replicas: int, utilization: float) -> int:
        p = self.policy
        self._high = self._high + 1 if utilization >= p.target else 0
        self._low = self._low + 1 if utilization < p.target / 2 else 0
        if self._high >= p.up_after and replicas < p.maximum:
            self._high = self._low = 0
            return 1
        if self._low >= p.down_after and replicas > p.minimum:
            self._high = self._low = 0
            return -1
        return 0


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
    return ScalePolicy(minimum=minimum, maximum=config.autoscale_max, target=target)
