"""Scenario 1, worker crashes: the hot-path worker is killed with SIGKILL at random moments while simulated traffic
flows (at-least-once) and restarted each time. After the lake settles:

* events lost = 0: every input offset of events.raw is in the lake (any stream);
* duplicates in the landing zone are reported (rows per event_id > 1 across the decided streams);
* what the warehouse keeps (the real dbt builds stg_decided over the test's lake) holds every input the lake holds
  exactly once, per the warehouse's own key (event id as sent, device): duplicates after dedupe = 0, events lost by
  the dedupe = 0 (harness.landing_duplicates);
* identity and consent state after the crashes (read back from the workers' changelog topics once the group has
  committed every input) equal the oracle: the pure first-mile functions replayed once, uninterrupted, over the
  same input.

The second test makes the riskiest moment certain: every event decided and delivered, nothing checkpointed, then
kill -9 (B11 was this moment read too early: the lake is complete before the state is).

Sizes: FIRSTMILE_RELIABILITY_CRASH_EVENTS (CI 10,000; full 200,000), _CRASH_KILLS (CI 2; full 5),
_CRASH_RATE events/s while producing (CI 350, so both kills land while events flow; full 5,000).
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from streaming import simulator
from tests.reliability.harness import (
    Oracle,
    Platform,
    changelog_state,
    committed,
    dedupe_failures,
    figure,
    lake_inputs,
    landing_duplicates,
    produce,
    sim_items,
    size,
    state_diff,
    uncommitted,
    wait_for_commits,
    wait_for_lake,
    wait_for_progress,
)

pytestmark = pytest.mark.integration

#: Found by this suite (README.md, "Bugs found", B1); fixed by streaming/recovery.py.
RESTART_BUG = ("B1: a restarted worker dies with quixstreams InvalidStoreChangelogOffset: Tansu under-reports the "
               "changelog high watermark (last batch base offset + 1) and Quix's recovery trusts it")

EVENTS = size("crash_events", 10_000)
KILLS = size("crash_kills", 2)
RATE = size("crash_rate", 350)


def simulated(n: int, *, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """n events of everyday traffic (humans with consent and logins across devices, bots): the first n of a
    simulated day, with a population sized for it (~17 events per user; grown when a day comes out short)."""
    users = max(30, n // 17)
    while True:
        events = list(simulator.generate(simulator.load_scenario("default", users=users, seed=seed), day=0))
        if len(events) >= n:
            return sim_items(events[:n])
        users = int(users * n / max(1, len(events))) + 10


def test_kill_9_the_worker_while_events_flow(tmp_path):
    items = simulated(EVENTS)
    platform = Platform(tmp_path / "data").start()
    kills: list[float] = []
    try:
        platform.spawn("worker")
        platform.spawn("lake", "streaming.lake_sink")
        rng = random.Random(7)
        where: list[tuple[int, int]] = []
        producer = threading.Thread(target=lambda: where.extend(produce(platform.address, items, rate=RATE)))
        start = time.monotonic()
        producer.start()
        progress = 0
        try:
            for _ in range(KILLS):
                # a random moment while the (re)started worker is processing: after its first commit
                progress = wait_for_progress(platform.address, progress, platform=platform, watch=("worker",))
                time.sleep(rng.uniform(0.2, 2.0))
                platform.kill9("worker")
                kills.append(round(time.monotonic() - start, 1))
                platform.spawn("worker")  # restarted at once, as a supervisor would
                progress = committed(platform.address)
            in_flight = producer.is_alive()
            producer.join()
            settle = wait_for_lake(platform.lake, set(where), timeout=240, platform=platform,
                                   watch=("worker", "lake"))
            # The lake can be complete before the state is: the last killed worker may have delivered events it
            # never checkpointed; the restarted one re-processes them once the group assigns it (B11).
            caught_up = wait_for_commits(platform.address, where, timeout=120, platform=platform,
                                         watch=("worker", "lake"), lake=True)
        except AssertionError as exc:
            producer.join()
            figure("1 worker crashes", f"{len(items)} events, kill -9 at {kills} s: FAILED",
                   lost=len(set(where) - lake_inputs(platform.lake)), error=str(exc).splitlines()[-1][:160])
            raise
        lost = len(set(where) - lake_inputs(platform.lake))
        actual = changelog_state(platform.address)
    finally:
        platform.close()
    dupes = landing_duplicates(platform.data_dir)  # dbt over the lake, once nothing writes it any more
    diff = state_diff(actual, Oracle().replay(items, where))
    figure("1 worker crashes", f"{len(items)} events, {len(kills)} kill -9 at {kills} s",
           lost=lost, producer_still_sending_at_last_kill=in_flight,
           landing_duplicate_rows=dupes["duplicate_rows"], landing_duplicated_event_ids=dupes["event_ids_duplicated"],
           warehouse_rows=dupes["kept_rows"], duplicates_after_dedupe=dupes["duplicates_after_dedupe"],
           events_lost_by_dedupe=dupes["events_lost_by_dedupe"], lake_settled_s=round(settle, 1),
           all_committed_after_s=round(settle + caught_up, 1),
           identity_mismatches=diff["identity"], device_consent_mismatches=diff["device_consent"],
           consent_mismatches=diff["consent"], session_mismatches=diff["session"], devices=diff["identity_keys"],
           profiles=diff["consent_keys"])
    assert len(kills) == KILLS and lost == 0
    assert not (failures := dedupe_failures(dupes)), \
        f"stg_decided does not hold every input of the lake exactly once: {failures} (all counts: {dupes})"
    assert diff["identity"] == 0 and diff["device_consent"] == 0 and diff["consent"] == 0 and diff["session"] == 0, \
        diff
    assert diff["identity_keys"] > 0 and diff["consent_keys"] > 0


def test_kill_9_after_delivery_before_the_checkpoint(tmp_path):
    """The riskiest moment of a crash, made certain (B11): the worker has decided and delivered every event but has
    not checkpointed yet (commit interval 60 s), so its outputs are in the lake and its state writes are nowhere.
    Killed there, its successor must re-process the uncommitted events and end with the oracle's state."""
    # a whole simulated day of 60 users (≈2,500 events): every device's and profile's story is complete
    items = sim_items(list(simulator.generate(simulator.load_scenario("default", users=60, seed=12), day=0)))
    platform = Platform(tmp_path / "data").start()
    try:
        platform.spawn("worker", env={"FIRSTMILE_COMMIT_INTERVAL": "60"})
        platform.spawn("lake", "streaming.lake_sink")
        where = produce(platform.address, items)
        wait_for_lake(platform.lake, set(where), timeout=120, platform=platform, watch=("worker", "lake"))
        pending = sum(uncommitted(platform.address, where).values())
        state_at_kill = changelog_state(platform.address)
        platform.kill9("worker")
        restarted = time.monotonic()
        platform.spawn("worker")
        wait_for_commits(platform.address, where, timeout=120, platform=platform, watch=("worker",))
        caught_up = time.monotonic() - restarted
        wait_for_commits(platform.address, where, timeout=60, platform=platform, watch=("worker", "lake"), lake=True)
        actual = changelog_state(platform.address)
    finally:
        platform.close()
    dupes = landing_duplicates(platform.data_dir)
    oracle = Oracle().replay(items, where)
    at_kill, diff = state_diff(state_at_kill, oracle), state_diff(actual, oracle)
    figure("1b kill after delivery, before the checkpoint",
           f"{len(items)} events delivered, then kill -9 before the first checkpoint",
           uncommitted_at_kill=pending, identity_mismatches_at_kill=at_kill["identity"],
           restarted_worker_committed_all_after_s=round(caught_up, 1),
           landing_duplicate_rows=dupes["duplicate_rows"], warehouse_rows=dupes["kept_rows"],
           duplicates_after_dedupe=dupes["duplicates_after_dedupe"],
           events_lost_by_dedupe=dupes["events_lost_by_dedupe"],
           identity_mismatches=diff["identity"], device_consent_mismatches=diff["device_consent"],
           consent_mismatches=diff["consent"], session_mismatches=diff["session"], devices=diff["identity_keys"],
           profiles=diff["consent_keys"])
    assert pending >= len(items)  # the kill came before any checkpoint: nothing was committed
    assert at_kill["identity"] == at_kill["identity_keys"] > 0  # the lake was complete, the state was not
    assert dupes["duplicate_rows"] > 0  # the restart re-delivered: the dedupe had something to remove
    assert not (failures := dedupe_failures(dupes)), \
        f"stg_decided does not hold every input of the lake exactly once: {failures} (all counts: {dupes})"
    assert diff["identity"] == 0 and diff["device_consent"] == 0 and diff["consent"] == 0 and diff["session"] == 0, \
        diff
