"""Events for the stage-step tests: a Segment wire event through the collector's mapping, as ``events.raw`` bytes
or parsed (what a stage sees after validation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from streaming.contract import Event, from_segment, parse_raw
from streaming.control_tables import ERASURE, IDENTITY, ControlTables, erasure_value, merge_value
from streaming.policy import CompiledPolicy, bootstrap_policy, compile_policy, seal

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
US_IP, DE_IP = "8.8.8.8", "85.214.132.117"
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def raw(i: int = 0, *, anon: str | None = "dev-1", user: str | None = None, ip: str = US_IP, ua: str = CHROME,
        type_: str = "track", event: str = "Product Viewed", seconds: float = 20.0,
        consent: dict[str, bool] | None = None, tcf: str | None = None, traits: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None, received_later_s: float = 0.0) -> bytes:
    at = T0 + timedelta(seconds=seconds * i)
    payload: dict[str, Any] = {
        "type": type_, "messageId": f"m-{anon or user}-{i}", "anonymousId": anon, "userId": user,
        "timestamp": at.isoformat(), "context": {"ip": ip, "userAgent": ua, **({"tcf": tcf} if tcf else {})},
        "properties": {"category": "shoes", "price": 30} if properties is None else properties,
        "traits": traits or {}}
    if type_ == "track":
        payload["event"] = event
    if consent is not None:
        payload["consent"] = consent
    return orjson.dumps(from_segment(payload, source_id="web", received_at=at + timedelta(seconds=received_later_s)))


def event(i: int = 0, **kwargs: Any) -> Event:
    return parse_raw(raw(i, **kwargs))


def policy(**changes: Any) -> CompiledPolicy:
    """The bootstrap policy with ``changes`` (version 2 when changed)."""
    doc = bootstrap_policy()
    if changes:
        doc.update(changes)
        doc["policy_version"] = 2
    return compile_policy(seal(doc))


def logistic(features: list[str], *, coef: float = 0.4, **extra: Any) -> dict[str, Any]:
    """A policy model document over ``features``."""
    n = len(features)
    return {"kind": "logistic", "features": features, "transform": ["none"] * n, "mean": [0.0] * n,
            "scale": [1.0] * n, "coef": [coef] * n, "intercept": 0.0, **extra}


def control(*, erased: list[str] | tuple[str, ...] = (), merges: dict[str, str] | None = None,
            consent: dict[str, dict[str, list[Any]]] | None = None) -> ControlTables:
    """Control tables as the worker holds them after reading these ``control.erasure``/``control.identity``
    records (merges in order; ``consent``: a merged profile's decisions, purpose → [granted, at_ms])."""
    tables = ControlTables()
    tables.load_many(ERASURE, [(i, erasure_value(request_id="test", at=None, source="test")) for i in erased])
    tables.load_many(IDENTITY, [(k, merge_value(v, consent=(consent or {}).get(k))) for k, v in (merges or {}).items()])
    return tables
