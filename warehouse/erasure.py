"""Right to be forgotten in the landing zone: rewrite the lake's Parquet files without an erased profile's rows.

The flow (see ``dbt_project/README.md``, "Erasure"):

1. The request (a profile id) goes into ``seeds/erasure_requests.csv`` or ``--vars '{erase_profile_ids: [...]}'``,
   or arrives through ``POST /v1/regulations`` and the Dagster ``erasure`` job appends it to the erasure trail
   (:mod:`warehouse.erasure_trail`), which ``stg_erasure_requests`` reads too.
2. ``dbt build``: ``stg_erased_identifiers`` collects every identifier seen with the profile (profile, user,
   anonymous and device ids, hashed emails) and keeps them (it accumulates); staging drops every row carrying any
   of them, the incremental models rebuild, and ``erasure_suppression_list`` publishes them for the hot path.
3. :func:`erase_profiles` with those identifiers (:func:`suppression_identifiers` reads them from the DuckDB
   file) rewrites the landing zone so that no file holds such a row any more.
4. The next ``dbt build`` re-reads the rewritten files (the manifest sees their new size and time) and changes
   nothing: the rows were already gone from the warehouse.

A row matches as staging defines it (``macros/lake.sql`` ``not_erased``, ``stg_deliveries``, ``stg_dlq``): in the
decided streams when any of ``profile_id, user_id, anonymous_id, device_id, email_hash`` is an erased identifier;
in ``deliveries`` when ``profile_id`` or ``device_id`` is; in ``dlq`` when the original bytes contain one.
Each file is rewritten atomically (temp file + ``os.replace``); a file left without rows is deleted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from warehouse.lake import STREAMS

#: The columns whose value identifies a profile, per stream (as the dbt staging models match them).
MATCH_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("profile_id", "user_id", "anonymous_id", "device_id", "email_hash"),
    "quarantine": ("profile_id", "user_id", "anonymous_id", "device_id", "email_hash"),
    "suppressed": ("profile_id", "user_id", "anonymous_id", "device_id", "email_hash"),
    "deliveries": ("profile_id", "device_id"),
}


@dataclass
class ErasureResult:
    """What :func:`erase_profiles` did."""

    files_scanned: int = 0
    rows_removed: dict[str, int] = field(default_factory=dict)  # per stream
    files_rewritten: list[Path] = field(default_factory=list)
    files_deleted: list[Path] = field(default_factory=list)

    @property
    def total_rows_removed(self) -> int:
        return sum(self.rows_removed.values())


def _values(identifiers: Iterable[str | tuple[str, str]]) -> list[str]:
    values = set()
    for item in identifiers:
        value = item[1] if isinstance(item, tuple) else item
        if value:
            values.add(str(value))
    return sorted(values)


def suppression_identifiers(duckdb_path: Path | str) -> list[tuple[str, str]]:
    """``(identifier_type, identifier_value)`` of ``erasure_suppression_list`` (opened read-only)."""
    con = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        return [(t, v) for t, v in con.execute(
            "select identifier_type, identifier_value from erasure_suppression_list order by 1, 2").fetchall()]
    finally:
        con.close()


def _row_filter(stream: str, values: list[str], columns: set[str]) -> pl.Expr:
    """True for rows to erase."""
    if stream == "dlq":
        if "original" not in columns:
            return pl.lit(False)
        hit = pl.lit(False)
        for v in values:
            hit = hit | pl.col("original").bin.contains(v.encode()).fill_null(False)
        return hit
    hit = pl.lit(False)
    for column in MATCH_COLUMNS[stream]:
        if column in columns:
            hit = hit | pl.col(column).is_in(values).fill_null(False)
    return hit


def erase_profiles(lake: Path | str, identifiers: Iterable[str | tuple[str, str]]) -> ErasureResult:
    """Remove from every Parquet file of the landing zone each row carrying one of ``identifiers``.

    ``identifiers`` are identifier values (or ``(type, value)`` pairs, e.g. :func:`suppression_identifiers`):
    a value matches in any identifying column, as the dbt staging models match it. Returns counts; files without
    a match are not touched. Not concurrent-safe against a writer of the *same* file (the lake sink writes new
    files; a rewrite of an old batch after a crash would re-add rows: erase again after such a recovery).
    """
    lake = Path(lake)
    values = _values(identifiers)
    result = ErasureResult()
    if not values:
        return result
    for stream in STREAMS:
        root = lake / stream
        if not root.exists():
            continue
        removed_in_stream = 0
        for path in sorted(root.rglob("*.parquet")):
            result.files_scanned += 1
            schema = pl.read_parquet_schema(path)
            predicate = _row_filter(stream, values, set(schema))
            hits = pl.scan_parquet(path, hive_partitioning=False).select(predicate.sum()).collect().item()
            if not hits:
                continue
            frame = pl.read_parquet(path, hive_partitioning=False)
            kept = frame.filter(~predicate)
            removed_in_stream += frame.height - kept.height
            if kept.height == 0:
                os.remove(path)
                result.files_deleted.append(path)
                continue
            tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
            kept.write_parquet(tmp)
            os.replace(tmp, path)
            result.files_rewritten.append(path)
        result.rows_removed[stream] = removed_in_stream
    return result
