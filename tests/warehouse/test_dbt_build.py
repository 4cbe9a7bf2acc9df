"""A real ``dbt build`` over a tiny real landing zone, asserted on the DuckDB file it produces.

One build per module (about 15 s): the scenario (tests/warehouse/scenario.py) covers duplicates, a reused event
id, a late and a backfilled event, bots caught and missed, a cross-device merge, a consent revocation, an erasure
and an empty DLQ stream. A second, compile-only run proves that a type change in the lake fails clearly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest

from streaming.sessions import FEATURES
from tests.warehouse import scenario
from tests.warehouse.dbt_runner import run_dbt

pytestmark = pytest.mark.integration

ERASED_IDS = ("p-erase", "anon-x", "u-x", "eh-x")


@dataclass
class Built:
    con: duckdb.DuckDBPyConnection
    sc: scenario.Scenario
    lake: Path
    seconds: float


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    work = tmp_path_factory.mktemp("warehouse")
    lake = work / "lake"
    sc = scenario.build(lake)
    # schema drift: a new field in one file is kept
    target = next((lake / "events" / "event_date=2026-03-03").glob("*.parquet"))
    pl.read_parquet(target).with_columns(pl.lit("B").alias("experiment_arm")).write_parquet(target)
    assert not (lake / "dlq").exists()
    started = time.monotonic()
    erase = f"{{erase_profile_ids: [{scenario.ERASED_PROFILE}]}}"
    result = run_dbt(["build"], lake=lake, workdir=work, vars_yaml=erase)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    yield Built(con, sc, lake, seconds)
    con.close()


def rows(con: duckdb.DuckDBPyConnection, sql: str, *params: object) -> list[dict[str, object]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def kept_events(sc: scenario.Scenario) -> list[dict[str, object]]:
    return [e for e in scenario.unique_events(sc) if e["profile_id"] != scenario.ERASED_PROFILE]


def test_empty_dlq_stream_builds_an_empty_typed_model(built: Built) -> None:
    assert built.con.execute("select count(*) from stg_dlq").fetchone() == (0,)
    types = dict(built.con.execute(
        "select column_name, data_type from information_schema.columns where table_name = 'stg_dlq'").fetchall())
    assert types["original"] == "BLOB" and types["received_at"] == "TIMESTAMP WITH TIME ZONE"


def test_duplicates_are_removed_first_delivery_wins(built: Built) -> None:
    kept = kept_events(built.sc)
    got = rows(built.con, "select event_id, kafka_offset, stream from stg_decided")
    assert len(got) == len(kept) == len({r["event_id"] for r in got})
    by_id = {r["event_id"]: r for r in got}
    redelivered = [r for r in built.sc.streams["events"] if r["kafka_offset"] == 9000][0]
    assert by_id[redelivered["event_id"]]["kafka_offset"] != 9000
    raw = built.con.execute("select count(*) from stg_lake_decided where event_id = ?",
                            [redelivered["event_id"]]).fetchone()
    assert raw == (2,)
    assert {r["stream"] for r in got} == {"events", "quarantine", "suppressed"}


def test_reused_event_id_is_flagged_not_merged(built: Built) -> None:
    conflicts = rows(built.con, "select * from event_id_conflicts")
    assert [c["event_id"] for c in conflicts] == ["ev-reused"]
    assert conflicts[0]["device_ids"] == "anon-r1,anon-r2"
    kept = rows(built.con, "select event_id, device_id, event_id_reused from stg_decided "
                           "where sent_event_id = 'ev-reused' order by event_id")
    assert kept == [{"event_id": "ev-reused", "device_id": "anon-r1", "event_id_reused": False},
                    {"event_id": "ev-reused@anon-r2", "device_id": "anon-r2", "event_id_reused": True}]


def test_backfilled_event_keeps_its_event_date(built: Built) -> None:
    late = rows(built.con, """
        select event_date, lake_partition_date from stg_decided
        where device_id = 'anon-h1' and event_ts = timestamptz '2026-03-02 09:02:50+00'""")
    assert late == [{"event_date": scenario.DAY1.date(), "lake_partition_date": scenario.DAY1.date()}]


def test_new_lake_field_is_kept(built: Built) -> None:
    arms = built.con.execute("select distinct experiment_arm from stg_decided order by 1").fetchall()
    assert arms == [("B",), (None,)]


def test_session_features_equal_python_recomputation(built: Built) -> None:
    expected = scenario.python_features(kept_events(built.sc))
    cols = ", ".join(f"f_{f}" for f in FEATURES)
    got = {r["event_id"]: r for r in rows(built.con, f"select event_id, session_id, {cols} from int_session_features")}
    assert set(got) == set(expected)
    for event_id, (session_id, features) in expected.items():
        assert got[event_id]["session_id"] == session_id, event_id
        for name, value in features.items():
            assert math.isclose(got[event_id][f"f_{name}"], value, rel_tol=1e-9, abs_tol=1e-9), (event_id, name)


def test_hot_path_stamps_agree_with_warehouse(built: Built) -> None:
    parity = rows(built.con, "select * from feature_parity")
    assert len(parity) == len(kept_events(built.sc))
    assert [p for p in parity if not p["is_match"]] == []


def test_sessions_mart(built: Built) -> None:
    s = {r["session_id"]: r for r in rows(built.con, "select * from sessions")}
    h1_day1 = s["anon-h1:1772442000000"]
    assert h1_day1["converted"] and h1_day1["revenue"] == 40.0 and h1_day1["f_cart_value"] == 40.0
    assert not h1_day1["hot_is_bot"]
    assert s["bot-1:1772442000000"]["hot_is_bot"] and s["bot-1:1772442000000"]["event_count"] == 15
    # day 2 on anon-h1 is a new session (more than 30 minutes later) that also holds the backfilled event
    assert s["anon-h1:1772528400000"]["event_count"] == 2


def test_bot_labels_in_hindsight(built: Built) -> None:
    labels = {r["device_id"]: r for r in rows(built.con, "select * from bot_labels")}
    assert labels["bot-1"]["label_bot"] and labels["bot-1"]["comparison"] == "both"
    assert labels["bot-2"]["label_bot"] and labels["bot-2"]["comparison"] == "hindsight_only"
    assert "regular_intervals" in labels["bot-2"]["label_reasons"]
    humans = [r for d, r in labels.items() if not d.startswith("bot-")]
    assert humans and not any(r["label_bot"] for r in humans)


def test_training_events_labels(built: Built) -> None:
    t = rows(built.con, "select * from training_events order by device_id, session_event_number")
    assert len(t) == len(kept_events(built.sc))
    assert all(r["stream"] != "dlq" for r in t)
    h1 = [r for r in t if r["session_id"] == "anon-h1:1772442000000"]
    order_at = next(r["session_event_number"] for r in h1 if r["event_name"] == "Order Completed")
    assert all(r["label_converted"] == (r["session_event_number"] <= order_at) for r in h1)
    assert all(r["label_bot"] for r in t if r["device_id"].startswith("bot-"))
    assert not any(r["label_bot"] for r in t if not r["device_id"].startswith("bot-"))
    assert {f"f_{f}" for f in FEATURES} <= set(t[0])


def test_identity_merges_the_edge_did_not_know(built: Built) -> None:
    merges = rows(built.con, "select from_profile_id, to_profile_id from identity_merges")
    assert merges == [{"from_profile_id": "p-h2", "to_profile_id": "p-h1"}]
    graph = {r["identifier_id"]: r["profile_id"] for r in rows(built.con, "select * from identity_graph")}
    assert graph["anonymous:anon-h2"] == graph["user:u-1"] == graph["email_hash:eh-1"] == "p-h1"
    assert graph["anonymous:bot-1"] != "p-h1"


def test_profiles_rfm(built: Built) -> None:
    p = {r["profile_id"]: r for r in rows(built.con, "select * from profiles")}
    h1 = p["p-h1"]
    assert (h1["devices"], h1["orders"], h1["total_revenue"]) == (2, 2, 70.0)
    # purchase days 2026-03-02 (40) and 2026-03-03 (30); as of 2026-03-03
    assert (h1["frequency"], h1["recency_days"], h1["t_days"], h1["monetary_value"]) == (1, 1, 1, 30.0)
    assert not p["p-c1"]["is_customer"] and p["p-c1"]["frequency"] is None
    assert "p-bot-1" not in p  # quarantined traffic never reaches analytics


def test_consent_audit(built: Built) -> None:
    audit = {(r["path"], r["destination"]): r for r in rows(built.con, "select * from consent_audit")}
    assert all(r["delivered_without_consent"] == 0 for (path, _), r in audit.items() if path == "first_mile")
    assert audit[("first_mile", "dest.warehouse")]["events_delivered"] > 0
    if (built.lake / "deliveries").exists():  # the lake sink's per-delivery stream, topics with a prefix
        assert built.con.execute(
            "select count(*), count(*) filter (where destination = 'dest.warehouse') from stg_deliveries"
        ).fetchone() == (audit[("first_mile", "dest.warehouse")]["events_delivered"],) * 2
    # the revocation and the two events after it: a nightly batch still delivers them to the warehouse
    assert audit[("nightly_batch", "dest.warehouse")]["delivered_without_consent"] == 3


def test_decision_quality_per_policy_version(built: Built) -> None:
    dq = {r["policy_version"]: r for r in rows(built.con, "select * from decision_quality")}
    assert set(dq) == {1, 2}
    v1 = dq[1]
    assert v1["bot_true_positives"] == 15 and v1["bot_false_negatives"] == 12 and v1["bot_false_positives"] == 0
    assert v1["bot_precision"] == 1.0
    assert dq[2]["identity_reattributed_events"] == 1  # h2's order was stamped p-h2; the warehouse says p-h1


def test_erasure_leaves_nothing_but_the_suppression_list(built: Built) -> None:
    allowed = {"erasure_suppression_list", "stg_erased_identifiers", "stg_erasure_requests"}
    columns = built.con.execute("""
        select table_name, column_name from information_schema.columns
        where data_type = 'VARCHAR' and table_schema = 'main'""").fetchall()
    leaks = []
    for table, column in columns:
        if table in allowed:
            continue
        hits = built.con.execute(
            f'select count(*) from "{table}" where ' + " or ".join(f'contains("{column}", ?)' for _ in ERASED_IDS),
            list(ERASED_IDS)).fetchone()
        if hits and hits[0]:
            leaks.append((table, column, hits[0]))
    assert leaks == []
    suppressed = {r["identifier_id"] for r in rows(built.con, "select identifier_id from erasure_suppression_list")}
    assert {"profile:p-erase", "anonymous:anon-x", "user:u-x", "email_hash:eh-x"} <= suppressed


def test_lake_type_change_fails_with_a_clear_message(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    sc = scenario.Scenario()
    sc.add("events", device="d-1", ts=scenario.DAY1, revenue=None)
    from warehouse.lake import write_batch

    write_batch(lake, "events", sc.streams["events"])
    target = next((lake / "events").rglob("*.parquet"))
    pl.read_parquet(target).with_columns(pl.lit("12.50").alias("revenue")).write_parquet(target)
    result = run_dbt(["compile", "-s", "stg_lake_decided"], lake=lake, workdir=tmp_path)
    assert result.returncode != 0
    assert "stream 'events' column 'revenue' is VARCHAR" in result.stdout, result.stdout[-3000:]
