"""A simulated wire event with its ground truth, and the random helpers every generator step shares.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# --- events --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimEvent:
    """One wire event, its ground truth and when a client would send it."""

    payload: dict[str, Any]
    truth: dict[str, Any]
    send_at: datetime


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _lognormal(rng: random.Random, median: float, sigma: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, median * math.exp(rng.gauss(0.0, sigma))))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
