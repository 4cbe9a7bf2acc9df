"""The ``postgres`` destination: routed events as rows of one table, the event id as its primary key.

Built on psycopg2 directly (with ``execute_values``, as Quix's own sink does), behind the :class:`Sender` protocol;
the Quix part is the sink base: every destination type is delivered by the lane's
:class:`~streaming.delivery.sink.DestinationSink`, a Quix ``BatchingSink`` (batching, backpressure, offsets committed
only after a batch was settled). Quix Streams' built-in ``quixstreams.sinks.community.postgresql.PostgreSQLSink``
(3.28) falls short here, read from its source:

- it is a sink of its own that raises one ``PostgreSQLSinkException`` for every failure, where the delivery tier
  needs an answer per chunk (delivered / retry / final) to route events to the retry or dead-letter topic;
- it infers the table from the first row's Python types and grows it with ``ALTER TABLE ADD COLUMN`` (an ISO
  timestamp would be ``TEXT``; no jsonb copy of the record, no ``delivered_at``), and takes a batch's columns from its
  first row only (a field absent from the first event is dropped for the whole batch);
- ``on_conflict_do_nothing`` is an untargeted ``ON CONFLICT DO NOTHING``, which also hides a violation of any other
  unique constraint, where only the event-id conflict is a replay;
- it takes host/port/user/password rather than a DSN, connects once in ``setup()`` and never reconnects (after a
  lost connection its own ``rollback()`` raises on the closed connection), and registers ``Json`` adapters for
  ``dict``/``list``/``tuple`` process-wide.

What this sender does: the table (:data:`COLUMNS`) is created if missing; a chunk is one transaction of one
``INSERT ... ON CONFLICT (event_id) DO NOTHING`` (a replay, or the batch in flight when a lane was killed, never
duplicates a row: the first copy wins); connection errors and transient server states (SQLSTATE classes 08, 40, 53,
57, 58, XX, lock timeouts, a read-only standby) answer ``retry`` and the next send reconnects; every other SQLSTATE
(bad values, constraints other than the key conflict, an undefined table after creating it failed, permission
denied) answers ``final`` with the code and the server's message, naming the column and the event when the fault is
a value (probed once the chunk has failed). A connection that was idle when the server restarted is reopened and
the chunk tried once more within the same send. The DSN comes from the environment variable named by ``dsn_env``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Literal

import psycopg2
from psycopg2 import errorcodes, errors, sql
from psycopg2.extensions import connection as PgConnection  # noqa: N812 - psycopg2's class name
from psycopg2.extras import Json, execute_values

from streaming.delivery.config import Destination
from streaming.delivery.senders import MAX_BODY, SendResult

logger = logging.getLogger(__name__)

#: The table's columns and their types, in insert order; ``delivered_at`` (default ``now()``) follows.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "text"), ("profile_id", "text"), ("type", "text"), ("event_name", "text"),
    ("event_ts", "timestamptz"), ("received_at", "timestamptz"), ("properties", "jsonb"), ("traits", "jsonb"),
    ("consent", "jsonb"), ("record", "jsonb"),
)
JSON_COLUMNS = frozenset(name for name, kind in COLUMNS if kind == "jsonb")
#: SQLSTATE classes that say "not now" rather than "not this": connection exception, transaction rollback
#: (serialization failure, deadlock), insufficient resources, operator intervention (admin shutdown, statement
#: timeout, cannot connect now), system error, internal error.
TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58", "XX"})
#: ... and single codes of other classes: lock not available, object in use, read-only transaction (a standby
#: during a failover), idle-in-transaction timeout.
TRANSIENT_CODES = frozenset({"55P03", "55006", "25006", "25P03"})
#: At most this many events are probed for the culprit value of a failed chunk.
MAX_PROBED = 1000


def outcome_of(exc: BaseException) -> Literal["retry", "final"]:
    """``retry`` or ``final`` for an error of a send (see the module docstring)."""
    code = getattr(exc, "pgcode", None)
    if code:
        return "retry" if code[:2] in TRANSIENT_CLASSES or code in TRANSIENT_CODES else "final"
    # no SQLSTATE: the client library's own errors; a lost or refused connection is the only transient one
    return "retry" if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError) else "final"


def probe_worthy(exc: BaseException) -> bool:
    """A refused value (a data exception, a type that does not cast), rather than the table or the role."""
    code = getattr(exc, "pgcode", None) or ""
    return isinstance(exc, ValueError) or code[:2] == "22" or code in ("42804", "42846")


def describe(exc: BaseException) -> str:
    code = getattr(exc, "pgcode", None)
    message = (getattr(exc, "pgerror", None) or str(exc)).strip().removeprefix("ERROR:").strip()
    if code:
        message = f"{code} {(errorcodes.lookup(code) or '').lower()}: {message}"
    diag = getattr(exc, "diag", None)
    column = getattr(diag, "column_name", None) if diag is not None else None
    if column and column not in message:
        message += f" (column {column})"
    return f"{type(exc).__name__}: {message}"


def _json(value: Any) -> Json | None:
    return None if value is None else Json(value, dumps=lambda v: json.dumps(v, ensure_ascii=False,
                                                                             separators=(",", ":")))


def to_row(record: dict[str, Any]) -> tuple[Any, ...]:
    """A routed record as the table's row (:data:`COLUMNS`); the whole record goes into ``record``."""
    if not isinstance(record, dict):
        raise ValueError(f"a routed record must be a JSON object, not {type(record).__name__}")
    return tuple(_json(record if name == "record" else record.get(name)) if name in JSON_COLUMNS
                 else record.get(name) for name, _ in COLUMNS)


