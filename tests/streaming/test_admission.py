"""Whether an event is decided at all (streaming/admission.py): erasure and client retries, on the device's
state."""

from __future__ import annotations

from streaming.admission import FORGOTTEN_ON_ERASURE, MAX_REMEMBERED, RETRY_WINDOW_S, admit
from streaming.keyed_state import DictState
from tests.streaming.events import event

NOBODY: frozenset[str] = frozenset()


def test_a_new_event_is_admitted_and_remembered():
    state = DictState()
    assert admit(event(0), state, NOBODY) is None
    assert remembered(state) == 1


def test_a_client_retry_is_a_duplicate_even_when_the_collector_stamped_it_again():
    state = DictState()
    admit(event(0), state, NOBODY)
    before = state.data["recent_ids"]
    assert admit(event(0, received_later_s=3), state, NOBODY) == "duplicate_event_id"
    assert state.data["recent_ids"] == before  # a retry is not remembered twice


def test_the_same_id_with_another_payload_is_an_id_reused():
    state = DictState()
    admit(event(0), state, NOBODY)
    assert admit(event(0, properties={"category": "books"}), state, NOBODY) == "event_id_reused"


def remembered(state: DictState) -> int:
    """Events the device remembers (20 characters each)."""
    return len(state.data["recent_ids"]) // 20


def test_a_whole_retried_queue_is_recognised_event_by_event():
    """A mobile SDK re-sends its queue (100 events per request, up to 1,000 queued): every copy is a retry."""
    state = DictState()
    queue = range(300)
    assert all(admit(event(i, seconds=0.5), state, NOBODY) is None for i in queue)
    assert [admit(event(i, seconds=0.5, received_later_s=600), state, NOBODY) for i in queue] == \
        ["duplicate_event_id"] * 300
    assert remembered(state) == 300


def test_the_window_is_bounded_in_time_and_in_count():
    state = DictState()
    for i in range(MAX_REMEMBERED + 10):
        assert admit(event(i, seconds=1), state, NOBODY) is None
    assert remembered(state) == MAX_REMEMBERED
    assert admit(event(5, seconds=1), state, NOBODY) is None  # the oldest went: a new event to us
    assert admit(event(MAX_REMEMBERED + 9, seconds=1), state, NOBODY) == "duplicate_event_id"
    later = DictState()
    admit(event(0), later, NOBODY)
    admit(event(1, received_later_s=RETRY_WINDOW_S + 60), later, NOBODY)  # a day later: the first has expired
    assert remembered(later) == 1
    assert admit(event(0, received_later_s=RETRY_WINDOW_S + 61), later, NOBODY) is None


def test_an_erased_person_erases_the_device_and_its_later_anonymous_events():
    state = DictState()
    admit(event(0, anon="d"), state, NOBODY)
    state.set("identity", {"user_id": "u-gone"})
    state.set("session", {"count": 3})
    assert admit(event(1, anon="d", user="u-gone"), state, frozenset({"u-gone"})) == "erased"
    assert state.data["erased"] is True
    assert all(state.data[part] is None for part in FORGOTTEN_ON_ERASURE)
    assert admit(event(2, anon="d"), state, NOBODY) == "erased"


def test_an_erased_anonymous_id_is_erased_and_erasure_wins_over_a_retry():
    state = DictState()
    admit(event(0, anon="a-gone"), state, NOBODY)
    assert admit(event(0, anon="a-gone"), state, frozenset({"a-gone"})) == "erased"
