"""Scenario 8, duplicates and retries (shared stream, traffic.py): every event of 20 % of browser devices is sent 3
times (a producer re-send of the very same record, and a client retry 2 s later: same event_id, new offsets), plus
robots reusing an event_id with a different payload (one id over and over on one device; other people's ids on
another device). Asserted after the hot path and a real ``dbt build``:

* the hot path decides each retried event once: the copies are suppressed with ledger reason
  ``duplicate_event_id`` and never reach a destination;
* natural duplicates after the warehouse dedupe = 0 (one row per event_id in every per-event model), and the row
  the dedupe keeps for a retried event is its decided first copy (delivered, suppressed for consent or
  quarantined), never the ledger-only record of a retry copy (B3, B12);
* conflicting reuse is flagged (dbt model ``event_id_conflicts``), and natural retries are not;
* a robot reusing other people's ids does not replace their events (B7, fixed: ``stg_decided`` keeps one row per
  id and device; the later device's row is kept as ``<event_id>@<device_id>``), and session features stay equal to
  the hot path's for the victims and the robot.
"""

from __future__ import annotations

import duckdb
import pytest

from streaming import settings as topics
from tests.reliability.harness import figure
from tests.reliability.traffic import ROBOT_REUSED_IDS

pytestmark = pytest.mark.integration

PER_EVENT_MODELS = ("stg_decided", "stg_events", "stg_suppressed", "int_session_features", "training_events",
                    "feature_parity")

DEDUPE_BUG = ("B3: stg_decided breaks a received_at tie (a producer re-send of the same record) on kafka_offset "
              "across different topics, so the ledger-only suppression of the copy can win over the delivered "
              "event: the warehouse loses the event's payload and features")
CONFLICT_BUG = ("B4: event_id_conflicts compares payload_hash of delivered rows with the hot path's ledger-only "
                "suppression records (no properties/traits), so every suppressed client retry is flagged as a "
                "conflicting reuse")


def con_of(traffic):
    assert not traffic.dbt_failure, traffic.dbt_failure
    return duckdb.connect(str(traffic.duckdb_path), read_only=True)


def retried(traffic):
    """event_id → {copy number: (partition, offset)} of the retried events."""
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for w, m in zip(traffic.where, traffic.meta, strict=True):
        if m.get("retried"):
            out.setdefault(m["event_id"], {})[m["copy"]] = w
    return out


def test_retries_are_decided_once_at_the_first_mile(traffic):
    by_origin = traffic.by_origin()
    copies = [w for ids in retried(traffic).values() for c, w in ids.items() if c > 1]
    suppressed_dup = delivered = other = 0
    for w in copies:
        outs = by_origin.get(w, [])
        if any(t in topics.DESTINATIONS for t, _ in outs):
            delivered += 1
        elif [(t, v["ledger"].get("reason")) for t, v in outs] == [(topics.SUPPRESSED, "duplicate_event_id")]:
            suppressed_dup += 1
        else:
            other += 1
    figure("8 duplicates: hot path", f"{len(retried(traffic))} events sent 3 times ({len(copies)} retry copies)",
           suppressed_duplicate_event_id=suppressed_dup, copies_delivered_to_a_destination=delivered,
           copies_otherwise=other)
    assert copies and suppressed_dup == len(copies), (delivered, other)


def test_natural_duplicates_after_dedupe_are_zero(traffic):
    con = con_of(traffic)
    try:
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        dupes = {t: con.execute(f"select count(*) - count(distinct event_id) from {t}").fetchone()[0]
                 for t in PER_EVENT_MODELS if t in tables}
    finally:
        con.close()
    figure("8 duplicates: warehouse", "rows per event_id > 1 after dedupe, per model", **dupes)
    assert set(dupes) == set(PER_EVENT_MODELS), set(PER_EVENT_MODELS) - set(dupes)
    assert all(v == 0 for v in dupes.values()), dupes


