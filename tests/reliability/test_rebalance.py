"""Scenario 2, rebalance storm: while simulated traffic flows, a second worker (its own state directory, as a second
container would have) joins the consumer group and leaves again, cycle after cycle. Each join and leave moves
partitions, and with them their state, which the receiving worker must restore from the changelog topics.

Both workers run observed (harness.OBSERVED: their logs name every partition Quix assigns or revokes and the offsets
each checkpoint committed; the worker stamps nothing that names the deciding process). Asserted, each cycle:

* join: the group hands the joiner at least one partition and takes it from the first worker (the two hold disjoint
  sets that cover every partition of events.raw and the repartition topic), then the joiner decides events on it
  (commits processed offsets);
* leave: the first worker holds every partition again and decides events on the partitions the joiner held;

each within a timeout that fails the test with what was seen. And at the end: lost = 0 (every input offset reaches
the lake), no worker died, what the warehouse keeps holds every input once (harness.landing_duplicates), and the
state read back from the changelogs equals the oracle. Reported: handover times (join: from the joiner's spawn; leave:
from its SIGTERM), what each joiner held and decided, time to recover after the last leave, landing duplicates.

The producer is paced to last the storm (a cycle takes ~25 s on a busy 2-core machine), so that every joiner finds
events to decide; what is left when the storm ends is sent at once.

Sizes: FIRSTMILE_RELIABILITY_REBALANCE_EVENTS (CI 10,000; full 100,000), _REBALANCE_CYCLES (CI 4; full 20),
_REBALANCE_PERIOD_S seconds each cycle holds after its handovers (default 2): a cycle is join → handover → the
joiner's first commit → PERIOD/2 → leave → takeover → the first worker's commit on them → PERIOD/2.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from streaming import settings as topics
from tests.reliability.harness import (
    Observations,
    Oracle,
    Platform,
    assert_alive,
    changelog_state,
    dedupe_failures,
    figure,
    lake_inputs,
    landing_duplicates,
    observations,
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
TP = tuple[str, int]

EVENTS = size("rebalance_events", 10_000)
CYCLES = size("rebalance_cycles", 4)
PERIOD = size("rebalance_period_s", 2)
#: Seconds a cycle is budgeted when pacing the producer (measured ~20-25 s at CI size on a busy machine).
CYCLE_BUDGET_S = 30
#: Seconds a handover (or the first decisions after it) may take before the test fails.
HANDOVER_TIMEOUT_S = 90.0


def group_partitions(address: str) -> set[TP]:
    """Every partition the worker group consumes: events.raw and its repartition topic."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": "reliability-meta"})
    try:
        meta = consumer.list_topics(timeout=10).topics
    finally:
        consumer.close()
    names = [topics.RAW, *(t for t in meta if t.startswith(f"repartition__{GROUP}--"))]
    return {(t, p) for t in names if t in meta for p in meta[t].partitions}


def inputs(seen: Observations) -> set[TP]:
    """The input partitions a worker holds (Quix also assigns it the changelog partitions of their state)."""
    return {tp for tp in seen.assigned if not tp[0].startswith("changelog__")}


def show(parts: set[TP]) -> str:
    return " ".join(f"{t}[{p}]" for t, p in sorted(parts)) or "nothing"


