"""Scenario 10, bad logic pushed: what the warehouse ships back to the hot path can be wrong. Asserted:

* **rejected** — documents a worker must refuse, pushed on ``control.policy`` to a running worker: not JSON, an
  unknown rule operator, a rule reading a fact the first mile does not have, a model whose coefficients do not
  match its features (wrong dimensions), a tampered document (checksum mismatch), an older version. Each is
  rejected with a log line naming the field or rule; the last good policy keeps deciding every later event.
* **contained** — a valid document whose logic fails at runtime on some events (a bot rule and a route condition
  that overflow on order events: a huge integer literal plus a float). The worker does not stop; those events are
  decided without the failing rule (the bot rule counts as not fired, the route fails closed: ``condition_error``,
  never delivered on an error) and flagged in the ledger (``ledger.errors`` names the rule and the error); every
  other event is decided normally by the new version.
* **dead-lettered, not lost** — a defect in the decision code itself (simulated with a compiled policy whose
  internals are broken, in-process, first in stage 1 then in stage 2): the event goes to ``events.dlq`` with
  reason ``processing_error`` and its input (stage 1: exactly the bytes produced to ``events.raw``; stage 2: the
  stage-1 record, at the raw position of that input), the stream goes on, and the next good policy decides the
  next events. The stage-2 record is exactly what stage 2 received, handoff included (B13, fixed).

Every input has exactly one outcome in every phase (routed + quarantined + dead-lettered + suppressed = consumed).
"""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streaming import settings as topics
from streaming.contract import from_segment
from streaming.control import publish_policy
from streaming.pipeline import DictState, Origin, decide_device
from streaming.policy import PolicyHolder, bootstrap_policy, canonical_json, compile_policy, seal
from tests.reliability.harness import OUTPUT_TOPICS, Platform, consume, figure, produce

pytestmark = pytest.mark.integration

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
T0 = datetime(2026, 11, 2, 10, tzinfo=UTC)
ALL_GRANTED = {"analytics": True, "personalization": True, "marketing": True, "sales": True}
#: An integer no float can hold: valid JSON, compiles, but ``float + int`` raises OverflowError at runtime.
HUGE = 10 ** 400
OUTCOME = {topics.DLQ: "dead_lettered", topics.QUARANTINE: "quarantined", topics.SUPPRESSED: "suppressed"}


def events(batch: str, devices: int = 6, per_device: int = 5) -> list[tuple[bytes, bytes]]:
    """Views, adds and one order (revenue 600) per device, every purpose granted (US IP)."""
    items = []
    for d in range(devices):
        device = f"{batch}-dev-{d}"
        for i in range(per_device):
            name = "Order Completed" if i == per_device - 1 else "Product Viewed" if i % 2 == 0 else "Product Added"
            props: dict[str, Any] = {"category": "shoes", "price": 120, "quantity": 1}
            if name == "Order Completed":
                props["revenue"] = 600.0
            ts = T0 + timedelta(minutes=d, seconds=20 * i)
            body = {"type": "track", "messageId": f"{device}-{i}", "anonymousId": device, "event": name,
                    "timestamp": ts.isoformat(), "consent": ALL_GRANTED,
                    "context": {"ip": "8.8.8.8", "userAgent": CHROME}, "properties": props}
            items.append((device.encode(), orjson.dumps(from_segment(body, source_id="bad-logic", received_at=ts))))
    return items


def policy(version: int, **changes: Any) -> dict[str, Any]:
    doc = bootstrap_policy()
    doc.update({"policy_version": version, "parent_version": version - 1, "description": f"scenario 10 v{version}",
                **changes})
    return seal(doc)


def decided(address: str, where: list[tuple[int, int]], *, timeout: float = 60.0) -> dict[tuple[int, int], list]:
    """Outputs per input (raw partition, offset) once every input of ``where`` has one."""
    deadline = time.monotonic() + timeout
    by_origin: dict[Any, list] = defaultdict(list)
    while time.monotonic() < deadline:
        by_origin.clear()
        for topic, _p, _o, _k, value in consume(address, (*OUTPUT_TOPICS, topics.DECISIONS), idle=1.0):
            if isinstance(value, dict):
                by_origin[(value.get("raw_partition"), value.get("raw_offset"))].append((topic, value))
        if all(w in by_origin for w in where):
            break
        time.sleep(0.5)
    return {w: by_origin.get(w, []) for w in where}


def outcome_classes(outs: dict[tuple[int, int], list]) -> Counter[str]:
    """One class per input (routed/quarantined/dead_lettered/suppressed); 'none' or 'several' breaks accounting."""
    counts: Counter[str] = Counter()
    for records in outs.values():
        classes = {OUTCOME.get(t, "routed") for t, _ in records if t != topics.DECISIONS}
        counts[classes.pop() if len(classes) == 1 else "none" if not classes else "several"] += 1
    return counts


