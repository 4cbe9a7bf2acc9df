"""Whether an event is decided at all (streaming/admission.py): erasure and client retries, on the device's
state."""

from __future__ import annotations

from streaming.admission import FORGOTTEN_ON_ERASURE, RECENT_IDS, admit
from streaming.keyed_state import DictState
from tests.streaming.events import event

NOBODY: frozenset[str] = frozenset()


def test_a_new_event_is_admitted_and_remembered():
    state = DictState()
    assert admit(event(0), state, NOBODY) is None
    assert len(state.data["recent_ids"]) == 1


def test_a_client_retry_is_a_duplicate_even_when_the_collector_stamped_it_again():
    state = DictState()
    admit(event(0), state, NOBODY)
    remembered = list(state.data["recent_ids"])
    assert admit(event(0, received_later_s=3), state, NOBODY) == "duplicate_event_id"
    assert state.data["recent_ids"] == remembered  # a retry is not remembered twice


def test_the_same_id_with_another_payload_is_an_id_reused():
    state = DictState()
    admit(event(0), state, NOBODY)
    assert admit(event(0, properties={"category": "books"}), state, NOBODY) == "event_id_reused"


def test_only_the_last_ids_are_remembered():
    state = DictState()
    for i in range(RECENT_IDS + 1):
        assert admit(event(i), state, NOBODY) is None
    assert len(state.data["recent_ids"]) == RECENT_IDS
    assert admit(event(0), state, NOBODY) is None  # forgotten: seconds apart, not days
    assert admit(event(RECENT_IDS), state, NOBODY) == "duplicate_event_id"


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
