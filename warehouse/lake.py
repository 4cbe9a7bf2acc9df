"""The landing zone's layout: what the lake sink writes and what dbt and ml read. Defined once, here.

Layout: ``<lake>/<stream>/event_date=YYYY-MM-DD/<topic>+<partition>+<first offset>+<last offset>.parquet``

* ``stream`` is one of :data:`STREAMS`: ``events`` (what ``dest.warehouse`` received), ``quarantine`` (bots),
  ``suppressed`` (ledger-only records of events no destination could receive: no payload), ``dlq`` (invalid
  events with the reason and the original bytes), ``deliveries`` (one metadata row per event and destination
  topic, for accounting and the consent audit) and ``delivery_outcomes`` (what the delivery tier did with each
  routed event per destination: delivered, retrying, dead-lettered, withheld; for reconciliation).
* ``event_date`` is the UTC date of the event time (skew-corrected device time), so late and backfilled events land
  in the partition of the day they happened, not the day they arrived.
* File names come from the Kafka offsets they hold, so a batch re-delivered after a crash rewrites the same file
  instead of adding a copy (dbt still dedupes on ``event_id``: client retries produce distinct offsets).

The columns are the hot path's records (``streaming/decided.py``, the one declaration of the decided record) in
their storage types: nested values as JSON text (:data:`JSON_COLUMNS`), session features as ``f_<name>`` columns,
plus where the lake sink read each record (:data:`SINK_COLUMNS`). The warehouse may not import the hot path, so the
schemas below are checked against the contract by ``tests/warehouse/test_lake_contract.py``, which also checks
dbt's copies (``dbt_project.yml`` vars) against them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

STREAMS: tuple[str, ...] = ("events", "quarantine", "suppressed", "dlq", "deliveries", "delivery_outcomes")

#: Where the lake sink read a record: on every stream.
SINK_COLUMNS: dict[str, pl.DataType] = {
    "kafka_topic": pl.String(),
    "kafka_partition": pl.Int64(),
    "kafka_offset": pl.Int64(),
}

#: One row per (event, destination topic) delivered: no payload, for accounting and the consent audit.
DELIVERY_COLUMNS = ("event_id", "profile_id", "device_id", "session_id", "type", "event_name", "event_ts",
                    "received_at", "country", "region", "consent", "policy_version", "raw_partition", "raw_offset",
                    *SINK_COLUMNS)

#: Columns of the decided streams (events, quarantine, suppressed). Features land as ``f_<name>`` columns beside.
DECIDED_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "type": pl.String(),
    "event_name": pl.String(),
    "anonymous_id": pl.String(),
    "user_id": pl.String(),
    "profile_id": pl.String(),
    "device_id": pl.String(),
    "source_id": pl.String(),
    "event_ts": pl.Datetime("us", "UTC"),
    "received_at": pl.Datetime("us", "UTC"),
    "clock_skew_ms": pl.Int64(),
    "session_id": pl.String(),
    "ip_hash": pl.String(),
    "ip_prefix": pl.String(),
    "email_hash": pl.String(),
    "user_agent": pl.String(),
    "country": pl.String(),
    "region": pl.String(),
    "asn": pl.String(),
    "datacenter": pl.Boolean(),
    "ua_crawler": pl.Boolean(),
    "browser": pl.String(),
    "os": pl.String(),
    "device_type": pl.String(),
    "page_path": pl.String(),
    "category": pl.String(),
    "revenue": pl.Float64(),
    "properties": pl.String(),
    "traits": pl.String(),
    "consent": pl.String(),
    "is_bot": pl.Boolean(),
    "bot_reasons": pl.String(),
    "bot_score": pl.Float64(),
    "score": pl.Float64(),
    "policy_version": pl.Int64(),
    "destinations": pl.String(),
    "ledger": pl.String(),
    "raw_partition": pl.Int64(),
    "raw_offset": pl.Int64(),
    **SINK_COLUMNS,
}

#: Columns of the ``dlq`` stream: the original bytes stored as bytes (PII scrubbed by the lake sink).
DLQ_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "original": pl.Binary(),
    "received_at": pl.Datetime("us", "UTC"),
    "raw_partition": pl.Int64(),
    "raw_offset": pl.Int64(),
    **SINK_COLUMNS,
}

#: One row per delivery outcome (``streaming/delivery/sink.py``): an event's attempts at one destination.
OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "destination": pl.String(),
    "routed_topic": pl.String(),
    "profile_id": pl.String(),
    "event_ts": pl.Datetime("us", "UTC"),
    "status": pl.String(),
    "attempt": pl.Int64(),
    "lane": pl.String(),
    "http_status": pl.Int64(),
    "reason": pl.String(),
    "at": pl.Datetime("us", "UTC"),
    **SINK_COLUMNS,
}

#: Decided columns that hold a nested value, stored as JSON text (keys sorted).
JSON_COLUMNS: tuple[str, ...] = ("properties", "traits", "consent", "bot_reasons", "destinations", "ledger")


def stream_glob(lake: Path | str, stream: str) -> str:
    """The glob DuckDB reads a stream with (``read_parquet(..., hive_partitioning=true, union_by_name=true)``)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown lake stream {stream!r}; expected one of {STREAMS}")
    return f"{str(lake).rstrip('/')}/{stream}/**/*.parquet"