class PostgresSender:
    """Rows into ``destination.table`` over one connection, reopened when lost (see the module docstring)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.dsn = destination.secret(destination.dsn_env) or ""
        self.table = sql.Identifier(destination.table)
        self.conn: PgConnection | None = None
        self.table_ready = False
        self.timeout_ms = int(destination.timeout_s * 1000)
        self.insert = sql.SQL("INSERT INTO {table} ({columns}) VALUES %s ON CONFLICT (event_id) DO NOTHING").format(
            table=self.table, columns=sql.SQL(", ").join(sql.Identifier(name) for name, _ in COLUMNS))
        self.template = "(" + ", ".join(f"%s::{kind}" for _, kind in COLUMNS) + ")"

    # ---- the Sender protocol ----------------------------------------------------------------------------------
    def send(self, events: list[dict[str, Any]]) -> SendResult:
        if not events:
            return SendResult("delivered")
        try:
            rows = [to_row(e) for e in events]
        except (TypeError, ValueError) as exc:
            return SendResult("final", error=f"{type(exc).__name__}: {exc}")
        for attempt in (1, 2):
            reused = self.conn is not None
            try:
                self._write(rows)
                return SendResult("delivered")
            except (psycopg2.Error, ValueError) as exc:
                # ValueError: psycopg2 refuses a value before sending it (a NUL character in a string)
                lost = self._after_failure()
                outcome: Literal["retry", "final"] = outcome_of(exc) if isinstance(exc, psycopg2.Error) else "final"
                dropped = isinstance(exc, errors.UndefinedTable) and self.table_ready
                if attempt == 1 and ((lost and reused) or dropped):
                    # idle when the server restarted, or the table dropped since: once more, at once
                    self.table_ready = False
                    logger.info("postgres destination %s: %s; trying again", self.destination.id,
                                "connection lost" if lost else "table gone")
                    continue
                error = describe(exc)
                if outcome == "final" and probe_worthy(exc):
                    culprit = self._culprit(events, rows)
                    error = f"{culprit}: {error}" if culprit else error
                return SendResult(outcome, error=error[:MAX_BODY])
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    # ---- one chunk, one transaction ---------------------------------------------------------------------------
    def _connect(self) -> PgConnection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(
                self.dsn, connect_timeout=max(1, math.ceil(self.destination.timeout_s)),
                application_name=f"firstmile-delivery-{self.destination.id}",
                keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
            self.table_ready = False
        return self.conn

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self._connect()
        if not self.table_ready:
            self._create_table(conn)
        with conn.cursor() as cur:
            cur.execute("SET LOCAL statement_timeout = %s", (self.timeout_ms,))
            execute_values(cur, self.insert, rows, template=self.template, page_size=len(rows))
        conn.commit()

    def _create_table(self, conn: PgConnection) -> None:
        """Created if missing, in its own transaction; an existing table is used as it is (the delivery role may
        hold INSERT on it and no CREATE on its schema)."""
        name = self.table.as_string(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (name,))
            row = cur.fetchone()
            if row is None or row[0] is None:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))  # the other lane creates it too
                columns = sql.SQL(", ").join(
                    sql.SQL("{} {}{}").format(sql.Identifier(col), sql.SQL(kind),
                                              sql.SQL(" PRIMARY KEY" if col == "event_id" else
                                                      " NOT NULL" if col == "record" else ""))
                    for col, kind in COLUMNS)
                cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, delivered_at timestamptz NOT NULL "
                                    "DEFAULT now())").format(self.table, columns))
                logger.info("postgres destination %s: table %s ready", self.destination.id, name)
        conn.commit()
        self.table_ready = True

    def _after_failure(self) -> bool:
        """Roll back; True when the connection is gone (it is dropped, the next send opens a new one)."""
        conn = self.conn
        if conn is None:
            return True
        if not conn.closed:
            try:
                conn.rollback()
                return False
            except psycopg2.Error:
                pass
        self.close()
        return True

    def _culprit(self, events: list[dict[str, Any]], rows: list[tuple[Any, ...]]) -> str | None:
        """Which column of which event the server refuses (probed value by value, once a chunk has failed)."""
        conn = self.conn
        if conn is None:
            return None
        try:
            with conn.cursor() as cur:
                for event, row in zip(events[:MAX_PROBED], rows, strict=False):
                    for (column, kind), value in zip(COLUMNS, row, strict=True):
                        try:
                            cur.execute(f"SELECT %s::{kind}", (value,))
                        except (psycopg2.DataError, psycopg2.ProgrammingError, ValueError):
                            conn.rollback()
                            return f"{column} of event {event.get('event_id')!r}"
            conn.rollback()
        except psycopg2.Error:
            self._after_failure()
        return None
