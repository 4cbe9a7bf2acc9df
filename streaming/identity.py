"""Identity at the edge: which profile an event belongs to, decided in stage 1 on the device's state.

An identifier that is itself PII (an email or phone number used as ``userId``) is pseudonymized before it reaches
state, keys or outputs. A device that identified once keeps its profile for its later anonymous events; the
warehouse's cross-device merges (``control.identity``, chains resolved by
:class:`~streaming.control_tables.ControlTables`) move a profile id to the survivor it merged into.
"""

from __future__ import annotations

import msgspec

from streaming import pii
from streaming.contract import Event
from streaming.control_tables import ControlTables
from streaming.decided import Identity, Via, iso
from streaming.keyed_state import State


class Link(msgspec.Struct, frozen=True):
    """The identity decision for one event."""

    #: the event's own user id, else the one its device linked to earlier (the fact ``identified``)
    user_id: str | None
    #: the profile, how it was found, whether this event linked the device: the ledger's ``identity``
    identity: Identity

    @property
    def profile_id(self) -> str:
        return self.identity.profile_id


def pseudonymize(event: Event, secret: bytes) -> None:
    """Replace the event's identifiers that are emails or phone numbers by their keyed hashes (in place)."""
    event.anonymous_id = pii.pseudonymous_id(event.anonymous_id, secret)
    event.user_id = pii.pseudonymous_id(event.user_id, secret)
    event.previous_id = pii.pseudonymous_id(event.previous_id, secret)


def link(event: Event, state: State, control: ControlTables) -> Link:
    """The event's profile: its user id, else its device's earlier link, else the device; then the warehouse's
    merge of that id, if any. An event with a user id the device has not linked to yet (re)links the device."""
    identity = state.get("identity") or {}
    linked_now = False
    if event.user_id and identity.get("user_id") != event.user_id:
        identity = {"user_id": event.user_id, "linked_at": iso(event.received_at)}
        state.set("identity", identity)
        linked_now = True
    user_id = event.user_id or identity.get("user_id")
    profile_id = user_id or event.anonymous_id or event.device_id
    survivor = control.survivor(profile_id)
    merged_from = profile_id if survivor != profile_id else None
    via: Via = "user_id" if event.user_id else "device_link" if user_id else "anonymous"
    return Link(user_id, Identity(profile_id=survivor, linked_now=linked_now,
                                  merged_from=merged_from, via=via))