def wait_log(platform: Platform, text: str, *, after: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = platform.log("worker")[after:]
        if text in log:
            return log
        assert platform.alive("worker"), platform.log("worker")[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"worker never logged {text!r}:\n{platform.log('worker')[-3000:]}")


def produce_raw_policy(address: str, value: bytes) -> None:
    produce(address, [(b"policy", value)], topic=topics.CONTROL_POLICY)


def bad_documents() -> list[tuple[str, bytes, str]]:
    """(what, bytes pushed, text the rejection must name)."""
    unknown_op = policy(3, rules=[{"id": "bot.regex", "kind": "bot", "mode": "enforce",
                                   "when": {"regex": [{"var": "user_agent"}, "bot"]}}])
    unknown_fact = policy(3, rules=[{"id": "bot.by_email", "kind": "bot", "mode": "enforce",
                                     "when": {"==": [{"var": "email"}, "x@example.com"]}}])
    model = {"kind": "logistic", "features": ["page_views", "cart_adds"], "mean": [0.0, 0.0], "scale": [1.0, 1.0],
             "coef": [0.5, 0.2, 0.9], "intercept": 0.0}
    wrong_dims = policy(3, models={"propensity": model})
    tampered = policy(3)
    tampered["description"] = "edited after sealing"
    older = policy(1, description="an older version replayed")
    return [
        ("not JSON", b'{"policy_version": 3, "rules": [', "not valid JSON"),
        ("unknown operator", orjson.dumps(unknown_op), "regex"),
        ("fact the first mile lacks", orjson.dumps(unknown_fact), "email"),
        ("model with wrong dimensions", orjson.dumps(wrong_dims), "coef"),
        ("tampered (checksum)", orjson.dumps(tampered), "checksum"),
        ("older version", orjson.dumps(older), "not newer"),
    ]


def runtime_failing_policy(version: int) -> dict[str, Any]:
    doc = bootstrap_policy()
    doc["rules"] = [*doc["rules"], {
        "id": "bot.overflowing_spend", "kind": "bot", "mode": "enforce",
        "description": "a learned rule with a literal no float can hold: raises on events with revenue",
        "when": {">": [{"+": [{"var": "revenue"}, HUGE]}, 0]}}]
    doc["routing"] = {**doc["routing"], "dest.sales": {
        "purposes": ["sales"], "when": {"or": [{">=": [{"var": "cart_value"}, 10_000]},
                                              {">": [{"*": [{"var": "revenue"}, HUGE]}, 1]}]}}}
    doc.update(policy_version=version, parent_version=version - 1, description="runtime failure on orders")
    return seal(doc)


def test_bad_policies_are_rejected_and_failing_rules_contained(tmp_path: Path) -> None:
    platform = Platform(tmp_path / "data").start()
    try:
        publish_policy(platform.address, topics.CONTROL_POLICY, policy(2))
        platform.spawn("worker")
        wait_log(platform, "policy v2", after=0, timeout=60)

        # 1. the good version decides batch A
        where_a = produce(platform.address, events("a"))
        outs_a = decided(platform.address, where_a)
        versions_a = Counter(v.get("policy_version") for recs in outs_a.values() for _, v in recs)

        # 2. every bad document is rejected, naming what is wrong; v2 goes on deciding batch B
        rejections = {}
        for what, raw, must_name in bad_documents():
            mark = len(platform.log("worker"))
            produce_raw_policy(platform.address, raw)
            log = wait_log(platform, "rejected" if what != "older version" else "ignored", after=mark)
            line = next(ln for ln in log.splitlines() if "rejected" in ln or "ignored" in ln)
            rejections[what] = (must_name in line, line.split(": ", 2)[-1][:160])
        where_b = produce(platform.address, events("b"))
        outs_b = decided(platform.address, where_b)
        versions_b = Counter(v.get("policy_version") for recs in outs_b.values() for _, v in recs)

        # 3. a valid document whose rule and route condition raise on order events: contained and flagged
        mark = len(platform.log("worker"))
        produce_raw_policy(platform.address, canonical_json(runtime_failing_policy(3)))
        wait_log(platform, "policy v3", after=mark)
        batch_c = events("c")
        where_c = produce(platform.address, batch_c)
        outs_c = decided(platform.address, where_c)
        time.sleep(1.0)
        worker_alive = platform.alive("worker")
        restarts = platform.log("worker").count("worker starting with policy")
    finally:
        platform.close()

    orders = {w for w, (_k, v) in zip(where_c, batch_c, strict=True) if b"Order Completed" in v}
    flagged, unflagged_orders, flagged_others, quarantined_orders, to_sales = 0, 0, 0, 0, 0
    error_reasons: Counter[str] = Counter()
    for w, records in outs_c.items():
        ledgers = [v.get("ledger") or {} for t, v in records if t in (*topics.DESTINATIONS, topics.SUPPRESSED,
                                                                         topics.QUARANTINE)]
        errors = {e["rule"] for ledger in ledgers for e in ledger.get("errors", [])}
        error_reasons.update(e["error"].split(":")[0] for ledger in ledgers for e in ledger.get("errors", []))
        if w in orders:
            flagged += bool(errors >= {"bot.overflowing_spend", "routing.dest.sales"})
            unflagged_orders += not errors
            quarantined_orders += any(t == topics.QUARANTINE for t, _ in records)
            to_sales += any(t == topics.DEST_SALES for t, _ in records)
            assert all(ledger.get("destinations", {}).get("dest.sales") == "condition_error"
                       for ledger in ledgers if "destinations" in ledger), ledgers
        else:
            flagged_others += bool(errors)
    versions_c = Counter(v.get("policy_version") for recs in outs_c.values() for _, v in recs)
    accounting = {name: outcome_classes(outs) for name, outs in (("a", outs_a), ("b", outs_b), ("c", outs_c))}
    figure("10 bad logic pushed", f"{len(rejections)} bad documents pushed to a running worker, then a rule and a "
           f"route that raise on {len(orders)} of {len(where_c)} events",
           rejected=f"{sum(ok for ok, _ in rejections.values())}/{len(rejections)} (reason names the field)",
           decided_by_last_good=f"{versions_b.get(2, 0)}/{sum(versions_b.values())} outputs",
           runtime_errors_flagged=f"{flagged}/{len(orders)}", error_types=dict(error_reasons),
           failing_orders_quarantined=quarantined_orders, failing_orders_to_sales=to_sales,
           other_events_flagged=flagged_others, lost=sum(c["none"] for c in accounting.values()),
           several_outcomes=sum(c["several"] for c in accounting.values()),
           worker_alive=worker_alive, worker_starts=restarts)
    for what, (named, line) in rejections.items():
        assert named, f"the rejection of {what!r} does not name what is wrong: {line}"
    assert worker_alive and restarts == 1
    assert set(versions_a) == {2} and set(versions_b) == {2}, (versions_a, versions_b)
    assert set(versions_c) == {3}, versions_c
    for name, counts in accounting.items():
        assert set(counts) <= {"routed", "quarantined", "dead_lettered", "suppressed"}, (name, counts)
        assert sum(counts.values()) == len({"a": where_a, "b": where_b, "c": where_c}[name])
    assert orders and flagged == len(orders) and not unflagged_orders
    assert quarantined_orders == 0 and to_sales == 0  # not fired (bot), fail-closed (route)
    assert flagged_others == 0
    assert set(error_reasons) == {"OverflowError"}, error_reasons


class _BrokenRules(tuple):  # type: ignore[type-arg]
    """A defect in the decision code, simulated: iterating the bot rules raises (stage 1 does, on every event)."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated defect in stage 1")


@pytest.fixture(scope="module")
def defect_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The worker in-process (a defect cannot be pushed as a document: documents are validated), on a real broker:
    a defect raising in stage 1, then in stage 2, then the fixed policy, 9 events each. Returns what each phase
    produced (the exact bytes and where they landed on events.raw) and the outputs per input."""
    from streaming.worker import build_app

    tmp_path = tmp_path_factory.mktemp("defect")
    platform = Platform(tmp_path / "data").start()
    assert platform.settings is not None
    # One version per phase: stage 2 decides an event under the version stage 1 stamped on it (PolicyHolder.version)
    policies = {
        "stage1_defect": dataclasses.replace(compile_policy(policy(2)), bot_rules=_BrokenRules()),
        "stage2_defect": dataclasses.replace(compile_policy(policy(3)),
                                             region_defaults=None),  # type: ignore[arg-type]  # effective() raises
        "fixed": compile_policy(policy(4)),
    }
    holder = PolicyHolder(policies["stage1_defect"])
    app = build_app(platform.settings, platform.address, holder, state_dir=str(tmp_path / "state"))
    produced: dict[str, dict[tuple[int, int], tuple[bytes, bytes]]] = {}
    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            for name, compiled in policies.items():
                # the swap PolicyHolder.offer does (current, and kept for stage 2 by version), without validation
                holder._current = compiled
                holder._kept[compiled.version] = compiled
                batch = events(name, devices=3, per_device=3)
                where = produce(platform.address, batch)
                produced[name] = dict(zip(where, batch, strict=True))
                result[name] = decided(platform.address, where, timeout=60)
        except Exception as exc:  # noqa: BLE001 - reported by the test body
            result["error"] = exc
        finally:
            app.stop()

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        app.run()
    finally:
        thread.join(timeout=120)
        platform.close()
    assert "error" not in result, result.get("error")
    return {"produced": produced, "result": result, "policies": policies, "secret": platform.settings.pii_secret}


def _dlq(run: dict[str, Any], name: str) -> dict[tuple[int, int], dict[str, Any]]:
    """The DLQ record of each input of a phase, by its (partition, offset) on events.raw."""
    return {w: v for w, recs in run["result"][name].items() for t, v in recs if t == topics.DLQ}


def test_a_defect_in_the_decision_code_dead_letters_the_event_and_the_stream_goes_on(
        defect_run: dict[str, Any]) -> None:
    produced, result = defect_run["produced"], defect_run["result"]

    def dlq_reasons(name: str) -> Counter[str]:
        return Counter(v["reason"] for v in _dlq(defect_run, name).values())

    # Stage 1 dead-letters the input it had: the exact bytes produced to events.raw at that (partition, offset).
    stage1 = _dlq(defect_run, "stage1_defect")
    exact = sum(base64.b64decode(v["original"]) == produced["stage1_defect"][w][1] for w, v in stage1.items())
    # Stage 2 dead-letters the stage-1 record (decided once: replaying the raw bytes would find the event id in the
    # device's recent ids); it must point at that exact input on events.raw.
    stage2 = _dlq(defect_run, "stage2_defect")
    traced = sum((v["raw_partition"], v["raw_offset"]) == w and v["event_id"] ==
                 orjson.loads(produced["stage2_defect"][w][1])["event_id"]
                 and orjson.loads(base64.b64decode(v["original"]))["event_id"] == v["event_id"]
                 for w, v in stage2.items())
    fixed = outcome_classes(result["fixed"])
    figure("10 bad logic pushed (defect)", "a defect raising in stage 1, then in stage 2, then the fix; in-process "
           "worker on a real broker",
           stage1_dead_lettered=dict(dlq_reasons("stage1_defect")),
           stage2_dead_lettered=dict(dlq_reasons("stage2_defect")), after_fix=dict(fixed),
           stage1_originals_equal_to_the_raw_bytes=f"{exact}/{len(produced['stage1_defect'])}",
           stage2_records_traced_to_their_raw_input=f"{traced}/{len(produced['stage2_defect'])}")
    for name in ("stage1_defect", "stage2_defect"):
        assert dlq_reasons(name) == Counter({"processing_error": len(produced[name])}), (name, dlq_reasons(name))
        assert outcome_classes(result[name]) == Counter({"dead_lettered": len(produced[name])})
        # the stage named, and the phase's own defect (stage 2 decides under the version stage 1 stamped)
        details = {v["detail"][:80] for v in _dlq(defect_run, name).values()}
        assert details == {"decide_device: RuntimeError: simulated defect in stage 1" if name == "stage1_defect"
                           else "decide_profile: AttributeError: 'NoneType' object has no attribute 'get'"}, details
    assert exact == len(produced["stage1_defect"]) == len(stage1), (exact, len(stage1))
    assert traced == len(produced["stage2_defect"]) == len(stage2), (traced, len(stage2))
    assert fixed == Counter({"routed": len(produced["fixed"])}), fixed


def test_a_stage2_dead_letter_keeps_the_record_stage2_received(defect_run: dict[str, Any]) -> None:
    """What stage 2 received is recomputed here: the phase's exact raw bytes replayed through stage 1 (pure
    function, fresh device state, the phase's policy, the same secret and raw positions). The DLQ's original must
    equal it."""
    produced = defect_run["produced"]["stage2_defect"]
    states: dict[bytes, DictState] = {}
    want = {}
    for w, (key, raw) in produced.items():  # produce order = each device's order
        out = decide_device(raw, states.setdefault(key, DictState()), defect_run["policies"]["stage2_defect"],
                            secret=defect_run["secret"].encode("utf-8"), origin=Origin(*w), key=key)
        want[w] = orjson.loads(orjson.dumps(out.value))
    got = {w: orjson.loads(base64.b64decode(v["original"])) for w, v in _dlq(defect_run, "stage2_defect").items()}
    lost = Counter(k for w in want for k in set(want[w]) - set(got.get(w, {})))
    equal = sum(got.get(w) == want[w] for w in want)
    figure("10 bad logic pushed (stage-2 DLQ)", f"{len(want)} records dead-lettered by stage 2 vs the stage-1 "
           "record each one was", equal_to_what_stage2_received=f"{equal}/{len(want)}", keys_lost=dict(lost))
    assert equal == len(want) == len(got), (equal, dict(lost))
