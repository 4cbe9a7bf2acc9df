"""Rate limits per write key: a token bucket per key, refilled at the key's events/s (``FIRSTMILE_RATE_LIMIT_PER_S``
or the key's own rate) up to ``FIRSTMILE_RATE_LIMIT_BURST_S`` seconds of events."""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self, n: int, now: float) -> float:
        """Take ``n`` tokens: 0.0 if allowed, else the seconds until it would be.

        A request larger than the bucket passes when the bucket is full and leaves it in debt, so one large
        batch is never refused forever and the key's average rate still holds.
        """
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        need = min(float(n), self.capacity)
        if tokens >= need:
            self.tokens = tokens - n
            return 0.0
        self.tokens = tokens
        return (need - tokens) / self.rate
