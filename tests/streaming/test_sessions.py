"""Session features per device, incremental (streaming/sessions.py): the gap, intervals that never go negative,
and the features the hot path stamps (the warehouse recomputes them: tests/integration/test_parity.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streaming.sessions import FEATURES, SESSION_GAP_S, SessionState, update_session

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def fold(state: SessionState, seconds: float, *, type_: str = "track", event: str | None = "Product Viewed",
         properties: dict[str, Any] | None = None) -> tuple[str, dict[str, float]]:
    return update_session(state, device_id="dev", ts=T0 + timedelta(seconds=seconds), type_=type_,
                          event_name=event, properties=properties or {})


def test_the_first_event_starts_a_session_named_after_its_device_and_start():
    session_id, features = fold(SessionState(), 0)
    assert session_id == f"dev:{int(T0.timestamp() * 1000)}"
    assert tuple(features) == FEATURES
    assert features["session_event_count"] == 1.0 and features["seconds_since_prev"] == 0.0


def test_a_gap_longer_than_the_session_gap_starts_a_new_session_and_one_as_long_does_not():
    state = SessionState()
    first, _ = fold(state, 0)
    same, features = fold(state, SESSION_GAP_S)
    assert same == first and features["session_event_count"] == 2.0
    new, features = fold(state, 2 * SESSION_GAP_S + 1)
    assert new != first and features["session_event_count"] == 1.0
    assert features["session_duration_s"] == 0.0


def test_intervals_never_go_negative_when_the_device_clock_goes_back():
    state = SessionState()
    fold(state, 100)
    _, features = fold(state, 40)  # 60 s earlier than the previous event
    assert features["seconds_since_prev"] == 0.0 and features["min_interval_s"] == 0.0
    assert features["session_duration_s"] == 0.0  # the session's last time never moves back
    _, features = fold(state, 130)
    assert features["seconds_since_prev"] == 30.0 and features["session_duration_s"] == 30.0


def test_interval_statistics():
    state = SessionState()
    for t in (0, 10, 20, 40):
        _, features = fold(state, t)
    assert features["mean_interval_s"] == pytest.approx(40 / 3)
    assert features["min_interval_s"] == 10.0
    assert features["interval_std_s"] == pytest.approx(math.sqrt((100 + 100 + 400) / 3 - (40 / 3) ** 2))
    assert features["events_per_minute"] == pytest.approx(4 * 60 / 40)


def test_events_per_minute_counts_at_least_one_second_of_duration():
    state = SessionState()
    fold(state, 0)
    _, features = fold(state, 0.2)
    assert features["events_per_minute"] == 120.0


def test_page_product_and_cart_counters_and_categories():
    state = SessionState()
    fold(state, 0, type_="page", event=None, properties={"category": "shoes"})
    fold(state, 1, properties={"category": "shoes"})
    fold(state, 2, event="Product Added", properties={"price": 20, "quantity": 3, "category": "socks"})
    _, features = fold(state, 3, event="Product Added", properties={"price": 5})
    assert (features["page_views"], features["product_views"], features["cart_adds"]) == (1.0, 1.0, 2.0)
    assert features["cart_value"] == 65.0
    assert features["distinct_categories"] == 2.0


@pytest.mark.parametrize("price", [True, "20", float("nan"), float("inf"), None])
def test_a_price_that_is_not_a_finite_number_adds_nothing(price):
    _, features = fold(SessionState(), 0, event="Product Added", properties={"price": price, "quantity": 2})
    assert features["cart_value"] == 0.0 and features["cart_adds"] == 1.0


def test_a_cart_value_that_overflows_adds_nothing():
    _, features = fold(SessionState(), 0, event="Product Added", properties={"price": 1e308, "quantity": 1e10})
    assert features["cart_value"] == 0.0


def test_state_round_trips_and_a_poisoned_cart_value_is_reset():
    state = SessionState()
    fold(state, 0, event="Product Added", properties={"price": 10})
    assert SessionState.from_dict(state.to_dict()) == state
    assert SessionState.from_dict({**state.to_dict(), "cart_value": float("inf")}).cart_value == 0.0
    assert SessionState.from_dict(None) == SessionState()
