"""Per-key limits as token buckets: requests per minute, and LLM tokens per minute and per day.
A request is refused (429, Retry-After) while a bucket is empty; tokens are charged after the
call, when the upstream has said how many it spent, so one call may overdraw a bucket (D32)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter

from wallaroo_pulumi.runtime.services.access.errors import RateLimited
from wallaroo_pulumi.runtime.services.access.keys import ApiKey

MINUTE, DAY = 60.0, 86_400.0


class TokenBucket:
    """`capacity` units, refilled continuously at `capacity / period_s` per second."""

    def __init__(self, capacity: float, period_s: float) -> None:
        self.capacity = capacity
        self.rate = capacity / period_s
        self.level = capacity
        self.at = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_s(self, cost: float, now: float) -> float:
        """0 when `cost` fits now, else the seconds until it would."""
        self._refill(now)
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        """Spend `amount`, overdrawing if need be (the debt is paid back by the refill)."""
        self._refill(now)
        self.level -= amount


class Limiter:
    """The buckets of every key with limits, in this process (replicas each count their own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._buckets: dict[tuple[int, str], TokenBucket] = {}
        self.refused = Counter("wallaroo_rate_limited_total", "Requests refused with 429, by key and limit",
                               ["key_id", "limit"], registry=registry)

    def _bucket(self, key_id: int, limit: str, capacity: int, period_s: float) -> TokenBucket:
        bucket = self._buckets.get((key_id, limit))
        if bucket is None or bucket.capacity != capacity:  # new, or the key's limit changed
            bucket = self._buckets[(key_id, limit)] = TokenBucket(capacity, period_s)
        return bucket

    def admit(self, key: ApiKey, infers: bool) -> None:
        """Take one request from the key's budget, or raise RateLimited. Inference also needs
        LLM tokens left (at least one) in each token budget."""
        limits, now = key.limits, time.monotonic()
        checks = [("tokens_per_minute", limits.tokens_per_minute, MINUTE, "LLM tokens per minute"),
                  ("tokens_per_day", limits.tokens_per_day, DAY, "LLM tokens per day")] if infers else []
        for name, capacity, period, what in checks:
            if capacity is not None:
                wait = self._bucket(key.id, name, capacity, period).wait_s(1, now)
                if wait > 0:
                    self.refused.labels(str(key.id), name).inc()
                    raise RateLimited(f"{key.label} is over its limit of {capacity} {what}", wait)
        if limits.requests_per_minute is not None:
            bucket = self._bucket(key.id, "requests_per_minute", limits.requests_per_minute, MINUTE)
            wait = bucket.wait_s(1, now)
            if wait > 0:
                self.refused.labels(str(key.id), "requests_per_minute").inc()
                raise RateLimited(f"{key.label} is over its limit of {limits.requests_per_minute} requests per minute", wait)
            bucket.take(1, now)

    def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        """Spend the LLM tokens a call of this key used."""
        if tokens <= 0:
            return
        now = time.monotonic()
        for name, capacity, period in (("tokens_per_minute", key.limits.tokens_per_minute, MINUTE),
                                       ("tokens_per_day", key.limits.tokens_per_day, DAY)):
            if capacity is not None:
                self._bucket(key.id, name, capacity, period).take(tokens, now)
