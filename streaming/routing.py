"""Routing and personalization, decided in stage 2 (keyed by profile) after consent.

A destination receives an event only if every purpose it requires is granted now and its condition holds;
a condition that raises withholds it (fail-closed: ``condition_error``). An erased profile (an erasure that
arrived between the stages) goes nowhere. The personalization segment is the first one whose condition holds.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streaming.policy import CompiledPolicy, Segment
from streaming.scoring import holds

SENT = "sent"
CONDITION_FALSE = "condition_false"
CONDITION_ERROR = "condition_error"
ERASED_PROFILE = "erased_profile"
CONSENT_MISSING = "consent_missing:"


class Routing(msgspec.Struct, frozen=True):
    #: destinations that receive the event, in the policy's order
    chosen: list[str]
    #: destination → why (:data:`SENT`, :data:`CONDITION_FALSE`, :data:`CONDITION_ERROR`, :data:`ERASED_PROFILE`,
    #: ``consent_missing:<purposes>``): the ledger's ``destinations``
    reasons: dict[str, str]
    #: enforced route rules that held; None when the profile is erased (no rule is evaluated)
    route_rules_fired: list[str] | None = None
    #: route rules in shadow mode that held
    shadow_rules_fired: list[str] | None = None


def route(policy: CompiledPolicy, facts: dict[str, Any], granted: dict[str, bool],
          errors: list[dict[str, str]], *, erased: bool = False) -> Routing:
    """Where the event goes and why, per destination of the policy (nowhere for an erased profile)."""
    if erased:
        return Routing([], {r.destination: ERASED_PROFILE for r in policy.routes})
    extra = {r.id: r for r in policy.route_rules if holds(r.predicate, facts, r.id, errors)}
    chosen: list[str] = []
    reasons: dict[str, str] = {}
    for r in policy.routes:
        missing = [p for p in r.purposes if not granted.get(p)]
        if missing:
            reasons[r.destination] = CONSENT_MISSING + ",".join(missing)
        elif holds(r.predicate, facts, f"routing.{r.destination}", errors):
            chosen.append(r.destination)
            reasons[r.destination] = SENT
        elif errors and errors[-1]["rule"] == f"routing.{r.destination}":
            reasons[r.destination] = CONDITION_ERROR  # fail-closed: never delivered on an error
        else:
            reasons[r.destination] = CONDITION_FALSE
    return Routing(chosen, reasons, [rid for rid, r in extra.items() if r.mode == "enforce"],
                   [rid for rid, r in extra.items() if r.mode == "shadow"])


def segment_for(policy: CompiledPolicy, facts: dict[str, Any], errors: list[dict[str, str]]) -> Segment | None:
    """The first of the policy's segments whose condition holds (a condition that raises does not)."""
    return next((s for s in policy.segments if holds(s.predicate, facts, f"segment.{s.id}", errors)), None)
