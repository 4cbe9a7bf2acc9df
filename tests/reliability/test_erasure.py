"""Scenario 7, erasure (right to be forgotten): simulated traffic goes through the worker and the lake sink; N
registered profiles are erased with the documented flow (dbt_project/README.md, "Erasure"):

1. ``dbt build --vars '{erase_profile_ids: [...]}'`` (stg_erased_identifiers collects every identifier seen with
   them; staging drops their rows; erasure_suppression_list publishes them);
2. ``warehouse.erasure.erase_profiles(lake, suppression_identifiers(duckdb))`` rewrites the landing zone;
3. the suppression list is published to ``control.erasure`` (one record per identifier), so every worker
   suppresses them from its next event on;
4. their devices send new events (anonymous, identified, and a new device logging in as them), and the warehouse
   is rebuilt.

Asserted: rows left anywhere (every lake Parquet file and every DuckDB relation, any column, except the
suppression list itself, which must keep the identifiers) = 0; every new event of theirs is suppressed at the
first mile with reason ``erased`` and reaches no destination, while other people's new events still do. Kafka
topics are not scanned: records already delivered stay until their retention (the broker cannot delete them).

Size: FIRSTMILE_RELIABILITY_ERASED (CI 10, full 100) of FIRSTMILE_RELIABILITY_ERASURE_USERS (CI 120, full 1,000).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import duckdb
import orjson
import pytest

from streaming import settings as topics
from streaming import simulator
from streaming.contract import from_segment
from streaming.control import publish_records
from streaming.control_tables import erasure_value
from tests.reliability.harness import (
    OUTPUT_TOPICS,
    Platform,
    consume,
    dbt_ok,
    figure,
    lake_con,
    lake_streams,
    produce,
    run_dbt,
    sim_items,
    size,
    wait_for_lake,
)

pytestmark = pytest.mark.integration

ERASED = size("erased", 10)
USERS = size("erasure_users", 120)
KEEPERS = ("erasure_suppression_list", "stg_erased_identifiers", "stg_erasure_requests", "erasure_requests")
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


def rows_left(data_dir, values: list[str]) -> dict[str, int]:
    """Rows holding any of the values in clear, per lake stream and DuckDB relation (the keepers excluded)."""
    pattern = "|".join(re.escape(v) for v in values)
    left: dict[str, int] = {}
    con = lake_con(data_dir / "lake")
    try:
        for stream in lake_streams(con):
            cols = [r[0] for r in con.execute(f"describe {stream}").fetchall()]
            text = " || '|' || ".join(f"coalesce(cast(\"{c}\" as varchar), '')" for c in cols)
            n = con.execute(f"select count(*) from {stream} where regexp_matches({text}, ?)",
                            [pattern]).fetchall()[0][0]
            if n:
                left[f"lake/{stream}"] = n
    finally:
        con.close()
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        for schema, table in con.execute("select table_schema, table_name from information_schema.tables").fetchall():
            if table in KEEPERS:
                continue
            cols = [r[0] for r in con.execute("select column_name from information_schema.columns where "
                                              "table_schema = ? and table_name = ?", [schema, table]).fetchall()]
            text = " || '|' || ".join(f"coalesce(cast(\"{c}\" as varchar), '')" for c in cols)
            n = con.execute(f"select count(*) from \"{schema}\".\"{table}\" where regexp_matches({text}, ?)",
                            [pattern]).fetchall()[0][0]
            if n:
                left[f"duckdb/{table}"] = n
    finally:
        con.close()
    return left


NULL_DEVICE_BUG = ("B8: the hot path's suppression of an erased person's event carries device_id = null (by design), "
                   "but stg_decided tests device_id not_null: once an erased person sends an event, every dbt build "
                   "fails and the models downstream of stg_decided are skipped")
NULL_DEVICE_TEST = "not_null_stg_decided_device_id"


@pytest.fixture(scope="module")
def erasure(tmp_path_factory):
    """The whole erasure flow, once; returns what the tests assert on."""
    from warehouse.erasure import erase_profiles, suppression_identifiers

    tmp_path = tmp_path_factory.mktemp("erasure")
    sc = simulator.load_scenario("default", users=USERS, seed=5, second_device_rate=0.6)
    items = sim_items(list(simulator.generate(sc, day=0)))
    platform = Platform(tmp_path / "data").start()
    try:
        platform.spawn("worker")
        platform.spawn("lake", "streaming.lake_sink")
        where = produce(platform.address, items)
        wait_for_lake(platform.lake, set(where), timeout=240, platform=platform, watch=("worker", "lake"))

        con = lake_con(platform.lake)
        try:  # registered people with the most devices first: the hardest to erase completely
            candidates = con.execute(
                "select user_id, list(distinct anonymous_id) from (select user_id, anonymous_id from events "
                "union all select user_id, anonymous_id from suppressed) where user_id is not null "
                "group by 1 order by count(distinct anonymous_id) desc, 1").fetchall()
        finally:
            con.close()
        assert len(candidates) >= ERASED + 3, f"only {len(candidates)} registered profiles in the lake"
        erased = {uid: [a for a in anons if a] for uid, anons in candidates[:ERASED]}
        others = {uid: [a for a in anons if a] for uid, anons in candidates[ERASED:ERASED + 3]}
        erase_vars = "{erase_profile_ids: [" + ", ".join(erased) + "]}"

        t = time.monotonic()
        failure = dbt_ok(run_dbt(["build"], platform.data_dir, vars_yaml=erase_vars))
        assert not failure, failure
        identifiers = suppression_identifiers(platform.data_dir / "warehouse.duckdb")
        result = erase_profiles(platform.lake, identifiers)
        values = sorted({v for _, v in identifiers})
        publish_records(platform.address, topics.CONTROL_ERASURE,
                        [(v, erasure_value(request_id="reliability", at=None, source="erasure_suppression_list"))
                         for v in values])
        erasure_s = time.monotonic() - t
        # The worker applies them one broadcast hop later (make bench-control: tens of ms); the events below are
        # produced after the records were acknowledged, and a second covers the hop on a loaded CI machine.
        time.sleep(1.0)

        # their devices come back: anonymous, identified, and a new device logging in as them
        now = datetime(2026, 11, 3, 12, tzinfo=UTC)
        new, kinds = [], []
        for n, (uid, anons) in enumerate({**erased, **others}.items()):
            who = "erased" if uid in erased else "other"
            devices = [(a, None) for a in anons[:2]] + [(a, uid) for a in anons[:1]] + [(f"new-dev-{n}", uid)]
            for i, (anon, user) in enumerate(devices):
                at = now + timedelta(seconds=60 * n + i)
                body = {"type": "identify" if user else "page", "messageId": f"after-{n}-{i}", "anonymousId": anon,
                        "userId": user, "timestamp": at.isoformat(),
                        "context": {"ip": "8.8.8.8", "userAgent": CHROME}, "traits": {"plan": "pro"}}
                new.append((anon.encode(), orjson.dumps(from_segment(body, source_id="t", received_at=at))))
                kinds.append(who)
        where_new = produce(platform.address, new)
        wait_for_lake(platform.lake, set(where_new), timeout=120, platform=platform, watch=("worker", "lake"))
        outs = consume(platform.address, OUTPUT_TOPICS, idle=1.5)
        platform.stop("lake")
        rebuild_failure = dbt_ok(run_dbt(["build"], platform.data_dir, vars_yaml=erase_vars))
        if rebuild_failure:  # B8: build again without the failing test, so that the rest can still be checked
            failure = dbt_ok(run_dbt(["build", "--exclude", NULL_DEVICE_TEST], platform.data_dir,
                                     vars_yaml=erase_vars))
            assert not failure, failure
        left = rows_left(platform.data_dir, values)
    finally:
        platform.close()

    decided: dict[tuple[int, int], list] = {}
    for topic, _p, _o, _k, v in outs:
        if isinstance(v, dict):
            decided.setdefault((v.get("raw_partition"), v.get("raw_offset")), []).append((topic, v))
    suppressed = delivered_erased = delivered_others = 0
    for w, who in zip(where_new, kinds, strict=True):
        got = decided.get(w, [])
        if who == "erased":
            if [(t, v["ledger"].get("reason")) for t, v in got] == [(topics.SUPPRESSED, "erased")]:
                suppressed += 1
            delivered_erased += any(t in topics.DESTINATIONS for t, _ in got)
        else:
            delivered_others += any(t in topics.DESTINATIONS for t, _ in got)
    n_erased_new = kinds.count("erased")
    figure("7 erasure", f"{len(erased)} profiles erased ({len(values)} identifiers) of {len(candidates)}",
           rows_left=sum(left.values()), lake_rows_removed=result.total_rows_removed,
           new_events_suppressed=f"{suppressed}/{n_erased_new}", new_events_delivered=delivered_erased,
           others_delivered=f"{delivered_others}/{kinds.count('other')}", erasure_flow_s=round(erasure_s, 1),
           rebuild_after_their_return="FAILED (B8)" if rebuild_failure else "ok", where=sorted(left))
    return {"left": left, "removed": result.total_rows_removed, "suppressed": suppressed, "n_new": n_erased_new,
            "delivered_erased": delivered_erased, "delivered_others": delivered_others,
            "rebuild_failure": rebuild_failure}


def test_erased_profiles_leave_no_row_anywhere(erasure):
    assert erasure["removed"] > 0
    assert not erasure["left"], erasure["left"]


def test_new_events_of_erased_profiles_are_suppressed_at_the_first_mile(erasure):
    assert erasure["suppressed"] == erasure["n_new"] and erasure["delivered_erased"] == 0
    assert erasure["delivered_others"] > 0


def test_the_warehouse_still_builds_after_erased_people_send_events(erasure):
    assert not erasure["rebuild_failure"], erasure["rebuild_failure"][-800:]
