"""How the consent an event decides reaches its profile's consent state (:mod:`streaming.consent` keeps it).

* Stage 1 (device): the purposes an event decides, from its ``consent`` map and/or its IAB TCF string (a malformed
  string decides nothing, and says why); decided while the device is anonymous, they are remembered on the device
  and carried on the event that links the device to a profile.
* Stage 2 (profile): what the device carried, then what the event decided, applied to the profile's consent (the
  latest decision per purpose wins), and what is granted now: explicit decisions, else the region's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streaming.consent import ConsentState, InvalidConsentString, purposes_from_tcf
from streaming.contract import Event
from streaming.control_tables import ControlTables
from streaming.decided import ConsentDecisions, Handoff, epoch_ms
from streaming.keyed_state import State
from streaming.policy import CompiledPolicy


def decided_by(event: Event, tcf_purposes: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, bool], str | None]:
    """Purposes an event decides: its TCF string's, then its ``consent`` map's (which wins). A malformed TCF string
    decides nothing; the second value then says why (the ledger's ``consent_note``)."""
    decisions: dict[str, bool] = {}
    note = None
    if event.context.tcf:
        try:
            decisions.update(purposes_from_tcf(event.context.tcf, tcf_purposes))
        except InvalidConsentString as exc:
            note = f"tcf_invalid: {exc}"
    if event.consent:
        decisions.update({k: bool(v) for k, v in event.consent.items()})
    return decisions, note


def on_device(event: Event, state: State, policy: CompiledPolicy, *, user_id: str | None,
              ) -> tuple[ConsentDecisions | None, str | None, dict[str, Any]]:
    """Stage 1: (what this event decided, why its TCF string decided nothing, the device's anonymous consent).

    Only a ``consent`` event or one with a TCF string decides. Decided on a device not linked to a user, the
    decisions are remembered on the device (purpose → ``[granted, at_ms]``) until an event links it.
    """
    if not (event.type == "consent" or event.context.tcf):
        return None, None, state.get("device_consent") or {}
    decisions, note = decided_by(event, policy.tcf_purposes)
    device_consent = state.get("device_consent") or {}
    at_ms = epoch_ms(event.received_at)
    if decisions and not user_id:
        device_consent = {**device_consent, **{purpose: [granted, at_ms] for purpose, granted in decisions.items()}}
        state.set("device_consent", device_consent)
    return (ConsentDecisions(decisions=decisions, at_ms=at_ms) if decisions else None), note, device_consent


def on_profile(handoff: Handoff, state: State, *, source: str) -> tuple[ConsentState, list[str]]:
    """Stage 2: the profile's consent after what the device carried (``source`` ``device``) and what the event
    decided (``source``: the event type); and the purposes that changed."""
    consent = ConsentState.from_dict(state.get("consent"))
    changed: list[str] = []
    carried, own = handoff.device_consent, handoff.consent
    if carried:
        for purpose, (granted, at_ms) in carried.items():
            changed += consent.apply({purpose: granted}, at_ms=at_ms, source="device")
    if own:
        changed += consent.apply(own.decisions, at_ms=own.at_ms, source=source)
    if carried or own:
        state.set("consent", consent.to_dict())
    return consent, changed


def fold_merged(profile_id: str, state: State, control: ControlTables) -> tuple[list[str], list[str]]:
    """Stage 2: the consent of profiles merged into this one (``control.identity``) folded into its consent, once
    per merged profile (the state remembers which): (merged profiles folded now, purposes that changed)."""
    members = control.members_of(profile_id)
    if not members:
        return [], []
    done = state.get("merged_in") or []
    pending = sorted(members.difference(done))
    if not pending:
        return [], []
    consent = ConsentState.from_dict(state.get("consent"))
    changed: list[str] = []
    for member in pending:
        changed += consent.fold(control.merged_consent(member), source=f"merge:{member}")
    state.set("consent", consent.to_dict())
    state.set("merged_in", [*done, *pending])
    return pending, sorted(set(changed))


def granted_now(consent: ConsentState, region: str | None, policy: CompiledPolicy) -> dict[str, bool]:
    """Per purpose, granted now: explicit decisions, else the region's default (unknown region: the strictest)."""
    return consent.effective(region or "UNKNOWN", policy.region_defaults)
