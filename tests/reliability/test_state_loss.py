"""Scenario 3, state loss: the worker's local state directory (<data>/state) is deleted between runs. Part A
identifies devices, grants consent (EU: the default would deny) and opens sessions; the worker is stopped, its
state directory deleted, and a new worker decides part B, whose every decision depends on A's state: the device's
profile (identity), the profile's consent (destinations), and the session (features continue within 30 min).
Asserted: B's decisions and the state read back from the changelog topics equal the oracle (the pure functions
replayed over A+B), i.e. the state was rebuilt from the changelogs.

Size: FIRSTMILE_RELIABILITY_STATELOSS_DEVICES (CI 60, full 2,000): 5 events per device in A, 3 in B.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streaming.contract import from_segment
from tests.reliability.harness import (
    OUTPUT_TOPICS,
    Oracle,
    Platform,
    changelog_state,
    consume,
    figure,
    produce,
    size,
    state_diff,
    wait_for_commits,
    wait_for_progress,
)

pytestmark = pytest.mark.integration

DEVICES = size("stateloss_devices", 60)
EU_IP = "85.214.132.117"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def event(device: str, i: int, at: datetime, **body) -> tuple[bytes, bytes]:
    payload = {"type": "page", "messageId": f"{device}-{i}", "anonymousId": device, "timestamp": at.isoformat(),
               "context": {"ip": EU_IP, "userAgent": CHROME}, "properties": {"category": "books"}, **body}
    return device.encode(), orjson.dumps(from_segment(payload, source_id="stateloss", received_at=at))


def parts(n: int) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    a, b = [], []
    for d in range(n):
        dev, t = f"dev-{d:05d}", T0 + timedelta(seconds=d)
        grant = {"analytics": True, "personalization": d % 2 == 0, "marketing": d % 3 != 0, "sales": d % 5 == 0}
        if d % 2:  # consent while anonymous, then login: the device's consent is carried to the profile
            a += [event(dev, 0, t, type="consent", consent=grant),
                  event(dev, 1, t + timedelta(seconds=30), type="identify", userId=f"user-{d:05d}")]
        else:  # login, then consent on the profile
            a += [event(dev, 0, t, type="identify", userId=f"user-{d:05d}"),
                  event(dev, 1, t + timedelta(seconds=30), type="consent", consent=grant)]
        a += [event(dev, i, t + timedelta(seconds=30 * i), type="track", event="Product Viewed",
                    properties={"category": "books", "price": 12.5}) for i in (2, 3, 4)]
        b += [event(dev, i, t + timedelta(seconds=300 + 30 * i), type="track", event="Product Added",
                    properties={"category": "games", "price": 20, "quantity": 1}) for i in (5, 6, 7)]
    return a, b


def decided(platform: Platform, expected: set[tuple[int, int]], timeout: float = 90.0):
    """Output records once every expected input has been decided (or the worker died, or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        outs = consume(platform.address, OUTPUT_TOPICS, idle=1.0)
        seen = {(v.get("raw_partition"), v.get("raw_offset")) for *_, v in outs if isinstance(v, dict)}
        if expected <= seen or time.monotonic() > deadline or not platform.alive("worker"):
            return outs


def summary(topic: str, value: dict) -> tuple:
    features = value.get("features") or {}
    return (topic, value.get("profile_id"), tuple(sorted((value.get("ledger") or {}).get("purposes", {}).items())),
            value.get("session_id"), features.get("session_event_count"), features.get("cart_value"))


def test_state_is_rebuilt_from_the_changelog_after_the_state_dir_is_deleted(tmp_path):
    a, b = parts(DEVICES)
    platform = Platform(tmp_path / "data").start()
    try:
        platform.spawn("worker")
        where_a = produce(platform.address, a)
        wait_for_progress(platform.address, len(a) - 1, timeout=90, platform=platform, watch=("worker",))
        decided(platform, set(where_a))
        wait_for_commits(platform.address, where_a, platform=platform, watch=("worker",))  # changelog + commit
        assert platform.stop("worker") == 0
        state_files = sum(1 for p in platform.state_dir.rglob("*") if p.is_file())
        shutil.rmtree(platform.state_dir)
        started = time.monotonic()
        platform.spawn("worker")
        where_b = produce(platform.address, b)
        outs = decided(platform, set(where_a) | set(where_b))
        recovered_s = time.monotonic() - started
        alive = platform.alive("worker")
        if alive:
            wait_for_commits(platform.address, where_a + where_b, platform=platform, watch=("worker",))
        actual_state = changelog_state(platform.address)
    finally:
        platform.close()
    oracle = Oracle().replay(a + b, where_a + where_b)
    got: dict[tuple[int, int], set] = {}
    for topic, _p, _o, _k, v in outs:
        if isinstance(v, dict) and topic in OUTPUT_TOPICS:
            got.setdefault((v.get("raw_partition"), v.get("raw_offset")), set()).add(summary(topic, v))
    want = {w: {summary(t, v) for t, v in oracle.decisions[w] if t in OUTPUT_TOPICS} for w in where_b}
    undecided = [w for w in where_b if w not in got]
    wrong = [w for w in where_b if w in got and got[w] != want[w]]
    diff = state_diff(actual_state, oracle, extra=("segment",))
    fields = ("topic", "profile", "consent", "session", "session_event_count", "cart_value")
    wrong_fields: dict[str, int] = {}
    for w in wrong:
        for i, name in enumerate(fields):
            if {x[i] for x in got[w]} != {x[i] for x in want[w]}:
                wrong_fields[name] = wrong_fields.get(name, 0) + 1
    figure("3 state loss", f"{DEVICES} devices: A {len(a)} events, state dir deleted ({state_files} files), "
           f"B {len(b)} events", worker_alive=alive, b_undecided=len(undecided), b_decisions_wrong=len(wrong),
           wrong_by_field=wrong_fields,
           identity_mismatches=diff["identity"], consent_mismatches=diff["consent"],
           session_mismatches=diff["session"], segment_mismatches=diff["segment"],
           b_decided_within_s=round(recovered_s, 1), devices=diff["identity_keys"], profiles=diff["consent_keys"])
    assert alive
    assert not undecided and not wrong, [(got.get(w), want[w]) for w in wrong[:2]]
    assert diff["identity"] == 0 and diff["consent"] == 0 and diff["session"] == 0 and diff["segment"] == 0, diff
    assert diff["identity_keys"] == DEVICES and diff["consent_keys"] > 0  # the comparison is not vacuous
