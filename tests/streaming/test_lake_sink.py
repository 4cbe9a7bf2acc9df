"""The lake sink (streaming/lake_sink.py) on tmp_path, without Kafka: records added and flushed as the checkpoint
drives a Quix ``BatchingSink`` (``add`` per record, ``flush`` at the commit), landing in the date-partitioned
layout of warehouse/lake.py."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from streaming import pii
from streaming import settings as topics
from streaming.lake_sink import STREAM_OF_TOPIC, LakeSink
from warehouse import lake

SECRET = b"lake-secret-0123456789"


def decided(event_id: str, day: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "track", "event_name": "Product Viewed", "profile_id": "p1",
            "device_id": "d1", "session_id": "d1:1", "event_ts": f"{day}T10:00:00Z",
            "received_at": f"{day}T10:00:01Z", "country": "US", "region": "US", "policy_version": 3,
            "consent": {"analytics": True}, "destinations": ["dest.warehouse"], "raw_partition": 0,
            "raw_offset": 9, "properties": {"category": "shoes", "note": "private"}, "features": {"page_views": 2},
            "ledger": {"policy_version": 3, "destinations": {"dest.warehouse": "sent"}}, **extra}


def flush(sink: LakeSink, topic: str, partition: int, records: list[tuple[int, Any]]) -> None:
    for offset, value in records:
        sink.add(value=value, key=b"k", timestamp=0, headers=[], topic=topic, partition=partition, offset=offset)
    sink.flush()


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def test_decided_records_land_per_event_date_named_after_their_offsets(tmp_path):
    sink = LakeSink(tmp_path, "events")
    flush(sink, topics.DEST_WAREHOUSE, 2, [(40, decided("e1", "2026-11-01")), (41, decided("e2", "2026-11-02")),
                                           (42, decided("e3", "2026-11-02"))])
    stem = f"{topics.DEST_WAREHOUSE}+2+{40:012d}+{42:012d}.parquet"
    assert files(tmp_path) == [f"events/event_date=2026-11-01/{stem}", f"events/event_date=2026-11-02/{stem}"]
    rows = pl.read_parquet(tmp_path / "events" / "event_date=2026-11-02" / stem).to_dicts()
    assert [r["event_id"] for r in rows] == ["e2", "e3"]
    assert [r["kafka_offset"] for r in rows] == [41, 42] and {r["kafka_partition"] for r in rows} == {2}
    assert rows[0]["f_page_views"] == 2.0 and rows[0]["ledger"].startswith("{")
    assert sink.files_written == 2


def test_a_batch_delivered_again_rewrites_the_same_files(tmp_path):
    sink = LakeSink(tmp_path, "events")
    batch = [(7, decided("e1", "2026-11-01")), (8, decided("e2", "2026-11-01"))]
    flush(sink, topics.DEST_WAREHOUSE, 0, batch)
    first = files(tmp_path)
    flush(sink, topics.DEST_WAREHOUSE, 0, batch)  # a crash after the write, before the commit
    assert files(tmp_path) == first
    assert pl.read_parquet(tmp_path / first[0]).height == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_deliveries_keep_only_the_delivery_columns(tmp_path):
    sink = LakeSink(tmp_path, "deliveries")
    flush(sink, topics.DEST_MARKETING, 1, [(3, decided("e1", "2026-11-01"))])
    (path,) = tmp_path.rglob("*.parquet")
    frame = pl.read_parquet(path)
    assert set(frame.columns) == set(lake.DELIVERY_COLUMNS)
    assert frame.row(0, named=True)["kafka_topic"] == topics.DEST_MARKETING
    assert "private" not in str(frame.to_dicts())


def test_the_dlq_keeps_the_original_bytes_without_clear_pii(tmp_path):
    original = b'{"type":"track","email":"jane@example.com","ip":"85.214.132.117"'  # cut short: invalid JSON
    value = {"event_id": None, "reason": "invalid_json", "detail": "unexpected end",
             "original": base64.b64encode(original).decode(), "received_at": "2026-11-03T08:00:00Z",
             "raw_partition": 1, "raw_offset": 5}
    sink = LakeSink(tmp_path, "dlq", secret=SECRET)
    flush(sink, topics.DLQ, 1, [(5, value)])
    assert files(tmp_path) == [f"dlq/event_date=2026-11-03/{topics.DLQ}+1+{5:012d}+{5:012d}.parquet"]
    row = pl.read_parquet(next(tmp_path.rglob("*.parquet"))).row(0, named=True)
    assert row["reason"] == "invalid_json"
    stored = row["original"]
    assert isinstance(stored, bytes)
    assert b"jane@example.com" not in stored and b"85.214.132.117" not in stored
    assert pii.keyed_hash("jane@example.com", SECRET).encode() in stored
    assert stored.startswith(b'{"type":"track"')


def test_an_empty_flush_writes_nothing(tmp_path):
    sink = LakeSink(tmp_path, "events")
    sink.flush()
    assert files(tmp_path) == [] and sink.files_written == 0


def test_delivery_outcomes_land_per_event_date_for_reconciliation(tmp_path):
    outcome = {"event_id": "e1", "destination": "crm", "routed_topic": topics.DEST_SALES, "profile_id": "p1",
               "event_ts": "2026-11-01T23:59:00Z", "status": "retrying", "attempt": 2, "lane": "retry",
               "http_status": 503, "reason": None, "at": "2026-11-02T00:01:00Z"}
    sink = LakeSink(tmp_path, "delivery_outcomes")
    flush(sink, topics.DELIVERY_OUTCOMES, 0, [(7, outcome)])
    (path,) = tmp_path.rglob("*.parquet")
    assert path.parent.name == "event_date=2026-11-01"  # the routed event's day, not the attempt's
    row = pl.read_parquet(path).row(0, named=True)
    assert (row["destination"], row["status"], row["attempt"], row["http_status"]) == ("crm", "retrying", 2, 503)


@pytest.mark.parametrize(("topic", "stream"), [(topics.DEST_WAREHOUSE, "events"), (topics.QUARANTINE, "quarantine"),
                                                (topics.SUPPRESSED, "suppressed"), (topics.DLQ, "dlq"),
                                                (topics.DELIVERY_OUTCOMES, "delivery_outcomes")])
def test_each_topic_lands_in_its_stream(topic, stream):
    assert STREAM_OF_TOPIC[topic] == stream and stream in lake.STREAMS
    assert topics.DEST_MARKETING not in STREAM_OF_TOPIC  # a delivery target, not the record
