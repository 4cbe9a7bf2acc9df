"""Incremental models (stg_decided, int_session_features) give exactly what a full build gives.

Day 1 arrives and is built; then day 2 arrives with a duplicate of a day-1 event (client retry), a late day-1
event (landing in day 1's partition), a session crossing midnight, a device seen on both days and a new device;
a second build runs incrementally. A full build of the same lake into a fresh file must hold identical tables
(every table but the manifest's bookkeeping). A third run with nothing new changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.warehouse import scenario
from tests.warehouse.dbt_runner import run_dbt, table_differences
from warehouse.lake import write_batch

pytestmark = pytest.mark.integration

D1 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
D1_LATE_EVENING = datetime(2026, 4, 1, 23, 50, tzinfo=UTC)
D2 = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)


def _arrivals() -> tuple[scenario.Scenario, list[dict], list[dict]]:
    """(scenario, records arriving on day 1, records arriving on day 2), all streams, in arrival order."""
    sc = scenario.Scenario()
    day1: list[dict] = []
    day2: list[dict] = []
    a = {"device": "anon-a", "profile": "p-a"}
    for i in range(4):
        day1.append(sc.add("events", ts=D1 + timedelta(seconds=30 * i), **a, type_="track", name="Product Viewed",
                           properties={"category": f"c{i % 2}", "price": 10}))
    cart = sc.add("events", ts=D1 + timedelta(minutes=3), **a, type_="track", name="Product Added",
                  properties={"category": "c1", "price": 10, "quantity": 2})
    day1.append(cart)
    # a session crossing midnight on anon-m: starts 23:50 on day 1, continues after 00:00 on day 2
    m = {"device": "anon-m", "profile": "p-m"}
    for i in range(3):
        day1.append(sc.add("events", ts=D1_LATE_EVENING + timedelta(minutes=4 * i), **m))
    day1.append(sc.add("quarantine", ts=D1 + timedelta(minutes=5), device="bot-q", is_bot=True))
    day1.append(sc.add("suppressed", ts=D1 + timedelta(minutes=6), device="anon-s", profile="p-s",
                       consent=scenario.NONE))
    # ---- day 2 arrivals --------------------------------------------------------------------------------
    for i in range(3):  # anon-m's session goes on past midnight
        day2.append(sc.add("events", ts=D1_LATE_EVENING + timedelta(minutes=12 + 5 * i), **m))
    # a re-delivered duplicate of a day-1 event (client retry: new offsets, received on day 2)
    sc.offset += 1
    day2.append(dict(cart, kafka_offset=sc.offset, raw_offset=sc.offset,
                     received_at=(D2 + timedelta(minutes=1)).isoformat()))
    # a late day-1 event of anon-a (device offline), received on day 2: lands in day 1's partition
    day2.append(sc.add("events", ts=D1 + timedelta(minutes=4), **a, type_="track", name="Order Completed",
                       properties={"revenue": 25.0}, revenue=25.0))
    # anon-a comes back on day 2 (new session), logs in; a new device of the same user
    day2.append(sc.add("events", ts=D2, **a, type_="identify", user="u-a", email_hash="eh-a"))
    day2.append(sc.add("events", ts=D2 + timedelta(minutes=1), **a, user="u-a"))
    day2.append(sc.add("events", ts=D2 + timedelta(minutes=2), device="anon-b", profile="p-b", type_="identify",
                       user="u-a", email_hash="eh-a"))
    day2.append(sc.add("events", ts=D2 + timedelta(minutes=3), device="anon-b", profile="p-b", user="u-a",
                       type_="track", name="Order Completed", properties={"revenue": 12.0}, revenue=12.0))
    day2.append(sc.add("suppressed", ts=D2 + timedelta(minutes=4), device="anon-s", profile="p-s",
                       consent=scenario.NONE))
    return sc, day1, day2


def _write(lake: Path, records: list[dict], stem: str) -> None:
    """One lake file per stream and event day, as the lake sink writes a batch (topic ``lake.<stream>``)."""
    by_stream: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_stream[record["kafka_topic"].split(".", 1)[1]].append(record)
    for stream, rows in by_stream.items():
        write_batch(lake, stream, rows, file_stem=f"lake.{stream}+0+{stem}")


def _build(lake: Path, workdir: Path) -> None:
    result = run_dbt(["build"], lake=lake, workdir=workdir)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_incremental_run_equals_full_refresh(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _, day1, day2 = _arrivals()
    incremental = tmp_path / "incremental"
    full = tmp_path / "full"
    incremental.mkdir()
    full.mkdir()

    _write(lake, day1, "day1")
    _build(lake, incremental)
    _write(lake, day2, "day2")
    _build(lake, incremental)

    con = duckdb.connect(str(incremental / "warehouse.duckdb"), read_only=True)
    files = con.execute("""select count(*), count(consumed_by_stg_decided), count(consumed_by_int_session_features),
                                  count(distinct consumed_by_stg_decided)
                           from stg_lake_files""").fetchone()
    # both runs consumed their own files, and each consumer consumed every file exactly once
    assert files is not None and files[0] == files[1] == files[2] and files[3] == 2
    # the duplicate did not reappear; the first delivery (day 1) is kept
    cart_id = day1[4]["event_id"]
    assert con.execute("select count(*), min(received_at) from stg_decided where event_id = ?",
                       [cart_id]).fetchone() == (1, datetime.fromisoformat(day1[4]["received_at"]))
    # the late event sits on day 1, in anon-a's first session (arrival order: after the cart add)
    late = con.execute("""select event_date, session_id, session_event_number from int_session_features
                          where device_id = 'anon-a' and event_name = 'Order Completed'""").fetchone()
    assert late is not None and str(late[0]) == "2026-04-01" and late[2] == 6
    assert late[1] == f"anon-a:{int(D1.timestamp() * 1000)}"
    # the midnight session is one session of 6 events
    assert con.execute("select count(*), max(event_count) from sessions where device_id = 'anon-m'").fetchone() \
        == (1, 6)
    con.close()

    _build(lake, full)
    assert table_differences(incremental / "warehouse.duckdb", full / "warehouse.duckdb") == {}

    # nothing new: another run changes nothing
    _build(lake, incremental)
    assert table_differences(incremental / "warehouse.duckdb", full / "warehouse.duckdb") == {}