def _parse_ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _decided_row(record: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in DECIDED_SCHEMA:
        value = record.get(column)
        if column in JSON_COLUMNS and value is not None and not isinstance(value, str):
            value = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
        row[column] = value
    row["event_ts"] = _parse_ts(row["event_ts"])
    row["received_at"] = _parse_ts(row["received_at"])
    for name, value in (record.get("features") or {}).items():
        row[f"f_{name}"] = float(value) if isinstance(value, int | float) else None
    return row


def _outcome_row(record: Mapping[str, Any]) -> dict[str, Any]:
    row = {column: record.get(column) for column in OUTCOME_SCHEMA}
    row["at"] = _parse_ts(row["at"]) or datetime.now(UTC)
    row["event_ts"] = _parse_ts(row["event_ts"]) or row["at"]
    return row


def _dlq_row(record: Mapping[str, Any]) -> dict[str, Any]:
    row = {column: record.get(column) for column in DLQ_SCHEMA}
    original = row["original"]
    if isinstance(original, str):
        row["original"] = original.encode("utf-8", "surrogateescape")
    row["received_at"] = _parse_ts(row["received_at"]) or datetime.now(UTC)
    return row


def partition_date(stream: str, row: Mapping[str, Any]) -> date:
    ts = row["received_at"] if stream == "dlq" else (row.get("event_ts") or row.get("received_at"))
    return (ts or datetime.now(UTC)).date()


def write_batch(lake: Path | str, stream: str, records: Iterable[Mapping[str, Any]], *,
                file_stem: str | None = None) -> list[Path]:
    """Write records of one stream as Parquet, one file per event date. Atomic (temp file + rename).

    ``file_stem`` names the files (the lake sink passes ``topic+partition+first+last`` offsets); without it a
    random stem is used. Returns the paths written.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown lake stream {stream!r}; expected one of {STREAMS}")
    if stream == "dlq":
        build, schema = _dlq_row, DLQ_SCHEMA
    elif stream == "delivery_outcomes":
        build, schema = _outcome_row, OUTCOME_SCHEMA
    elif stream == "deliveries":
        schema = {c: DECIDED_SCHEMA[c] for c in DELIVERY_COLUMNS}

        def build(record: Mapping[str, Any]) -> dict[str, Any]:
            return {c: v for c, v in _decided_row({**record, "features": None}).items() if c in schema}
    else:
        build, schema = _decided_row, DECIDED_SCHEMA
    by_date: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        row = build(record)
        by_date[partition_date(stream, row)].append(row)
    stem = file_stem or uuid.uuid4().hex
    written = []
    for day, rows in sorted(by_date.items()):
        extra = sorted({k for r in rows for k in r if k not in schema})
        frame = pl.DataFrame(rows, schema={**schema, **{k: pl.Float64() for k in extra}}, strict=False)
        directory = Path(lake) / stream / f"event_date={day.isoformat()}"
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{stem}.parquet"
        tmp = directory / f".{stem}.{uuid.uuid4().hex}.tmp"
        frame.write_parquet(tmp)
        os.replace(tmp, target)
        written.append(target)
    return written
