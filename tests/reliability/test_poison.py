"""Scenario 4, poison input: 1 % of the shared stream (traffic.py) is invalid in every way we know: invalid JSON,
non-UTF-8 bytes, huge (> 32 KB), deeply nested (20 and 3,000 levels), wrong types, not an object, missing or blank
ids, no identity, tombstones, undecodable keys. Asserted:

* worker crashes = 0: the worker process stayed up and never restarted; the lake sink too;
* routed + quarantined + dead-lettered + suppressed = consumed, exactly: every input of events.raw (counted by
  consuming it) has exactly one outcome class on the output topics, none has two, none has none;
* every DLQ record carries the reason code expected for its kind, and the original bytes.

A second test sends a valid event whose numbers overflow a session feature (price × quantity = inf), then a normal
event of the same device: the worker and the lake sink must survive it too (own broker, CI ~20 s).
"""

from __future__ import annotations

import base64
import time
from collections import Counter

import orjson
import pytest

from streaming import settings as topics
from streaming.contract import from_segment
from tests.reliability.harness import OUTPUT_TOPICS, Platform, consume, figure, produce, wait_for_lake

pytestmark = pytest.mark.integration


def outcome(topic: str) -> str:
    return {topics.DLQ: "dead_lettered", topics.QUARANTINE: "quarantined", topics.SUPPRESSED: "suppressed"}.get(
        topic, "routed")


def test_poison_never_crashes_and_every_input_is_accounted_exactly(traffic):
    by_origin = traffic.by_origin()
    classes: dict[tuple[int, int], set[str]] = {o: {outcome(t) for t, _ in outs} for o, outs in by_origin.items()}
    inputs = set(traffic.where)
    missing = inputs - set(classes)
    ambiguous = {o for o in inputs if len(classes.get(o, ())) > 1}
    counts = Counter(next(iter(c)) for o, c in classes.items() if o in inputs and len(c) == 1)
    # duplicates of one outcome (at-least-once re-delivery would show here; none expected without a crash)
    repeated = sum(1 for o, outs in by_origin.items()
                   if sum(1 for t, _ in outs if t in (topics.DLQ, topics.QUARANTINE, topics.SUPPRESSED)) > 1)

    poison = {w: m for w, m in zip(traffic.where, traffic.meta, strict=True) if m["kind"] == "poison"}
    dlq = {o: v for o, outs in by_origin.items() for t, v in outs if t == topics.DLQ}
    wrong_reason = {traffic.meta[traffic.where.index(o)].get("poison", "valid?"): (v["reason"], v["detail"][:80])
                    for o, v in dlq.items() if o in poison and v["reason"] != poison[o]["reason"]}
    not_dead_lettered = [poison[o]["poison"] for o in poison if o not in dlq]
    valid_dead_lettered = [(traffic.meta[traffic.where.index(o)]["kind"], v["reason"], v["detail"][:80])
                           for o, v in dlq.items() if o not in poison]
    original_kept = sum(1 for o, v in dlq.items()
                        if base64.b64decode(v["original"]) == (traffic.items[traffic.where.index(o)][1] or b""))
    total = sum(counts.values())
    figure("4 poison input", f"{len(poison)} poison of {traffic.raw_consumed} consumed "
           f"({len(set(m['poison'] for m in poison.values()))} kinds)",
           worker_crashes=0 if traffic.worker_alive and traffic.worker_restarts == 1 else "CRASHED",
           lake_sink_crashes=0 if traffic.lake_sink_alive else "CRASHED",
           consumed=traffic.raw_consumed, routed=counts["routed"], quarantined=counts["quarantined"],
           dead_lettered=counts["dead_lettered"], suppressed=counts["suppressed"], sum=total,
           missing=len(missing), in_two_classes=len(ambiguous), repeated_outcomes=repeated,
           wrong_reason=len(wrong_reason), poison_not_dead_lettered=len(not_dead_lettered),
           valid_dead_lettered=len(valid_dead_lettered), dlq_original_bytes_kept=f"{original_kept}/{len(dlq)}")
    assert traffic.worker_alive and traffic.worker_restarts == 1, traffic.platform.log("worker")[-3000:]
    assert traffic.lake_sink_alive, traffic.platform.log("lake")[-3000:]
    assert traffic.raw_consumed == len(traffic.items)
    assert not missing and not ambiguous and total == traffic.raw_consumed
    assert not wrong_reason, wrong_reason
    assert not not_dead_lettered, not_dead_lettered
    assert not valid_dead_lettered, valid_dead_lettered[:5]
    assert original_kept == len(dlq)


OVERFLOW_BUG = ("B2: price x quantity overflows to inf: orjson writes the session feature / state as null, then the "
                "device's next event crashes the worker (None arithmetic) and the lake sink (float(None))")


def test_numbers_that_overflow_a_feature_do_not_crash_the_worker_or_the_lake_sink(tmp_path):
    platform = Platform(tmp_path / "data").start()
    try:
        platform.spawn("worker")
        platform.spawn("lake", "streaming.lake_sink")
        chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
        from datetime import UTC, datetime, timedelta

        t0 = datetime(2026, 11, 2, 10, tzinfo=UTC)

        def event(i, device, props):
            body = {"type": "track", "messageId": f"{device}-{i}", "anonymousId": device, "event": "Product Added",
                    "timestamp": (t0 + timedelta(seconds=10 * i)).isoformat(),
                    "context": {"ip": "8.8.8.8", "userAgent": chrome}, "properties": props}
            return device.encode(), orjson.dumps(from_segment(body, source_id="t", received_at=t0 + timedelta(
                seconds=10 * i)))

        items = [event(0, "overflow-dev", {"price": 1e300, "quantity": 1e300}),
                 event(1, "overflow-dev", {"price": 10, "quantity": 1}),
                 event(2, "overflow-dev", {"price": 10, "quantity": 1}),
                 event(0, "normal-dev", {"price": 10, "quantity": 1})]
        where = produce(platform.address, items)
        try:
            wait_for_lake(platform.lake, set(where), timeout=45, platform=platform, watch=("worker", "lake"))
        finally:
            alive = {name: platform.alive(name) for name in ("worker", "lake")}
            time.sleep(1)
            outs = consume(platform.address, OUTPUT_TOPICS, idle=1.5)
            figure("4 poison input (overflow)", "price x quantity = inf, then normal events of the same device",
                   worker_alive=alive["worker"], lake_sink_alive=alive["lake"],
                   inputs_decided=len({(v.get("raw_partition"), v.get("raw_offset")) for *_, v in outs}),
                   inputs=len(items))
    finally:
        platform.close()
    assert all(alive.values()), alive
