"""Identity at the edge (streaming/identity.py): pseudonymous identifiers, the device's link to a profile, and the
warehouse's merges."""

from __future__ import annotations

from streaming import pii
from streaming.identity import link, pseudonymize
from streaming.keyed_state import DictState
from tests.streaming.events import control, event

SECRET = b"identity-secret-0123"


def test_identifiers_that_are_emails_or_phones_are_pseudonymized_and_others_kept():
    e = event(0, anon="+1 (555) 123-4567", user="Jane@Example.com")
    pseudonymize(e, SECRET)
    assert e.anonymous_id == pii.keyed_hash("+1 (555) 123-4567", SECRET)
    assert e.user_id == pii.keyed_hash("jane@example.com", SECRET)
    kept = event(0, anon="3f2b6c1e-8a4d", user="user-42")
    pseudonymize(kept, SECRET)
    assert (kept.anonymous_id, kept.user_id) == ("3f2b6c1e-8a4d", "user-42")


def test_an_anonymous_device_is_its_own_profile():
    found = link(event(0, anon="d1"), DictState(), control())
    assert (found.user_id, found.profile_id) == (None, "d1")
    assert (found.identity.via, found.identity.linked_now, found.identity.merged_from) == ("anonymous", False, None)


def test_a_user_id_links_the_device_and_its_later_anonymous_events_follow():
    state = DictState()
    first = link(event(0, anon="d1", user="u1", type_="identify"), state, control())
    assert (first.profile_id, first.identity.via, first.identity.linked_now) == ("u1", "user_id", True)
    assert state.data["identity"]["user_id"] == "u1"
    later = link(event(1, anon="d1"), state, control())
    assert (later.user_id, later.profile_id, later.identity.via, later.identity.linked_now) == \
        ("u1", "u1", "device_link", False)
    again = link(event(2, anon="d1", user="u1"), state, control())
    assert again.identity.linked_now is False  # already linked to this user


def test_another_user_on_the_device_relinks_it():
    state = DictState()
    link(event(0, anon="d1", user="u1"), state, control())
    other = link(event(1, anon="d1", user="u2"), state, control())
    assert other.identity.linked_now and other.profile_id == "u2"
    assert link(event(2, anon="d1"), state, control()).profile_id == "u2"


def test_a_warehouse_merge_moves_the_profile_and_says_from_where():
    found = link(event(0, anon="anon-a"), DictState(), control(merges={"anon-a": "u-1"}))
    assert (found.profile_id, found.identity.merged_from) == ("u-1", "anon-a")
    linked = link(event(0, anon="d", user="u-old"), DictState(), control(merges={"u-old": "u-1"}))
    assert (linked.profile_id, linked.user_id, linked.identity.merged_from) == ("u-1", "u-old", "u-old")
