"""Right to be forgotten end to end: dbt erasure, then warehouse.erasure.erase_profiles on the landing zone, then
another dbt build: no row of the erased profile anywhere (lake files and every DuckDB table but the suppression
list), every other profile's rows untouched, and the suppression list still complete after the lake lost them.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.warehouse import scenario
from tests.warehouse.dbt_runner import run_dbt
from warehouse.erasure import erase_profiles, suppression_identifiers
from warehouse.lake import write_batch

ERASED_IDS = ("p-erase", "anon-x", "u-x", "eh-x")
SUPPRESSION_TABLES = {"erasure_suppression_list", "stg_erased_identifiers", "stg_erasure_requests"}


def _lake_rows(lake: Path) -> dict[str, pl.DataFrame]:
    """Every lake row per stream, all columns as strings (hive columns off), sorted."""
    out = {}
    for stream_dir in sorted(p for p in lake.iterdir() if p.is_dir()):
        files = sorted(stream_dir.rglob("*.parquet"))
        frames = [pl.read_parquet(f, hive_partitioning=False)
                  .with_columns(pl.col(pl.Binary).bin.encode("hex"))
                  .with_columns(pl.all().cast(pl.String)) for f in files]
        frame = pl.concat(frames, how="diagonal") if frames else pl.DataFrame()
        out[stream_dir.name] = frame.sort(frame.columns) if frame.height else frame
    return out


def _mentions(frame: pl.DataFrame, values: tuple[str, ...]) -> int:
    if frame.height == 0:
        return 0
    hit = pl.lit(False)
    for column in frame.columns:
        for v in values:
            hit = hit | pl.col(column).str.contains(v, literal=True).fill_null(False)
    return frame.filter(hit).height


def test_erase_profiles_rewrites_only_matching_files(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    sc = scenario.Scenario()
    sc.add("events", device="anon-x", profile="p-erase", user="u-x", ts=scenario.DAY1)
    sc.add("events", device="anon-ok", profile="p-ok", ts=scenario.DAY1)
    sc.add("events", device="anon-ok2", profile="p-ok2", email_hash="eh-x", ts=scenario.DAY2)  # shares an email
    write_batch(lake, "events", sc.streams["events"][:2], file_stem="lake.events+0+a")
    write_batch(lake, "events", sc.streams["events"][2:], file_stem="lake.events+0+b")
    untouched = lake / "quarantine" / "event_date=2026-03-02" / "lake.quarantine+0+c.parquet"
    sc.add("quarantine", device="bot", ts=scenario.DAY1, is_bot=True)
    write_batch(lake, "quarantine", sc.streams["quarantine"], file_stem="lake.quarantine+0+c")
    mtime = untouched.stat().st_mtime_ns
    write_batch(lake, "dlq", [{"event_id": "bad", "reason": "invalid", "original": '{"anonymousId": "anon-x"}',
                               "received_at": scenario.DAY1.isoformat()},
                              {"event_id": "bad2", "reason": "invalid", "original": b"\xff{}",
                               "received_at": scenario.DAY1.isoformat()}], file_stem="lake.dlq+0+d")

    result = erase_profiles(lake, [("profile", "p-erase"), ("anonymous", "anon-x"), "u-x", "eh-x"])

    assert result.rows_removed == {"events": 2, "quarantine": 0, "dlq": 1}
    assert result.total_rows_removed == 3
    assert len(result.files_rewritten) == 2 and len(result.files_deleted) == 1  # day 2's file had only the match
    assert untouched.stat().st_mtime_ns == mtime
    rows = _lake_rows(lake)
    assert rows["events"]["device_id"].to_list() == ["anon-ok"]
    assert rows["dlq"]["event_id"].to_list() == ["bad2"]
    assert not list(lake.rglob("*.tmp"))
    assert erase_profiles(lake, ["u-x"]).total_rows_removed == 0  # idempotent
    assert erase_profiles(lake, []).files_scanned == 0


@pytest.mark.integration
def test_erasure_leaves_nothing_in_lake_or_warehouse(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    scenario.build(lake)
    before = _lake_rows(lake)
    erase = f"{{erase_profile_ids: [{scenario.ERASED_PROFILE}]}}"

    # 1. a build without the request, then with it: the request alone clears the warehouse (incremental models
    #    rebuild when the erased identifiers change)
    first = run_dbt(["build"], lake=lake, workdir=tmp_path)
    assert first.returncode == 0, first.stdout[-6000:]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert con.execute("select count(*) from stg_decided where device_id = 'anon-x'").fetchone() == (3,)
    con.close()
    second = run_dbt(["build"], lake=lake, workdir=tmp_path, vars_yaml=erase)
    assert second.returncode == 0, second.stdout[-6000:]

    # 2. the landing zone, with the identifiers the warehouse published
    identifiers = suppression_identifiers(tmp_path / "warehouse.duckdb")
    assert {("anonymous", "anon-x"), ("user", "u-x"), ("email_hash", "eh-x"), ("profile", "p-erase")} \
        <= set(identifiers)
    result = erase_profiles(lake, identifiers)
    assert result.rows_removed["events"] == 3 and result.rows_removed["deliveries"] == 3

    # 3. rebuild (the rewritten files are re-read), the request still in force
    third = run_dbt(["build"], lake=lake, workdir=tmp_path, vars_yaml=erase)
    assert third.returncode == 0, third.stdout[-6000:]

    after = _lake_rows(lake)
    assert {stream: _mentions(frame, ERASED_IDS) for stream, frame in after.items() if _mentions(frame, ERASED_IDS)} \
        == {}
    # other profiles untouched: exactly the rows without an erased identifier remain, byte for byte
    for stream, frame in before.items():
        hit = pl.lit(False)
        for column in ("profile_id", "user_id", "anonymous_id", "device_id", "email_hash"):
            if column in frame.columns:
                hit = hit | pl.col(column).is_in(list(ERASED_IDS)).fill_null(False)
        expected = frame.filter(~hit)
        assert after[stream].select(expected.columns).sort(expected.columns).equals(
            expected.sort(expected.columns)), stream

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    columns = con.execute("""select table_name, column_name from information_schema.columns
                             where data_type = 'VARCHAR' and table_schema = 'main'""").fetchall()
    leaks = []
    for table, column in columns:
        if table in SUPPRESSION_TABLES:
            continue
        hits = con.execute(
            f'select count(*) from "{table}" where ' + " or ".join(f'contains("{column}", ?)' for _ in ERASED_IDS),
            list(ERASED_IDS)).fetchone()
        if hits and hits[0]:
            leaks.append((table, column, hits[0]))
    assert leaks == []
    # the suppression list survived the lake losing the rows it was derived from
    assert {("anonymous", "anon-x"), ("user", "u-x"), ("email_hash", "eh-x")} <= set(
        con.execute("select identifier_type, identifier_value from erasure_suppression_list").fetchall())
    # other profiles' events are all there
    kept = [e for e in scenario.unique_events(scenario.build(tmp_path / "again"))
            if e["profile_id"] != scenario.ERASED_PROFILE]
    assert con.execute("select count(*) from stg_decided").fetchone() == (len(kept),)
    con.close()
