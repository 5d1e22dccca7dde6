"""Rate limits and quotas for web inputs (issue 13), on an injected clock.

A public API key can be used by anyone, so each web input limits requests per client address and
per device (token buckets), and can cap what it accepts per hour (a quota). All state is in
memory, per process: a restart forgets it, and with several nodes each node counts its own.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

DEFAULT_MAX_KEYS = 100_000
"""Buckets remembered per limiter; past this the least recently used is forgotten (it was the
least likely to be near its limit), so memory stays bounded whatever the traffic."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBucketLimiter:
    """``burst`` requests at once per key, refilled at ``per_minute`` a minute."""

    def __init__(self, per_minute: int, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if per_minute < 1 or burst < 1 or max_keys < 1:
            raise ValueError("per_minute, burst and max_keys must be at least 1")
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``: 0.0 when allowed, else the seconds until one is back."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def __len__(self) -> int:
        return len(self._buckets)


class HourlyQuota:
    """At most ``batches`` batches and ``max_bytes`` bytes per clock hour (0: no limit)."""

    def __init__(self, batches: int, max_bytes: int) -> None:
        self._batches = batches
        self._bytes = max_bytes
        self._hour = -1
        self._used_batches = 0
        self._used_bytes = 0

    def take(self, batches: int, size: int, now: float) -> float:
        """Count one request: 0.0 when within the quota, else the seconds until the next hour."""
        hour = int(now // 3600)
        if hour != self._hour:
            self._hour, self._used_batches, self._used_bytes = hour, 0, 0
        over_batches = self._batches and self._used_batches + batches > self._batches
        over_bytes = self._bytes and self._used_bytes + size > self._bytes
        if over_batches or over_bytes:
            return (hour + 1) * 3600 - now
        self._used_batches += batches
        self._used_bytes += size
        return 0.0


def retry_after_seconds(wait: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


__all__ = ["DEFAULT_MAX_KEYS", "Clock", "HourlyQuota", "TokenBucketLimiter", "retry_after_seconds"]