def wait_until(done: Callable[[], bool], what: Callable[[], str], *, platform: Platform, watch: tuple[str, ...],
               timeout: float = HANDOVER_TIMEOUT_S) -> float:
    """Seconds until ``done()``; fails (with ``what()``: what was seen) on timeout or when a watched process died."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if done():
            return round(time.monotonic() - start, 1)
        assert_alive(platform, watch)
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f}s: {what()}")


@dataclass
class Cycle:
    """What one join and leave showed."""

    join_s: float
    leave_s: float
    held: set[TP]  # the partitions the joiner was handed
    decided: int  # events.raw offsets the joiner decided and committed
    decided_stage2: int  # repartition offsets the joiner decided and committed
    taken_back: int  # offsets the first worker decided on the joiner's partitions once it had left


def join_and_leave(platform: Platform, everything: set[TP], cycle: int, state_dir: Path,
                   sending: Callable[[], bool]) -> Cycle:
    """One cycle: worker2 joins, is handed partitions, decides on them, leaves; the worker takes them back and
    decides on them. Fails with what was seen when a step does not happen within HANDOVER_TIMEOUT_S."""
    mark = len(platform.log("worker2"))

    def first() -> Observations:
        return observations(platform.log("worker"))

    def joiner() -> Observations:
        return observations(platform.log("worker2")[mark:])

    def handed_over() -> bool:
        mine, theirs = inputs(first()), inputs(joiner())
        return bool(theirs) and not mine & theirs and mine | theirs == everything

    platform.spawn("worker2", data_dir=state_dir, observed=True)
    join_s = wait_until(handed_over, lambda: f"cycle {cycle}: the group never handed worker2 partitions (worker "
                                             f"holds {show(inputs(first()))}, worker2 {show(inputs(joiner()))})",
                        platform=platform, watch=("worker", "worker2"))
    wait_until(lambda: sum(joiner().processed.values()) > 0,
               lambda: f"cycle {cycle}: worker2 holds {show(inputs(joiner()))} but decided nothing (producer "
                       f"still sending: {sending()})",
               platform=platform, watch=("worker", "worker2"))
    time.sleep(PERIOD / 2)
    assert_alive(platform, ("worker", "worker2"))
    held = inputs(joiner())
    mark_first = len(platform.log("worker"))
    platform.stop("worker2")
    gone = joiner()  # its last commit happens as it leaves
    leave_s = wait_until(lambda: inputs(first()) == everything,
                         lambda: f"cycle {cycle}: worker2 left, the worker holds {show(inputs(first()))} of "
                                 f"{show(everything)}",
                         platform=platform, watch=("worker",))

    def taken_back() -> int:
        since = observations(platform.log("worker")[mark_first:])
        return sum(n for tp, n in since.processed.items() if tp in held)

    wait_until(lambda: taken_back() > 0,
               lambda: f"cycle {cycle}: the worker took back {show(held)} but decided nothing on them (producer "
                       f"still sending: {sending()})",
               platform=platform, watch=("worker",))
    return Cycle(join_s, leave_s, held, gone.decided(topics.RAW),
                 sum(n for (t, _p), n in gone.processed.items() if t != topics.RAW), taken_back())


def test_a_second_worker_joins_and_leaves_repeatedly(tmp_path):
    items = simulated(EVENTS, seed=23)
    platform = Platform(tmp_path / "data").start()
    cycles: list[Cycle] = []
    storm_over = threading.Event()
    try:
        platform.spawn("worker", observed=True)
        platform.spawn("lake", "streaming.lake_sink")
        rate = max(50.0, len(items) / (CYCLES * (PERIOD + CYCLE_BUDGET_S)))  # the stream lasts the storm
        where: list[tuple[int, int]] = []
        producer = threading.Thread(target=lambda: where.extend(
            produce(platform.address, items, rate=rate, pace_until=storm_over)))
        producer.start()
        try:
            wait_for_progress(platform.address, 0, timeout=90, platform=platform, watch=("worker",))
            everything = group_partitions(platform.address)
            wait_until(lambda: inputs(observations(platform.log("worker"))) == everything,
                       lambda: f"the first worker alone holds {show(inputs(observations(platform.log('worker'))))} "
                               f"of {show(everything)}",
                       platform=platform, watch=("worker",))
            for cycle in range(CYCLES):
                cycles.append(join_and_leave(platform, everything, cycle, tmp_path / "worker2", producer.is_alive))
                time.sleep(PERIOD / 2)
            left_at = time.monotonic()
            paced_through = producer.is_alive()
            storm_over.set()
            producer.join()
            wait_for_lake(platform.lake, set(where), timeout=180, platform=platform, watch=("worker", "lake"))
            # the state is final once every input is committed (the lake can be complete before: at-least-once)
            wait_for_commits(platform.address, where, platform=platform, watch=("worker",))
            recover = time.monotonic() - left_at
        except AssertionError as exc:
            storm_over.set()
            producer.join()
            figure("2 rebalance storm", f"{len(items)} events, a second worker joined and left: FAILED in cycle "
                   f"{len(cycles)}", error=str(exc).splitlines()[0][:300])
            raise
        missing = len(set(where) - lake_inputs(platform.lake))
        actual = changelog_state(platform.address)
    finally:
        storm_over.set()
        platform.close()
    dupes = landing_duplicates(platform.data_dir)
    diff = state_diff(actual, Oracle().replay(items, where))
    joins, leaves = [c.join_s for c in cycles], [c.leave_s for c in cycles]
    figure("2 rebalance storm", f"{len(items)} events at {rate:.0f}/s, a second worker joined and left {CYCLES} times",
           lost=missing, join_handover_s=f"mean {sum(joins) / len(joins):.1f} max {max(joins)}",
           leave_handover_s=f"mean {sum(leaves) / len(leaves):.1f} max {max(leaves)}",
           joiner_partitions=f"{min(len(c.held) for c in cycles)}-{max(len(c.held) for c in cycles)} of "
                             f"{len(everything)}",
           joiner_decided_events=f"min {min(c.decided for c in cycles)} total {sum(c.decided for c in cycles)}",
           joiner_decided_stage2=f"min {min(c.decided_stage2 for c in cycles)} "
                                 f"total {sum(c.decided_stage2 for c in cycles)}",
           taken_back_decided_min=min(c.taken_back for c in cycles), producer_paced_through_the_storm=paced_through,
           recover_after_last_leave_s=round(recover, 1), landing_duplicate_rows=dupes["duplicate_rows"],
           duplicates_after_dedupe=dupes["duplicates_after_dedupe"],
           events_lost_by_dedupe=dupes["events_lost_by_dedupe"], identity_mismatches=diff["identity"],
           consent_mismatches=diff["consent"], session_mismatches=diff["session"])
    assert len(cycles) == CYCLES
    assert missing == 0
    assert not (failures := dedupe_failures(dupes)), \
        f"stg_decided does not hold every input of the lake exactly once: {failures} (all counts: {dupes})"
    assert diff["identity"] == 0 and diff["consent"] == 0 and diff["session"] == 0, diff
    assert diff["identity_keys"] > 0 and diff["consent_keys"] > 0  # the comparison is not vacuous
