"""Consent, property-based: random interleavings of grants, revocations, TCF strings (valid, malformed, missing),
logins across devices and events. A destination must never receive an event while a purpose it requires is not
granted at that instant (fail-closed), checked against an independent model of consent.

Size: FIRSTMILE_RELIABILITY_EXAMPLES, generated cases (default 300 in CI; `make reliability` runs 100,000, each an
interleaving of 20–40 steps: ≈ 3M decided events, ≈ 16 min).
"""

import os
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming import settings as topics
from streaming.contract import from_segment
from streaming.pipeline import DictState, Origin, decide_device, decide_profile
from streaming.policy import bootstrap_policy, compile_policy
from streaming.simulator import encode_tcf
from tests.reliability.harness import figure

EXAMPLES = int(os.environ.get("FIRSTMILE_RELIABILITY_EXAMPLES", "300"))
POLICY = compile_policy(bootstrap_policy())
PURPOSES = ("analytics", "personalization", "marketing", "sales")
REQUIRED = {topics.DEST_WAREHOUSE: ("analytics",), topics.DEST_MARKETING: ("marketing",),
            topics.DEST_SALES: ("sales",)}
IPS = {"EU": "85.214.132.117", "US": "8.8.8.8"}
DEFAULT = {"EU": False, "US": True}
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
TOTALS = {"events": 0, "deliveries": 0, "violations": 0}

purpose_maps = st.dictionaries(st.sampled_from(PURPOSES), st.booleans(), min_size=1, max_size=4)
step = st.one_of(
    st.tuples(st.just("event"), st.integers(0, 3)),
    st.tuples(st.just("consent"), st.integers(0, 3), purpose_maps),
    st.tuples(st.just("tcf"), st.integers(0, 3), st.fixed_dictionaries({p: st.booleans() for p in PURPOSES})),
    st.tuples(st.just("tcf_malformed"), st.integers(0, 3), st.sampled_from(["", "CO-garbage", "COxx.yy", "%%%"])),
    st.tuples(st.just("login"), st.integers(0, 3), st.integers(0, 1)),
)
scenario = st.tuples(st.lists(st.sampled_from(["EU", "US"]), min_size=4, max_size=4),
                     st.lists(step, min_size=20, max_size=40))


class Oracle:
    """Consent the way the product promises it, written independently of streaming.consent."""

    def __init__(self, regions):
        self.regions = regions
        self.link: dict[int, str] = {}
        self.device_decisions: dict[int, dict[str, tuple[bool, int]]] = {}
        self.profiles: dict[str, dict[str, tuple[bool, int]]] = {}

    def profile(self, device):
        return self.link.get(device, f"anon-{device}")

    def apply(self, profile, decisions, at):
        state = self.profiles.setdefault(profile, {})
        for p, g in decisions.items():
            if p not in state or at >= state[p][1]:
                state[p] = (g, at)

    def observe(self, device, *, user, decisions, at):
        carried = None
        if user is not None and self.link.get(device) != user:
            self.link[device] = user
            carried = dict(self.device_decisions.get(device, {}))
        if decisions and device not in self.link:
            for p, g in decisions.items():
                self.device_decisions.setdefault(device, {})[p] = (g, at)
        profile = self.profile(device)
        if carried:
            for p, (g, t) in carried.items():
                self.apply(profile, {p: g}, t)
        if decisions:
            self.apply(profile, decisions, at)
        explicit = self.profiles.get(profile, {})
        return {p: explicit[p][0] if p in explicit else DEFAULT[self.regions[device]] for p in PURPOSES}


def run(regions, steps):
    oracle = Oracle(regions)
    devices = {d: DictState() for d in range(4)}
    profiles: dict[str, DictState] = {}
    violations = deliveries = 0
    for i, st_ in enumerate(steps):
        kind, device = st_[0], st_[1]
        at = T0 + timedelta(seconds=i)
        user = f"user-{st_[2]}" if kind == "login" else None
        payload = {"type": "page", "messageId": f"e{i}", "anonymousId": f"anon-{device}", "userId": user,
                   "timestamp": at.isoformat(), "context": {"ip": IPS[regions[device]], "userAgent": CHROME},
                   "properties": {}}
        decisions: dict[str, bool] = {}
        if kind == "consent":
            payload["type"], payload["consent"] = "consent", st_[2]
            decisions = dict(st_[2])
        elif kind == "tcf":
            tcf = encode_tcf(st_[2], at=at)
            if tcf is not None:
                payload["context"]["consent"] = {"tcString": tcf}
                decisions = dict(st_[2])
        elif kind == "tcf_malformed":
            payload["context"]["consent"] = {"tcString": st_[2]}
        elif kind == "login":
            payload["type"] = "identify"
        raw = orjson.dumps(from_segment(payload, source_id="prop", received_at=at))
        granted = oracle.observe(device, user=user, decisions=decisions, at=int(at.timestamp() * 1000))
        out = decide_device(raw, devices[device], POLICY, secret=b"prop-secret", origin=Origin(0, i),
                            key=f"anon-{device}")
        assert out.topic == "profile", (out.topic, out.value.get("reason"))
        outs = decide_profile(out.value, profiles.setdefault(out.key, DictState()), POLICY)
        assert outs, "every event has an outcome"
        for o in outs:
            if o.topic in REQUIRED:
                deliveries += 1
                if not all(granted[p] for p in REQUIRED[o.topic]):
                    violations += 1
    return len(steps), deliveries, violations


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(scenario)
def test_no_destination_ever_receives_an_event_without_its_purposes_granted(case):
    regions, steps = case
    events, deliveries, violations = run(dict(enumerate(regions)), steps)
    TOTALS["events"] += events
    TOTALS["deliveries"] += deliveries
    TOTALS["violations"] += violations
    assert violations == 0


def test_consent_property_figure():
    """Prints the figure (runs after the property test in file order) and proves the property was not vacuous."""
    figure("5 consent, property-based", f"{EXAMPLES} generated interleavings of 20-40 steps (hypothesis), each "
           "event checked against an independent consent model for 3 destinations",
           events_decided=TOTALS["events"], destination_checks=3 * TOTALS["events"],
           deliveries=TOTALS["deliveries"], delivered_without_consent=TOTALS["violations"])
    assert TOTALS["violations"] == 0
    assert TOTALS["deliveries"] > 0
