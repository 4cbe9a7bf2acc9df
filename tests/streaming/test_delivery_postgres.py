"""The ``postgres`` destination against a real PostgreSQL server (tests/streaming/postgres_server.py: initdb + pg_ctl
on loopback): rows land with the declared columns; a replayed batch leaves one row per event; a stopped server
means retry and the next send after its restart succeeds; a refused value is final and named. End to end: an
embedded broker and a ``python -m streaming.delivery`` lane reading ``dest.warehouse``, killed with -9 mid-stream
and restarted, with the hot path's at-least-once duplicates on the routed topic: exactly one row per event.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import orjson
import psycopg2
import pytest
import yaml  # type: ignore[import-untyped]
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics
from streaming.delivery.app import create_delivery_topics
from streaming.delivery.config import parse_destinations
from streaming.delivery.postgres import PostgresSender, outcome_of
from streaming.delivery.senders import make_sender
from streaming.delivery.sink import OUTCOMES
from streaming.settings import StreamingSettings
from tests.streaming.postgres_server import SKIP_REASON, PostgresServer, bin_dir

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bin_dir() is None, reason=SKIP_REASON)]

ROOT = Path(__file__).resolve().parents[2]
DSN_ENV = "FIRSTMILE_TEST_PG_DSN"
_tables = count()


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.close()


def sender(pg: PostgresServer, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> PostgresSender:
    monkeypatch.setenv(DSN_ENV, pg.dsn)
    table = f"events_{next(_tables)}"
    doc = {"destinations": [{"id": "analytics", "type": "postgres", "topic": "dest.warehouse", "dsn_env": DSN_ENV,
                             "table": table, "timeout_s": 5, **extra}]}
    made = make_sender(parse_destinations(doc).destinations[0])
    assert isinstance(made, PostgresSender)
    return made


def events(n: int, *, prefix: str = "e", start: int = 0) -> list[dict[str, Any]]:
    return [{"event_id": f"{prefix}-{i}", "profile_id": f"p-{i % 3}", "type": "track", "event_name": "Order Completed",
             "event_ts": f"2026-11-02T12:00:{i % 60:02d}Z", "received_at": "2026-11-02T12:01:00.250Z",
             "anonymous_id": f"a-{i % 3}", "properties": {"revenue": 10 + i, "currency": "EUR"},
             "traits": {"plan": "pro"}, "consent": {"analytics": True, "marketing": False},
             "policy_version": 3, "destinations": ["dest.warehouse"]} for i in range(start, start + n)]


def test_rows_land_with_the_declared_columns(pg: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    out = sender(pg, monkeypatch)
    batch = events(3)
    result = out.send(batch)
    assert result.outcome == "delivered", result
    table = out.destination.table
    types = dict(pg.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                          (table,)))
    assert types == {"event_id": "text", "profile_id": "text", "type": "text", "event_name": "text",
                     "event_ts": "timestamp with time zone", "received_at": "timestamp with time zone",
                     "properties": "jsonb", "traits": "jsonb", "consent": "jsonb", "record": "jsonb",
                     "delivered_at": "timestamp with time zone"}
    assert pg.query("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                    (table,)) == [("event_id",)]
    rows = pg.query(f"SELECT event_id, profile_id, type, event_name, event_ts, received_at, properties, traits, "
                    f"consent, record, delivered_at FROM {table} ORDER BY event_id")
    assert [r[0] for r in rows] == ["e-0", "e-1", "e-2"]
    e1 = rows[1]
    assert e1[1:4] == ("p-1", "track", "Order Completed")
    assert e1[4] == datetime(2026, 11, 2, 12, 0, 1, tzinfo=UTC)
    assert e1[5] == datetime(2026, 11, 2, 12, 1, 0, 250000, tzinfo=UTC)
    assert (e1[6], e1[7], e1[8]) == ({"revenue": 11, "currency": "EUR"}, {"plan": "pro"},
                                     {"analytics": True, "marketing": False})
    assert e1[9] == batch[1]  # the whole record
    assert all(r[10] is not None for r in rows)
    out.close()


def test_a_replayed_batch_leaves_one_row_per_event(pg: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    out = sender(pg, monkeypatch)
    batch = events(5)
    assert out.send(batch).outcome == "delivered"
    first = pg.query(f"SELECT event_id, delivered_at FROM {out.destination.table} ORDER BY event_id")
    # the same batch again, then an overlapping one that also repeats an event within itself
    assert out.send(batch).outcome == "delivered"
    assert out.send(events(4, start=3) + events(1, start=7)).outcome == "delivered"
    rows = pg.query(f"SELECT event_id, delivered_at FROM {out.destination.table} ORDER BY event_id")
    assert [r[0] for r in rows] == [f"e-{i}" for i in range(8)]
    assert rows[:5] == first  # the first copy wins: replays do not touch a delivered row
    out.close()


def test_a_stopped_server_means_retry_and_the_next_send_after_its_restart_succeeds(
        pg: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    out = sender(pg, monkeypatch)
    assert out.send(events(2)).outcome == "delivered"
    pg.stop()
    try:
        down = out.send(events(2, start=2))
        assert down.outcome == "retry", down
        assert down.error and "Operational" in down.error
    finally:
        pg.restart()
    assert out.send(events(2, start=2)).outcome == "delivered"  # reconnected
    # restarted again while idle: the stale connection is reopened within the same send
    pg.stop()
    pg.restart()
    assert out.send(events(2, start=4)).outcome == "delivered"
    assert pg.query(f"SELECT count(*) FROM {out.destination.table}") == [(6,)]
    out.close()


def test_a_refused_value_is_final_names_the_column_and_lands_nothing(
        pg: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    out = sender(pg, monkeypatch)
    batch = events(3)
    batch[1] = {**batch[1], "event_ts": "when the cows come home"}
    result = out.send(batch)
    assert result.outcome == "final", result
    assert result.error and "event_ts of event 'e-1'" in result.error, result.error
    assert "22007" in result.error and "timestamp with time zone" in result.error
    assert pg.query(f"SELECT count(*) FROM {out.destination.table}") == [(0,)]  # one transaction: none of the three
    assert out.send(events(3)).outcome == "delivered"  # the connection is still good
    out.close()


def test_errors_that_are_the_tables_or_the_roles_are_final(pg: PostgresServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = sender(pg, monkeypatch)
    assert out.send(events(1)).outcome == "delivered"
    table = out.destination.table
    pg.query(f"ALTER TABLE {table} ADD CONSTRAINT positive CHECK ((properties->>'revenue')::int > 0)")
    bad = out.send([{**events(1, start=1)[0], "properties": {"revenue": -5}}])
    assert bad.outcome == "final" and bad.error and "23514" in bad.error and "positive" in bad.error, bad
    pg.query("CREATE ROLE reader LOGIN")
    monkeypatch.setenv(DSN_ENV, pg.dsn.replace("postgres@", "reader@"))
    reader = PostgresSender(out.destination)
    denied = reader.send(events(1, start=2))
    assert denied.outcome == "final" and denied.error and "42501" in denied.error, denied
    reader.close()
    out.close()


def test_a_table_dropped_under_a_running_sender_is_created_again(pg: PostgresServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = sender(pg, monkeypatch)
    assert out.send(events(2)).outcome == "delivered"
    pg.query(f"DROP TABLE {out.destination.table}")
    assert out.send(events(2, start=2)).outcome == "delivered"
    assert pg.query(f"SELECT event_id FROM {out.destination.table} ORDER BY event_id") == [("e-2",), ("e-3",)]
    out.close()


@pytest.mark.parametrize(("code", "outcome"), [
    ("40001", "retry"), ("40P01", "retry"), ("57P01", "retry"), ("57014", "retry"), ("53300", "retry"),
    ("08006", "retry"), ("55P03", "retry"), ("25006", "retry"),
    ("22P02", "final"), ("23502", "final"), ("23505", "final"), ("42P01", "final"), ("42501", "final"),
])
def test_what_each_sqlstate_means(code: str, outcome: str) -> None:
    exc = psycopg2.DatabaseError("x")
    exc_with_code = type("WithCode", (psycopg2.DatabaseError,), {"pgcode": code})("x")
    assert outcome_of(exc_with_code) == outcome
    assert outcome_of(exc) == "final" and outcome_of(psycopg2.OperationalError("gone")) == "retry"


# ---- end to end -----------------------------------------------------------------------------------------------
def read_outcomes(address: str, topic: str, *, until: Any, timeout: float) -> list[dict[str, Any]]:
    consumer = Consumer({"bootstrap.servers": address, "group.id": f"t-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 20})
    meta = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.topics[topic].partitions])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(out):
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(orjson.loads(msg.value()))
    finally:
        consumer.close()
    return out


def test_a_lane_killed_mid_stream_delivers_each_event_exactly_once_as_a_row(
        pg: PostgresServer, tmp_path: Path) -> None:
    broker = EmbeddedBroker.start()
    lane: subprocess.Popen[bytes] | None = None
    log = tmp_path / "lane.log"
    try:
        settings = StreamingSettings(data_dir=tmp_path, partitions=3)
        create_topics(broker.address, settings)
        doc = {"destinations": [{"id": "warehouse-db", "type": "postgres", "topic": "dest.warehouse",
                                 "dsn_env": DSN_ENV, "table": "routed_events",
                                 "batching": {"max_events": 5, "max_wait_ms": 100}}]}
        file = tmp_path / "destinations.yml"
        file.write_text(yaml.safe_dump(doc))
        create_delivery_topics(broker.address, settings, parse_destinations(doc))
        env = {**os.environ, "KAFKA_BROKER_ADDRESS": broker.address, "FIRSTMILE_DATA_DIR": str(tmp_path),
               "FIRSTMILE_DESTINATIONS_FILE": str(file), DSN_ENV: pg.dsn}

        def start_lane() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "streaming.delivery", "--destination", "warehouse-db",
                                     "--lane", "fresh"], env=env, cwd=ROOT, stdout=log.open("ab"),
                                    stderr=subprocess.STDOUT)

        def rows() -> int:
            with_table = pg.query("SELECT to_regclass('routed_events') IS NOT NULL")[0][0]
            return int(pg.query("SELECT count(*) FROM routed_events")[0][0]) if with_table else 0

        producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 5})

        def route(batch: list[dict[str, Any]]) -> None:
            for e in batch:
                producer.produce(settings.topic(topics.DEST_WAREHOUSE), key=e["profile_id"].encode(),
                                 value=orjson.dumps(e))
            producer.flush(10)

        n = 60
        routed = events(n, prefix="k")
        lane = start_lane()
        route(routed[:30])
        deadline = time.monotonic() + 60
        while rows() < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rows() >= 5, log.read_text()
        lane.send_signal(signal.SIGKILL)  # mid-stream: some of the first 30 landed, their offsets maybe not
        lane.wait(timeout=10)
        # the rest, and the hot path's at-least-once duplicates of events already delivered
        route(routed[30:] + routed[:10])
        lane = start_lane()
        deadline = time.monotonic() + 90
        while rows() < n and time.monotonic() < deadline:
            time.sleep(0.1)
        ids = {e["event_id"] for e in routed}

        def settled(outs: list[dict[str, Any]]) -> bool:  # every routed record (70) has its outcome
            return len(outs) >= n + 10 and {o["event_id"] for o in outs if o["status"] == "delivered"} >= ids

        outcomes = read_outcomes(broker.address, settings.topic(OUTCOMES), until=settled, timeout=60)
        time.sleep(0.5)  # anything still in flight would land now
        got = pg.query("SELECT event_id, count(*) FROM routed_events GROUP BY event_id")
        assert {event_id for event_id, _ in got} == ids, log.read_text()[-3000:]  # nothing lost
        assert len(got) == n and all(c == 1 for _, c in got)  # one row per event
        assert {o["event_id"] for o in outcomes if o["status"] == "delivered"} == ids
        assert not [o for o in outcomes if o["status"] != "delivered"], log.read_text()[-3000:]  # no dead letter
    finally:
        if lane is not None and lane.poll() is None:
            lane.terminate()
            try:
                lane.wait(timeout=30)
            except subprocess.TimeoutExpired:
                lane.kill()
        broker.stop()
