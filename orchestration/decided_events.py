"""The decided events the latency-impact report measures, read only through the warehouse's models.

* ``stg_decided``: dbt's one dedupe of the lake's decided streams (events, quarantine, suppressed), the copy that
  counts — one row per event id and device; an id another device sent too is kept apart as
  ``<event_id>@<device_id>`` (``sent_event_id`` keeps the id as sent). Each event's facts are selected with the
  fact catalog's own SQL (:data:`streaming.facts.SQL`, the expressions the backtest replays rules with), so a rule
  or route reads here exactly what the hot path derived (``identified`` is "linked through the device",
  ``ledger.identity.via``), not a definition of the report's own.
* ``stg_deliveries``: what the first mile delivered, one row per event and destination, keyed like stg_decided.
* the bot labels: the simulator's truth (``truth.parquet``) joined on the id as sent — and on the device when the
  truth names it (``device_id``), since a reused id is one event per device — else the devices the hot path ever
  quarantined.

The warehouse holds what dbt last built: :func:`pending_lake_files` says how many decided-stream files of the
landing zone ``stg_decided`` has not merged yet (the report states it rather than count a partial day as whole).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from streaming import facts as fact_catalog
from streaming.errors import FirstmileError
from warehouse.duck import connect, table_exists

#: The lake streams ``stg_decided`` merges (its manifest ``stg_lake_files`` lists their files).
DECIDED_STREAMS = ("events", "quarantine", "suppressed")
#: The columns of ``stg_decided`` the report reads besides the facts.
COLUMNS = ("event_id", "sent_event_id", "event_id_reused", "stream", "device_id", "profile_id", "session_id",
           "event_ts", "received_at", "ip_hash", "country", "consent", "policy_version", "bot_reasons", "ledger")
FROM_TRUTH = "the simulator's truth"
FROM_QUARANTINE = "devices the hot path ever quarantined"


class WarehouseNotBuilt(FirstmileError, FileNotFoundError):
    """The warehouse lacks the models the report reads: run the warehouse build (dbt) first."""


class AmbiguousTruth(FirstmileError, ValueError):
    """The truth file names an event id on several rows with nothing to tell their events apart."""


@dataclass(frozen=True)
class DecidedEvents:
    """``rows``: stg_decided in event-time order, each with :data:`COLUMNS`, ``facts`` (fact name → value, by the
    catalog's SQL), ``is_bot_label`` and ``truth_consent`` (the consent the person had given, JSON; ``None``
    without a truth). ``delivered``: destination → the event ids (stg_decided's) the first mile delivered to it."""

    rows: list[dict[str, Any]]
    delivered: dict[str, set[str]]
    labels: str
    truth: bool
    #: decided-stream files of the landing zone stg_decided has not merged (``None``: the lake is not local)
    lake_files_pending: int | None


def facts_sql(available: Collection[str]) -> str:
    """Every catalog fact of a ``stg_decided`` row as one DuckDB struct, each by the catalog's own expression; a
    column an older warehouse lacks reads NULL (its rules never fire), as in :func:`ml.backtest.backtest`."""
    items = ", ".join(f"'{name}': {sql if not sql.isidentifier() or sql in available else 'NULL'}"
                      for name, sql in fact_catalog.SQL.items())
    return "{" + items + "}"


def holds(predicate: Any, row: Mapping[str, Any]) -> bool:
    """A compiled rule or route condition over an event's catalog facts. A fact the event does not carry
    (suppressed records keep no features) reads ``None``; a condition it makes fail to evaluate is false."""
    try:
        return bool(predicate(row["facts"]))
    except (TypeError, KeyError, ValueError):
        return False


def read_decided(data_dir: Path) -> DecidedEvents:
    """The report's inputs from ``data_dir/warehouse.duckdb`` (+ ``data_dir/truth.parquet`` when present)."""
    duckdb_path, truth = data_dir / "warehouse.duckdb", data_dir / "truth.parquet"
    if not duckdb_path.exists():
        raise WarehouseNotBuilt(f"no warehouse at {duckdb_path}: run the warehouse build (dbt) first")
    with connect(duckdb_path) as con:
        for model in ("stg_decided", "stg_deliveries"):
            if not table_exists(con, model):
                raise WarehouseNotBuilt(f"{duckdb_path} has no {model}: run the warehouse build (dbt) first")
        con.execute("set TimeZone = 'UTC'")
        available = {row[0] for row in con.execute("describe stg_decided").fetchall()}
        labels, on = _labels(con, truth)
        cursor = con.execute(f"""
            with labels as ({labels})
            select {', '.join(f'd.{c}' for c in COLUMNS)},
                   coalesce(labels.is_bot_label, false) as is_bot_label, labels.truth_consent,
                   {facts_sql(available)} as facts
            from stg_decided d left join labels on {on}
            order by d.event_ts, d.received_at, d.event_id""")
        names = [c[0] for c in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        delivered: dict[str, set[str]] = {}
        for event_id, destination in con.execute(
                "select distinct event_id, destination from stg_deliveries").fetchall():
            delivered.setdefault(destination, set()).add(event_id)
        pending = pending_lake_files(con, data_dir / "lake")
    if not rows:
        raise WarehouseNotBuilt(f"stg_decided in {duckdb_path} holds no decided event")
    return DecidedEvents(rows=rows, delivered=delivered, labels=FROM_TRUTH if truth.exists() else FROM_QUARANTINE,
                         truth=truth.exists(), lake_files_pending=pending)


def _labels(con: duckdb.DuckDBPyConnection, truth: Path) -> tuple[str, str]:
    """The labels' SQL and its join condition with ``stg_decided d``. From the truth: its label and the consent the
    person had given, per event id as sent (and device, when the truth names it); an id on two truth rows that no
    device tells apart cannot be attributed to either event: refused, not guessed. Without a truth: every event of
    a device the hot path ever quarantined is a bot's."""
    if not truth.exists():
        return ("""select distinct device_id, true as is_bot_label, null::varchar as truth_consent
                   from stg_decided where stream = 'quarantine' and device_id is not null""",
                "labels.device_id = d.device_id")
    source = f"read_parquet('{truth}')"
    by_device = "device_id" in {row[0] for row in con.execute(f"describe select * from {source}").fetchall()}
    key = "event_id, device_id" if by_device else "event_id"
    row = con.execute(f"""select count(*), any_value(event_id) from (
        select {key} from {source} group by all having count(*) > 1)""").fetchone()
    if row and row[0]:
        apart = "with the same device_id" if by_device else "and no device_id column tells their events apart"
        raise AmbiguousTruth(f"{truth}: {row[0]} event ids are on several rows (e.g. {row[1]!r}) {apart}")
    return (f"select {key}, actor <> 'human' as is_bot_label, consent as truth_consent from {source}",
            "labels.event_id = d.sent_event_id" + (" and labels.device_id = d.device_id" if by_device else ""))


def pending_lake_files(con: duckdb.DuckDBPyConnection, lake: Path) -> int | None:
    """Decided-stream files in ``lake`` that ``stg_decided`` has not merged (by path under the lake and size, as its
    manifest ``stg_lake_files`` records them). ``None`` when the lake is not a local directory (the production
    shape reads it from S3) or the warehouse predates the manifest."""
    if not lake.is_dir() or not table_exists(con, "stg_lake_files"):
        return None
    merged = {(tuple(Path(name).parts[-3:]), size) for name, size in con.execute(
        "select filename, size from stg_lake_files where consumed_by_stg_decided is not null").fetchall()}
    listed = {(path.relative_to(lake).parts, path.stat().st_size)
              for stream in DECIDED_STREAMS for path in (lake / stream).rglob("*.parquet")}
    return len(listed - merged)
