"""Session features, per device, computed incrementally per event ("session so far").

One definition, two engines: ``dbt_project/models/intermediate/int_session_features.sql`` computes the same
features over history with window functions, and ``tests/integration/test_parity.py`` compares both per event.
The definition (keep the SQL in step with it):

* events of one device are taken in arrival order (``raw_partition``, ``raw_offset`` of ``events.raw``);
* a new session starts when the event time is more than ``SESSION_GAP_S`` after the previous event's;
* an interval is ``max(0, t - t_prev)`` in seconds (device clocks go backwards; intervals never do);
* ``session_id`` is ``<device_id>:<epoch ms of the session's first event>``;
* only live events make sessions: an event received more than ``LIVE_LAG_S`` after its event time (an import, a
  backfill, a replay, a queue flushed after days offline) is a session of its own (count 1, no interval) and never
  counts toward the live session's rate or regularity, so history imported at day granularity is not a flood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SESSION_GAP_S = 30 * 60
#: An event received more than this long after it happened is history, not live behaviour.
LIVE_LAG_S = 10 * 60

#: The features the hot path stamps on every event and the warehouse recomputes. Order is the model's order.
FEATURES: tuple[str, ...] = (
    "session_event_count",
    "session_duration_s",
    "seconds_since_prev",
    "mean_interval_s",
    "interval_std_s",
    "min_interval_s",
    "events_per_minute",
    "page_views",
    "product_views",
    "cart_adds",
    "cart_value",
    "distinct_categories",
)


@dataclass
class SessionState:
    """What the hot path keeps per device between events (JSON-serializable via :meth:`to_dict`)."""

    session_start_ms: int = 0
    last_ms: int = 0
    count: int = 0
    sum_interval: float = 0.0
    sum_sq_interval: float = 0.0
    min_interval: float = 0.0
    page_views: int = 0
    product_views: int = 0
    cart_adds: int = 0
    cart_value: float = 0.0
    categories: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SessionState:
        if not data:
            return cls()
        state = cls(**data)
        if not isinstance(state.cart_value, int | float) or not math.isfinite(state.cart_value):
            state.cart_value = 0.0  # written before the overflow guard: never let it poison later events
        return state


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return float(value)


def is_live(ts: datetime, received_at: datetime) -> bool:
    """Whether an event is live behaviour (received within ``LIVE_LAG_S`` of when it happened)."""
    # in whole milliseconds, as the warehouse compares them (epoch_ms)
    return int(received_at.timestamp() * 1000) - int(ts.timestamp() * 1000) <= LIVE_LAG_S * 1000


def update_session(state: SessionState, *, device_id: str, ts: datetime, type_: str, event_name: str | None,
                   properties: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """Fold one live event into the device's session; return (session_id, features so far). Mutates ``state``.
    (An event that is not live is folded into a fresh ``SessionState`` the caller does not keep.)"""
    now_ms = int(ts.timestamp() * 1000)
    if state.count == 0 or (now_ms - state.last_ms) / 1000.0 > SESSION_GAP_S:
        state.__init__()  # type: ignore[misc]
        state.session_start_ms = now_ms
        state.last_ms = now_ms
        interval = 0.0
    else:
        interval = max(0.0, (now_ms - state.last_ms) / 1000.0)
        state.sum_interval += interval
        state.sum_sq_interval += interval * interval
        state.min_interval = interval if state.count == 1 else min(state.min_interval, interval)
        state.last_ms = max(state.last_ms, now_ms)
    state.count += 1
    if type_ == "page":
        state.page_views += 1
    elif type_ == "track":
        if event_name == "Product Viewed":
            state.product_views += 1
        elif event_name == "Product Added":
            state.cart_adds += 1
            amount = _num(properties.get("price")) * (_num(properties.get("quantity")) or 1.0)
            # price × quantity can overflow to inf (hostile input); JSON has no inf, so it would come back null
            state.cart_value += amount if math.isfinite(amount) else 0.0
    category = properties.get("category")
    if isinstance(category, str) and category and category not in state.categories:
        state.categories.append(category)

    n_intervals = state.count - 1
    duration = (state.last_ms - state.session_start_ms) / 1000.0
    mean = state.sum_interval / n_intervals if n_intervals else 0.0
    var = state.sum_sq_interval / n_intervals - mean * mean if n_intervals else 0.0
    features = {
        "session_event_count": float(state.count),
        "session_duration_s": duration,
        "seconds_since_prev": interval,
        "mean_interval_s": mean,
        "interval_std_s": math.sqrt(var) if var > 0 else 0.0,
        "min_interval_s": state.min_interval,
        "events_per_minute": state.count * 60.0 / max(duration, 1.0),
        "page_views": float(state.page_views),
        "product_views": float(state.product_views),
        "cart_adds": float(state.cart_adds),
        "cart_value": round(state.cart_value, 6),
        "distinct_categories": float(len(state.categories)),
    }
    return f"{device_id}:{state.session_start_ms}", features