def test_dedupe_keeps_the_delivered_event_not_the_ledger_only_copy(traffic):
    by_origin = traffic.by_origin()
    copies = retried(traffic)
    delivered = [eid for eid, ids in copies.items()
                 if any(t == topics.DEST_WAREHOUSE for t, _ in by_origin.get(ids[1], []))]
    con = con_of(traffic)
    try:
        con.execute("create temp table want(event_id varchar)")
        con.executemany("insert into want values (?)", [(e,) for e in delivered])
        kept = dict(con.execute("select stream, count(*) from stg_decided join want using (event_id) group by 1"
                                ).fetchall())
        in_events = con.execute("select count(*) from stg_events join want using (event_id)").fetchone()[0]
        # every retried event, whatever its first copy's decision (delivered, suppressed for consent, quarantined)
        con.execute("create temp table every(event_id varchar)")
        con.executemany("insert into every values (?)", [(e,) for e in copies])
        outcome = dict(con.execute(
            "select coalesce(json_extract_string(ledger, '$.reason'), stream), count(*) "
            "from stg_decided join every using (event_id) group by 1").fetchall())
    finally:
        con.close()
    retry_copies_kept = outcome.pop("duplicate_event_id", 0)
    figure("8 duplicates: dedupe winner", f"{len(delivered)} retried events delivered to dest.warehouse, "
           f"{len(copies)} retried in all",
           kept_as_events=kept.get("events", 0), kept_as_ledger_only_suppression=kept.get("suppressed", 0),
           missing_from_stg_events=len(delivered) - in_events, all_retried_kept_as=outcome,
           all_retried_kept_as_the_retry_copy=retry_copies_kept)
    assert delivered and in_events == len(delivered), kept
    # B12: the retry copy's ledger-only record must not win over a first copy the hot path suppressed for consent
    assert retry_copies_kept == 0 and sum(outcome.values()) == len(copies), outcome


def test_conflicting_event_id_reuse_is_flagged(traffic):
    reused = {m["event_id"] for m in traffic.meta if m["kind"] in ("robot_static", "robot_reuse")}
    # one id sent over and over by one robot, plus every id the other robot took from people (traffic.py)
    assert len(reused) == 1 + ROBOT_REUSED_IDS, len(reused)
    con = con_of(traffic)
    try:
        flagged = {r[0] for r in con.execute("select event_id from event_id_conflicts").fetchall()}
        kept = con.execute("select count(*) - count(distinct event_id) from stg_decided").fetchone()[0]
    finally:
        con.close()
    figure("8 duplicates: conflicts", f"{len(reused)} event ids reused with another payload by robots",
           flagged=len(reused & flagged), not_flagged=len(reused - flagged), merged_rows=kept)
    assert reused and reused <= flagged, sorted(reused - flagged)[:5]


def test_natural_retries_are_not_flagged_as_conflicts(traffic):
    ids = set(retried(traffic))
    con = con_of(traffic)
    try:
        flagged = {r[0] for r in con.execute("select event_id from event_id_conflicts").fetchall()}
    finally:
        con.close()
    figure("8 duplicates: false conflicts", f"{len(ids)} naturally retried event ids",
           flagged_as_conflicts=len(ids & flagged))
    assert not ids & flagged


def test_reuse_by_another_device_does_not_drop_the_victims_event(traffic):
    """B7 (found by this suite, fixed): stg_decided deduped on event_id alone, so whichever of the victim's and the
    robot's events arrived first won and the other device lost its event."""
    stolen = {m["event_id"] for m in traffic.meta if m["kind"] == "robot_reuse"}
    con = con_of(traffic)
    try:
        con.execute("create temp table stolen(event_id varchar)")
        con.executemany("insert into stolen values (?)", [(e,) for e in stolen])
        kept_robot = con.execute("select count(*) from stg_decided join stolen using (event_id) "
                                 "where device_id = 'robot-0002'").fetchone()[0]
        robot_kept_apart = con.execute("select count(*) from stg_decided join stolen on sent_event_id = "
                                       "stolen.event_id where device_id = 'robot-0002' and event_id_reused"
                                       ).fetchone()[0]
        victims_kept = con.execute("select count(*) from stg_decided join stolen using (event_id) "
                                   "where device_id <> 'robot-0002'").fetchone()[0]
        victims = con.execute("select count(distinct device_id) from stg_lake_decided join stolen using (event_id) "
                              "where device_id <> 'robot-0002'").fetchone()[0]
        mismatched = con.execute(
            "select count(*) from feature_parity p join int_session_features f using (event_id) where not p.is_match "
            "and f.device_id in (select device_id from stg_lake_decided join stolen using (event_id))").fetchone()[0]
    finally:
        con.close()
    figure("8 duplicates: merged reuse", f"{len(stolen)} event ids of {victims} people reused by a robot",
           victims_events_replaced_by_the_robots=kept_robot, victims_events_kept=victims_kept,
           robots_events_kept_apart=robot_kept_apart, parity_mismatches_on_victims_and_robot=mismatched)
    # exactly what the traffic generates: ROBOT_REUSED_IDS stolen ids, each robot event kept apart under its own key
    assert len(stolen) == ROBOT_REUSED_IDS, len(stolen)
    assert kept_robot == 0 and mismatched == 0
    assert victims_kept == len(stolen) and robot_kept_apart == ROBOT_REUSED_IDS, (victims_kept, robot_kept_apart)
