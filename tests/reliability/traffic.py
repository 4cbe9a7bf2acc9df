"""One realistic, hostile stream shared by scenarios 4 (poison), 6 (PII canaries), 8 (duplicates and retries) and
9 (late and skewed events): built once per session (``conftest.py``), run through a real worker and lake sink,
then a real ``dbt build`` and the ML training, so that each scenario only asserts on what came out.

The stream (FIRSTMILE_RELIABILITY_TRAFFIC_USERS, CI 150 / full 2,000; _BACKFILL_ORDERS, CI 300 / full 5,000):

* the simulator's ``backfill`` scenario: a day of traffic plus last year's orders imported server-side;
* device clocks off by ±1–24 h on 8 % of browser devices (timestamp and sentAt both skewed: the collector's
  correction must place them at their true time);
* client retries: every event of 20 % of browser devices is sent 3 times (an exact re-send right after, as a
  producer retry does, and a client retry 2 s later, after the device's next event);
* robots reusing event ids with a different payload (one id over and over, and ids of other people's events);
* poison: 1 % of the stream, every kind of invalid input, each tagged with the DLQ reason it must get;
* PII canaries: known emails, phone numbers and IPs in traits, properties, free text, page URLs and context.ip
  of US people (consent granted by default, so they reach the warehouse), and in three invalid events (DLQ).
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streaming import settings as topics
from streaming import simulator
from streaming.contract import from_segment
from tests.reliability.harness import (
    OUTPUT_TOPICS,
    Platform,
    consume,
    dbt_ok,
    figure,
    produce,
    run_dbt,
    size,
    wait_for_lake,
)

USERS = size("traffic_users", 150)
BACKFILL = size("backfill_orders", 300)
POISON_SHARE = 0.01
RETRY_DEVICE_SHARE = 0.2
SKEW_DEVICE_SHARE = 0.08
#: Robots reusing event ids with another payload: one robot sends one id this many times, another sends this many
#: ids taken from other people's events (scenario 8 asserts exactly these counts).
ROBOT_STATIC_EVENTS = 20
ROBOT_REUSED_IDS = 20

CANARY_EMAILS = tuple(f"canary.{i}.q7x@leak-probe.example" for i in range(4))
CANARY_PHONES = tuple(f"+1 415 555 {1200 + i:04d}" for i in range(4))


def _iso(ts: datetime) -> str:
    return simulator._iso(ts)


def _shift(payload: dict[str, Any], seconds: float) -> dict[str, Any]:
    out = dict(payload)
    for name in ("timestamp", "sentAt"):
        if name in out:
            out[name] = _iso(datetime.fromisoformat(out[name].replace("Z", "+00:00")) + timedelta(seconds=seconds))
    return out


def poison_items(rng: random.Random, n: int, keys: list[bytes]) -> list[tuple[bytes | None, bytes | None, str, str]]:
    """n invalid inputs: (key, value, kind, the DLQ reason it must get)."""
    base = {"type": "page", "event_id": "", "anonymous_id": "poison-dev", "timestamp": "2026-11-02T10:00:00Z",
            "received_at": "2026-11-02T10:00:00Z", "source_id": "reliability", "context": {"ip": "8.8.8.8"},
            "properties": {}}

    def deep(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = {"a": value}
        return value

    kinds = [
        ("invalid_json", lambda e: orjson.dumps(e)[:-7], "invalid_json"),
        ("invalid_json_garbage", lambda e: b"{not json at all", "invalid_json"),
        ("not_utf8", lambda e: orjson.dumps(e).replace(b"page", b"p\xff\xfege"), "not_utf8"),
        ("huge", lambda e: orjson.dumps({**e, "properties": {"blob": "x" * 40_000}}), "too_large"),
        ("deeply_nested", lambda e: orjson.dumps({**e, "properties": deep(20)}), "too_deep"),
        ("nested_3000", lambda e: orjson.dumps({k: v for k, v in e.items() if k != "properties"})[:-1]
         + b',"properties":' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"}", "invalid_json"),
        ("wrong_type_timestamp", lambda e: orjson.dumps({**e, "timestamp": 12345}), "schema"),
        ("wrong_type_properties", lambda e: orjson.dumps({**e, "properties": "a string"}), "schema"),
        ("wrong_type_event_type", lambda e: orjson.dumps({**e, "type": "purchase"}), "schema"),
        ("wrong_type_event_id", lambda e: orjson.dumps({**e, "event_id": 42}), "schema"),
        ("not_an_object", lambda e: b"[1, 2, 3]", "schema"),
        ("missing_event_id", lambda e: orjson.dumps({k: v for k, v in e.items() if k != "event_id"}), "missing_id"),
        ("blank_event_id", lambda e: orjson.dumps({**e, "event_id": "   "}), "missing_id"),
        ("missing_identity", lambda e: orjson.dumps({k: v for k, v in e.items() if k != "anonymous_id"}),
         "missing_identity"),
        ("tombstone", lambda e: None, "empty"),
    ]
    out = []
    for i in range(n):
        kind, make, reason = kinds[i % len(kinds)]
        event = {**base, "event_id": f"poison-{i}"}
        key = rng.choice(keys) if keys and i % 3 else (None if i % 2 else b"\xff\xfe-bad-key")
        out.append((key, make(event), kind, reason))
    return out


@dataclass
class Traffic:
    platform: Platform
    items: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    where: list[tuple[int, int]] = field(default_factory=list)
    outputs: list[tuple[str, int, int, bytes | None, Any]] = field(default_factory=list)
    raw_consumed: int = 0
    worker_alive: bool = False
    lake_sink_alive: bool = False
    worker_restarts: int = 0
    dbt_failure: str = ""
    ml_failure: str = ""
    ml: dict[str, Any] = field(default_factory=dict)
    canary_ips: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.platform.data_dir

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    def at(self, where: tuple[int, int]) -> dict[str, Any]:
        return self.meta[self.where.index(where)]

    def by_origin(self) -> dict[tuple[int, int], list[tuple[str, Any]]]:
        seen: dict[tuple[int, int], list[tuple[str, Any]]] = defaultdict(list)
        for topic, _p, _o, _k, value in self.outputs:
            if isinstance(value, dict) and topic in OUTPUT_TOPICS:
                seen[(value.get("raw_partition"), value.get("raw_offset"))].append((topic, value))  # type: ignore[index]
        return seen


def build(platform: Platform) -> Traffic:
    rng = random.Random(2026)
    traffic = Traffic(platform)
    sc = simulator.load_scenario("backfill", users=USERS, backfill_orders=BACKFILL)
    events = list(simulator.generate(sc, day=0))
    seed = sc.seed
    # canary IPs: US addresses (consent granted by default there, so canary events reach the warehouse)
    from streaming import enrich

    ips: list[str] = []
    while len(ips) < 4:
        ip = simulator.country_ip(rng, seed, "US")
        if enrich.geo(ip).country == "US" and ip not in ips:
            ips.append(ip)
    traffic.canary_ips = tuple(ips)

    browser_devices = sorted({e.payload["anonymousId"] for e in events
                              if e.payload.get("anonymousId") and "sentAt" in e.payload
                              and e.truth.get("actor") == "human"})
    rng.shuffle(browser_devices)
    n_retry = int(len(browser_devices) * RETRY_DEVICE_SHARE)
    n_skew = int(len(browser_devices) * SKEW_DEVICE_SHARE)
    retried = set(browser_devices[:n_retry])
    skewed = {d: rng.choice((-1, 1)) * rng.uniform(3600, 86_400) for d in browser_devices[n_retry:n_retry + n_skew]}
    us_devices = [d for d in browser_devices[n_retry + n_skew:]
                  if any(e.truth.get("region") == "US" for e in events if e.payload.get("anonymousId") == d)]
    canary_devices = us_devices[:4]

    items: list[tuple[bytes | None, bytes | None]] = []
    meta: list[dict[str, Any]] = []
    pending_retry: dict[str | None, tuple[bytes, bytes, dict[str, Any]]] = {}  # device → its client retry
    human_ids: list[str] = []
    canary_count = 0

    def add(key: bytes | None, value: bytes | None, **m: Any) -> None:
        items.append((key, value))
        meta.append(m)

    for ev in events:
        payload = ev.payload
        device = payload.get("anonymousId")
        m: dict[str, Any] = {"kind": "sim", "event_id": payload["messageId"], "actor": ev.truth.get("actor"),
                             "backfill": bool(ev.truth.get("backfill"))}
        true_record = from_segment(payload, source_id="reliability", received_at=ev.send_at)
        m["expected_ts"] = true_record["timestamp"]
        if device in skewed:
            payload = _shift(payload, skewed[device])
            m["skew_s"] = skewed[device]
        if device in canary_devices and canary_count < 30:
            i = canary_devices.index(device)
            email, phone, ip = CANARY_EMAILS[i], CANARY_PHONES[i], ips[i]
            payload = {**payload, "context": {**payload["context"], "ip": ip}}
            where = canary_count % 5
            if where == 0:
                payload["traits"] = {**(payload.get("traits") or {}), "email": email, "phone": phone,
                                     "contact": {"work_email": email, "mobile": phone}}
            elif where == 1:
                payload["properties"] = {**(payload.get("properties") or {}), "email": email,
                                         "contact_phone": phone, "ip_address": ip}
            elif where == 2:
                payload["properties"] = {**(payload.get("properties") or {}),
                                         "note": f"please call {phone} or write to {email} (from {ip})",
                                         "search": f"orders of {email}"}
            elif where == 4:  # trackers often use the email as the user id: it is the profile key then
                payload["userId"] = email
            else:
                page = dict(payload["context"].get("page") or {"path": "/"})
                page["url"] = f"{simulator.SITE}/account?email={email}&phone={phone.replace(' ', '')}"
                payload["context"] = {**payload["context"], "page": page}
                payload["properties"] = {**(payload.get("properties") or {}), "url": page["url"]}
            m["canary"] = ("traits", "properties", "free_text", "page_url", "user_id")[where]
            canary_count += 1
        record = from_segment(payload, source_id="reliability", received_at=ev.send_at)
        key = (record.get("anonymous_id") or record.get("user_id") or "").encode()
        value = orjson.dumps(record)
        if device in pending_retry:  # the client retry of this device's previous event arrives now
            r_key, r_value, r_meta = pending_retry.pop(device)
            add(r_key, r_value, **r_meta)
        if device in retried:
            m.update(retried=True, copy=1)
        add(key, value, **m)
        if ev.truth.get("actor") == "human" and not m.get("canary") and not m["backfill"] and device not in retried:
            human_ids.append(payload["messageId"])
        if device in retried:
            # a producer retry re-sends the very same record right away ...
            add(key, value, **{**m, "kind": "retry_exact", "copy": 2})
            # ... and the client retries 2 s later (sentAt +2 s on its clock, the event's timestamp unchanged)
            retry = from_segment(_shift(payload, 2.0) | {"timestamp": payload["timestamp"]},
                                 source_id="reliability", received_at=ev.send_at + timedelta(seconds=2))
            pending_retry[device] = (key, orjson.dumps(retry), {**m, "kind": "retry_client", "copy": 3})
    for r_key, r_value, r_meta in pending_retry.values():
        add(r_key, r_value, **r_meta)

    # robots reusing event ids with a different payload
    t0 = datetime.fromisoformat("2026-11-02T12:00:00+00:00")
    robot_ip = ips[0]
    for i in range(ROBOT_STATIC_EVENTS):
        at = t0 + timedelta(seconds=7 * i)
        body = {"type": "track", "messageId": "robot-static-id", "anonymousId": "robot-0001",
                "event": "Product Viewed", "timestamp": _iso(at),
                "context": {"ip": robot_ip, "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0"},
                "properties": {"sku": f"SKU-{i}", "price": 10 + i}}
        record = from_segment(body, source_id="reliability", received_at=at)
        add(b"robot-0001", orjson.dumps(record), kind="robot_static", event_id="robot-static-id")
    for i, stolen in enumerate(rng.sample(human_ids, min(ROBOT_REUSED_IDS, len(human_ids)))):
        at = t0 + timedelta(seconds=11 * i)
        body = {"type": "track", "messageId": stolen, "anonymousId": "robot-0002", "event": "Product Added",
                "timestamp": _iso(at), "context": {"ip": robot_ip, "userAgent": "python-requests/2.32"},
                "properties": {"sku": f"ROBOT-{i}", "price": 1, "quantity": 1}}
        record = from_segment(body, source_id="reliability", received_at=at)
        add(b"robot-0002", orjson.dumps(record), kind="robot_reuse", event_id=stolen)

    # invalid events carrying canaries (the DLQ keeps the original bytes)
    for i in range(3):
        body = {"type": "identify", "anonymous_id": "canary-dlq", "timestamp": "2026-11-02T10:00:00Z",
                "received_at": "2026-11-02T10:00:00Z", "source_id": "reliability", "context": {"ip": ips[i]},
                "traits": {"email": CANARY_EMAILS[i], "phone": CANARY_PHONES[i]}}
        add(b"canary-dlq", orjson.dumps(body), kind="poison", poison="missing_event_id", reason="missing_id",
            canary="dlq")

    # poison: 1 % of the stream, spread at random positions
    keys = [k for k, _ in items if k][:500]
    for p_key, p_value, kind, reason in poison_items(rng, max(15, int(len(items) * POISON_SHARE)), keys):
        pos = rng.randrange(len(items) + 1)
        items.insert(pos, (p_key, p_value))
        meta.insert(pos, {"kind": "poison", "poison": kind, "reason": reason})
    traffic.items, traffic.meta = items, meta
    return traffic


def run(traffic: Traffic) -> Traffic:
    """Through the hot path, the lake sink, dbt and the ML training; every outcome kept on ``traffic``."""
    platform = traffic.platform
    started = time.monotonic()
    platform.spawn("worker")
    platform.spawn("lake", "streaming.lake_sink")
    traffic.where = produce(platform.address, traffic.items)
    traffic.timings["produce"] = time.monotonic() - started
    try:
        wait_for_lake(platform.lake, set(traffic.where), timeout=240, platform=platform, watch=("worker", "lake"))
    finally:
        traffic.worker_alive = platform.alive("worker")
        traffic.lake_sink_alive = platform.alive("lake")
        traffic.timings["hot_path_and_lake"] = time.monotonic() - started
    time.sleep(2.0)
    for name in ("worker", "lake"):
        if platform.alive(name):
            platform.stop(name)
    traffic.worker_restarts = platform.log("worker").count("worker starting with policy")  # 1 = never restarted
    traffic.outputs = consume(platform.address, OUTPUT_TOPICS, idle=2.0)
    traffic.raw_consumed = len(consume(platform.address, [topics.RAW], idle=2.0, raw=True))

    t = time.monotonic()
    result = run_dbt(["build"], platform.data_dir)
    traffic.dbt_failure = dbt_ok(result)
    traffic.timings["dbt_build"] = time.monotonic() - t
    if not traffic.dbt_failure:
        t = time.monotonic()
        try:
            from ml.loop import train_propensity_run
            from warehouse.layout import DataLayout

            # the bot head is a second MLflow run (a second teacher): at full size only, to keep CI short
            traffic.ml = train_propensity_run(DataLayout(platform.data_dir), bot_head=bool(size("ml_bot_head", 0)))
        except Exception as exc:  # reported by the PII test, which needs the artifacts
            import traceback

            traffic.ml_failure = traceback.format_exc()[-3000:]
            del exc
        traffic.timings["ml_training"] = time.monotonic() - t
    figure("shared traffic", f"{len(traffic.items)} inputs through worker, lake sink, dbt build and ML training",
           **{f"{k}_s": round(v, 1) for k, v in traffic.timings.items()})
    return traffic
