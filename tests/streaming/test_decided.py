"""The decided-record contract (streaming/decided.py) against what the hot path really emits.

Every output of both stages, over a simulated day and hand-made edge cases under several policies, must convert to
its declared Struct with ``forbid_unknown_fields`` (no undeclared key, every required key, the declared types), and
every optional key of the ledgers must be seen at least once (the contract declares nothing the hot path never
writes). The ledger keys the warehouse, ml and the report read as JSON must be declared keys.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from streaming import decided, simulator
from streaming import facts as fact_catalog
from streaming import settings as topics
from streaming.contract import from_segment
from streaming.outputs import FACT_COLUMNS, HANDOFF_FACTS, PROFILE
from streaming.pipeline import DictState, Origin, Output, decide_device, decide_profile
from streaming.policy import CompiledPolicy, bootstrap_policy, compile_policy, seal
from streaming.sessions import FEATURES
from tests.streaming.events import control

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"contract-secret-0123"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
US_IP, DE_IP = "8.8.8.8", "85.214.132.117"
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
STRUCT_OF_TOPIC: dict[str, type[msgspec.Struct]] = {
    **{destination: decided.Decided for destination in topics.DESTINATIONS},
    topics.QUARANTINE: decided.Decided,
    topics.SUPPRESSED: decided.Suppressed,
    topics.DLQ: decided.DeadLetter,
    topics.DECISIONS: decided.ProfileDecision,
    topics.PROFILES: decided.ProfileView,
    topics.PROFILE_DEVICES: decided.DeviceProfile,
}


def _policy(version: int, **changes: Any) -> CompiledPolicy:
    doc = bootstrap_policy()
    doc.update(changes)
    doc["policy_version"] = version
    return compile_policy(seal(doc))


def _edge_policy() -> CompiledPolicy:
    """Rules that raise on orders, a shadow bot rule, route rules in both modes, merges and an erasure."""
    doc = bootstrap_policy()
    overflow = {"+": [{"var": "revenue"}, 10 ** 400]}
    return _policy(
        2,
        rules=[*doc["rules"],
               {"id": "bot.overflow", "kind": "bot", "mode": "enforce", "when": {">": [overflow, 0]}},
               {"id": "bot.shadow_chrome", "kind": "bot", "mode": "shadow", "when": {"==": [{"var": "browser"},
                                                                                           "Chrome"]}},
               {"id": "route.viewer", "kind": "route", "mode": "enforce", "when": {">=": [{"var": "product_views"},
                                                                                         1]}},
               {"id": "route.known", "kind": "route", "mode": "shadow", "when": {"var": "identified"}}],
        models={"propensity": _model(["cart_value", "product_views"]),
                "bot": {**_model(["events_per_minute", "session_event_count"]), "threshold": 0.5, "mode": "shadow"}},
    )


#: The control tables the edge traffic is decided under: a merge and an erasure.
EDGE_CONTROL = control(merges={"anon-merged": "u-canonical"}, erased=["u-gone"],
                       consent={"anon-merged": {"marketing": [False, 1]}})


def _model(features: list[str]) -> dict[str, Any]:
    n = len(features)
    return {"kind": "logistic", "features": features, "transform": ["log1p"] * n, "mean": [0.5] * n,
            "scale": [1.0] * n, "coef": [0.4] * n, "intercept": -0.5}


def _wire(i: int, *, anon: str = "dev-1", user: str | None = None, ip: str = US_IP, ua: str = CHROME,
          type_: str = "track", event: str = "Product Viewed", consent: dict[str, bool] | None = None,
          tcf: str | None = None, traits: dict[str, Any] | None = None,
          properties: dict[str, Any] | None = None) -> bytes:
    payload: dict[str, Any] = {
        "type": type_, "messageId": f"m-{anon}-{i}", "anonymousId": anon, "userId": user,
        "timestamp": (T0 + timedelta(seconds=20 * i)).isoformat(),
        "context": {"ip": ip, "userAgent": ua, **({"consent": {"tcString": tcf}} if tcf else {}),
                    "page": {"path": "/p", "url": "https://shop.example/p?email=x@y.z"}},
        "properties": properties if properties is not None else {"category": "shoes", "price": 30},
        "traits": traits or {}}
    if type_ == "track":
        payload["event"] = event
    if consent is not None:
        payload["consent"] = consent
    return orjson.dumps(from_segment(payload, source_id="web", received_at=T0 + timedelta(seconds=20 * i)))


def _edge_inputs() -> Iterator[tuple[str, bytes]]:
    """(device key, raw) covering every branch that writes an optional key."""
    grant = {"analytics": True, "marketing": True, "personalization": True, "sales": True}
    yield "d-anon", _wire(0, anon="d-anon", ip=DE_IP, type_="consent", consent={"analytics": True})
    yield "d-anon", _wire(1, anon="d-anon", user="u-linked", ip=DE_IP, type_="identify")  # carries device consent
    yield "d-anon", _wire(1, anon="d-anon", user="u-linked", ip=DE_IP, type_="identify")  # a client retry
    yield "d-anon", _wire(1, anon="d-anon", user="u-linked", ip=DE_IP, type_="identify",
                          properties={"other": 1})  # the same id, another payload
    yield "d-eu", _wire(2, anon="d-eu", ip=DE_IP, type_="consent", tcf="CO-garbage")
    yield "d-tcf", _wire(2, anon="d-tcf", event="Product Viewed", tcf="CO-garbage")  # routed: its consent_note
    yield "d-eu", _wire(3, anon="d-eu", ip=DE_IP, event="Order Completed", properties={"revenue": 9.0})
    yield "bot", _wire(4, anon="bot", ua=GOOGLEBOT)
    yield "bot", _wire(5, anon="bot", ua=GOOGLEBOT, event="Order Completed", properties={"revenue": 1.0})
    yield "d-us", _wire(6, anon="d-us", user="u-us", type_="consent", consent=grant)
    for i in range(7, 11):
        yield "d-us", _wire(i, anon="d-us", event="Product Added", properties={"category": "shoes", "price": 99})
    yield "d-us", _wire(11, anon="d-us", event="Order Completed", properties={"revenue": 900.0})
    yield "anon-merged", _wire(12, anon="anon-merged")
    yield "d-gone", _wire(13, anon="d-gone", user="u-gone", traits={"email": "gone@example.com"})
    yield "d-gone", _wire(14, anon="d-gone")
    yield "bad", b"{not json"


def _simulated_inputs() -> Iterator[tuple[str, bytes]]:
    for event in simulator.generate(simulator.load_scenario("default", users=25, days=1), day=0):
        payload = event.payload
        key = payload.get("anonymousId") or payload.get("userId") or "anonymous"
        yield key, orjson.dumps(from_segment(payload, source_id="simulator", received_at=event.send_at))


def decide_all(inputs: Iterator[tuple[str, bytes]], policy: CompiledPolicy, *,
               stage_two: CompiledPolicy | None = None) -> tuple[list[Output], list[Output]]:
    """(stage 1's outputs for stage 2, every output that leaves the hot path); half of the stage-2 inputs cross as
    JSON, as after the repartition topic, and ``stage_two`` (a version stage 1 did not decide with) routes some."""
    devices: dict[str, DictState] = defaultdict(DictState)
    profiles: dict[str, DictState] = defaultdict(DictState)
    handed: list[Output] = []
    final: list[Output] = []
    for offset, (key, raw) in enumerate(inputs):
        out = decide_device(raw, devices[key], policy, secret=SECRET, origin=Origin(0, offset), key=key,
                            control=EDGE_CONTROL)
        if out.topic != PROFILE:
            final.append(out)
            continue
        handed.append(Output(out.topic, out.key, dict(out.value)))
        record = orjson.loads(orjson.dumps(out.value)) if offset % 2 else out.value
        routing_policy = stage_two if stage_two is not None and offset % 3 == 0 else policy
        final += decide_profile(record, profiles[out.key or ""], routing_policy, EDGE_CONTROL)
    return handed, final


@pytest.fixture(scope="module")
def emitted() -> tuple[list[Output], list[Output]]:
    edge, later = _edge_policy(), _policy(7)
    handed, final = decide_all(_edge_inputs(), edge, stage_two=later)
    more_handed, more_final = decide_all(_simulated_inputs(), _policy(1), stage_two=later)
    return handed + more_handed, final + more_final


def test_every_output_is_its_topics_struct(emitted):
    _, final = emitted
    by_topic = Counter(o.topic for o in final)
    assert set(by_topic) == set(STRUCT_OF_TOPIC), by_topic
    for out in final:
        msgspec.convert(out.value, STRUCT_OF_TOPIC[out.topic], strict=True)


def test_the_record_stage_1_hands_to_stage_2_is_stage_1s_record_and_a_handoff(emitted):
    handed, _ = emitted
    assert handed
    for out in handed:
        record = dict(out.value)
        handoff = decided.take_handoff(record)
        assert isinstance(handoff, decided.Handoff)
        assert set(handoff.facts) == set(HANDOFF_FACTS)
        msgspec.convert(record, decided.DeviceRecord, strict=True)
        assert not set(record) & set(decided.STAGE_TWO_FIELDS)


def _seen_keys(values: list[dict[str, Any]]) -> set[str]:
    return {k for v in values for k, item in v.items() if item is not None}


def test_every_declared_key_is_written_by_some_decision(emitted):
    """A key the contract declares but the hot path never writes is a copy waiting to drift: it must go."""
    _, final = emitted
    records = [o.value for o in final if STRUCT_OF_TOPIC[o.topic] is decided.Decided]
    suppressed = [o.value for o in final if o.topic == topics.SUPPRESSED]
    assert _seen_keys(records) == set(decided.field_names(decided.Decided))
    assert _seen_keys([r["ledger"] for r in records]) == set(decided.field_names(decided.Ledger))
    assert _seen_keys(suppressed) == set(decided.field_names(decided.Suppressed))
    assert _seen_keys([r["ledger"] for r in suppressed]) == set(decided.field_names(decided.SuppressionLedger))
    identities = [r["ledger"]["identity"] for r in records]
    assert {i["via"] for i in identities} == {"user_id", "device_link", "anonymous"}
    assert {r["ledger"]["reason"] for r in suppressed if "reason" in r["ledger"]} == \
        {"erased", "duplicate_event_id", "event_id_reused"}


def test_features_are_the_session_features():
    records = [o.value for o in decide_all(_edge_inputs(), _edge_policy())[1] if o.topic == topics.DEST_WAREHOUSE]
    assert records and all(tuple(r["features"]) == FEATURES for r in records)


def test_a_handoff_survives_the_repartition_topics_json():
    handoff = decided.Handoff(facts={"identified": True},
                              consent=decided.ConsentDecisions(decisions={"analytics": False}, at_ms=5),
                              device_consent={"marketing": (True, 3)})
    record = {"event_id": "e", decided.HANDOFF: msgspec.to_builtins(handoff)}
    crossed = orjson.loads(orjson.dumps(record))
    assert decided.take_handoff(crossed) == handoff and crossed == {"event_id": "e"}
    assert decided.take_handoff({decided.HANDOFF: handoff}) is handoff
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decided.take_handoff({decided.HANDOFF: {"facts": {}, "_consent": None}})


def test_every_fact_is_a_column_a_session_feature_or_in_the_handoff():
    names = [f.name for f in fact_catalog.CATALOG]
    columns = set(decided.field_names(decided.Decided))
    assert set(FACT_COLUMNS) == {n for n in names if n in columns}
    assert set(HANDOFF_FACTS).isdisjoint(columns) and set(HANDOFF_FACTS).isdisjoint(FEATURES)
    assert set(names) == set(FACT_COLUMNS) | set(FEATURES) | set(HANDOFF_FACTS)


#: ``json_extract(ledger, '$.a.b')`` / ``json_extract_string(...)``: the ledger paths other tiers read.
LEDGER_PATH = re.compile(r"json_extract(?:_string)?\(\s*ledger\s*,\s*'\$\.([A-Za-z_.]+)'")


def _declared(struct: Any, path: list[str]) -> bool:
    """Whether ``path`` names a field of ``struct`` (a Struct type or union), walking into nested Structs."""
    if not path:
        return True
    info = msgspec.inspect.type_info(struct)
    options = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    for option in options:
        if isinstance(option, msgspec.inspect.StructType):
            for f in option.fields:
                if f.name == path[0] and _declared(_python_type(f.type), path[1:]):
                    return True
    return False


def _python_type(t: msgspec.inspect.Type) -> Any:
    if isinstance(t, msgspec.inspect.StructType):
        return t.cls
    if isinstance(t, msgspec.inspect.UnionType):
        structs = [o.cls for o in t.types if isinstance(o, msgspec.inspect.StructType)]
        return structs[0] if structs else Any
    return Any


def test_ledger_keys_the_other_tiers_read_are_declared():
    sources = [*ROOT.glob("dbt_project/models/**/*.sql"), *ROOT.glob("ml/**/*.py"),
               *ROOT.glob("orchestration/**/*.py"), ROOT / "streaming" / "facts.py"]
    read = {(str(p.relative_to(ROOT)), m) for p in sources for m in LEDGER_PATH.findall(p.read_text())}
    assert {m for _, m in read} >= {"identity.via", "reason", "shadow_rules_fired"}  # the scan finds them
    undeclared = [(where, path) for where, path in read
                  if not (_declared(decided.Ledger, path.split(".")) or
                          _declared(decided.SuppressionLedger, path.split(".")))]
    assert not undeclared, undeclared
