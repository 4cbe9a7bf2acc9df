"""One state entry per key (streaming/keyed_state.py): read once, written once, and only when something changed."""

from __future__ import annotations

from typing import Any

from streaming.keyed_state import DictState, PackedState


class CountingState(DictState):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def set(self, key: str, value: Any) -> None:
        self.writes += 1
        super().set(key, value)


def test_parts_are_written_as_one_entry_on_flush_only():
    state = CountingState()
    packed = PackedState(state, "device")
    packed.set("identity", {"user_id": "u1"})
    packed.set("session", {"count": 1})
    assert state.writes == 0
    packed.flush()
    assert state.writes == 1 and state.data == {"device": {"identity": {"user_id": "u1"}, "session": {"count": 1}}}


def test_nothing_is_written_when_nothing_changed():
    state = CountingState()
    state.data["device"] = {"identity": {"user_id": "u1"}}
    packed = PackedState(state, "device")
    assert packed.get("identity") == {"user_id": "u1"}
    packed.flush()
    assert state.writes == 0


def test_a_part_set_to_none_is_dropped_and_reads_as_the_default():
    state = DictState()
    state.data["device"] = {"identity": {"user_id": "u1"}, "session": {"count": 2}}
    packed = PackedState(state, "device")
    packed.set("session", None)
    assert packed.get("session", "default") == "default"
    packed.flush()
    assert state.data == {"device": {"identity": {"user_id": "u1"}}}


def test_changes_before_flush_do_not_reach_the_stored_entry():
    state = DictState()
    state.data["profile"] = {"segment": "a"}
    packed = PackedState(state, "profile")
    packed.set("segment", "b")
    assert state.data["profile"] == {"segment": "a"}  # an event that raises before flush leaves it as it was
