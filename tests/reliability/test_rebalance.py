"""Scenario 2, rebalance storm: while simulated traffic flows, a second worker (its own state directory, as a second
container would have) joins the consumer group and leaves again every few seconds. Each join and leave moves
partitions, and with them their state, which the receiving worker must restore from the changelog topics.
Asserted: lost = 0 (every input offset reaches the lake), no partition stuck (the inputs are all accounted within
the timeout and no worker died), and the state read back from the changelogs equals the oracle. Reported: time to
recover after the last leave (until the lake holds every input), duplicates in the landing zone.

Sizes: FIRSTMILE_RELIABILITY_REBALANCE_EVENTS (CI 10,000; full 100,000), _REBALANCE_CYCLES (CI 4; full 20),
_REBALANCE_PERIOD_S seconds each cycle holds after its rebalances (default 2): a cycle is join → rebalance
→ PERIOD/2 → leave → rebalance → PERIOD/2 (≈ 10 s on Tansu, where a join takes 3–7 s).
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from tests.reliability.harness import (
    Oracle,
    Platform,
    changelog_state,
    figure,
    lake_inputs,
    landing_duplicates,
    produce,
    size,
    state_diff,
    wait_for_commits,
    wait_for_lake,
    wait_for_progress,
)
from tests.reliability.test_worker_crashes import simulated

pytestmark = pytest.mark.integration

GROUP = "firstmile-worker"

EVENTS = size("rebalance_events", 10_000)
CYCLES = size("rebalance_cycles", 4)
PERIOD = size("rebalance_period_s", 2)


def rebalanced(admin: AdminClient, platform: Platform, timeout: float = 60.0) -> float:
    """Seconds until the worker group has gone through a rebalance and is STABLE again (Tansu's group description
    has no members, but its state moves STABLE → rebalancing → STABLE)."""
    start = time.monotonic()
    seen_unstable = False
    while time.monotonic() - start < timeout:
        try:
            state = admin.describe_consumer_groups([GROUP])[GROUP].result(timeout=5).state
        except Exception:  # noqa: BLE001 - a group in flux may not describe
            state = None
        if state != ConsumerGroupState.STABLE:
            seen_unstable = True
        elif seen_unstable:
            return round(time.monotonic() - start, 1)
        if not platform.alive("worker"):
            break
        time.sleep(0.25)
    return round(time.monotonic() - start, 1)


def last_error(log: str) -> str:
    lines = [line for line in log.splitlines() if "Error" in line or "Exception" in line]
    return (lines[-1] if lines else log[-200:])[:200]


def test_a_second_worker_joins_and_leaves_repeatedly(tmp_path):
    items = simulated(EVENTS, seed=23)
    platform = Platform(tmp_path / "data").start()
    died: list[str] = []
    try:
        platform.spawn("worker")
        platform.spawn("lake", "streaming.lake_sink")
        rate = max(200.0, len(items) / (CYCLES * (PERIOD + 7)))  # the stream lasts the storm
        where: list[tuple[int, int]] = []
        producer = threading.Thread(target=lambda: where.extend(produce(platform.address, items, rate=rate)))
        producer.start()
        wait_for_progress(platform.address, 0, timeout=90, platform=platform, watch=("worker",))
        admin = AdminClient({"bootstrap.servers": platform.address})
        joins, leaves = [], []
        for cycle in range(CYCLES):
            t = time.monotonic()
            platform.spawn("worker2", data_dir=tmp_path / "worker2")
            joins.append(rebalanced(admin, platform))  # the group moved partitions to worker2
            time.sleep(PERIOD / 2)
            if not platform.alive("worker2"):
                died.append(f"worker2 (cycle {cycle}): " + last_error(platform.log("worker2")))
                platform.procs.pop("worker2")
            else:
                platform.stop("worker2")
                t = time.monotonic()
                leaves.append(rebalanced(admin, platform))  # and back to the first worker
            if not platform.alive("worker"):
                died.append(f"worker (cycle {cycle}): " + last_error(platform.log("worker")))
                break
            time.sleep(max(0.0, PERIOD / 2 - (time.monotonic() - t)))
        left_at = time.monotonic()
        producer.join()
        recover = None
        if not died:
            wait_for_lake(platform.lake, set(where), timeout=180, platform=platform, watch=("worker", "lake"))
            # the state is final once every input is committed (the lake can be complete before: at-least-once)
            wait_for_commits(platform.address, where, platform=platform, watch=("worker",))
            recover = time.monotonic() - left_at
        dupes = landing_duplicates(platform.lake)
        missing = len(set(where) - lake_inputs(platform.lake))
        actual = changelog_state(platform.address)
    finally:
        platform.close()
    diff = state_diff(actual, Oracle().replay(items, where))
    figure("2 rebalance storm", f"{len(items)} events, a second worker joined and left {CYCLES} times",
           lost=missing, workers_died=len(died),
           join_rebalance_s=f"mean {sum(joins) / max(1, len(joins)):.1f} max {max(joins, default=0)}",
           leave_rebalance_s=f"mean {sum(leaves) / max(1, len(leaves)):.1f} max {max(leaves, default=0)}",
           recover_after_last_leave_s=None if recover is None else round(recover, 1),
           landing_duplicate_rows=dupes["duplicate_rows"], duplicates_after_dedupe=dupes["duplicates_after_dedupe"],
           identity_mismatches=diff["identity"], consent_mismatches=diff["consent"],
           session_mismatches=diff["session"], died=died)
    assert not died, died
    assert missing == 0
    assert diff["identity"] == 0 and diff["consent"] == 0 and diff["session"] == 0, diff
    assert diff["identity_keys"] > 0 and diff["consent_keys"] > 0  # the comparison is not vacuous
