"""The delivery tier for real: an embedded Tansu broker, real HTTP destinations on loopback, and
``python -m streaming.delivery`` lanes as subprocesses reading the routed topic.

Four destinations read ``dest.sales``: one that accepts (signed batches), one that answers 500 then 429 with
Retry-After then accepts, one that answers 400 (dead letters, then fixed and replayed with ``firstmile replay``),
and one that refuses connections (its retries run out; its breaker opens). Every event ends with exactly one final
outcome per destination, and a profile erased after routing is withheld. A lane killed with -9 mid-stream loses
nothing: every event reaches the destination, duplicates only under the same idempotency key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml  # type: ignore[import-untyped]
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics, free_port
from streaming.control import publish_records
from streaming.control_tables import erasure_value
from streaming.delivery.app import create_delivery_topics
from streaming.delivery.config import load_destinations
from streaming.delivery.sink import OUTCOMES
from streaming.settings import StreamingSettings
from tests.streaming import http_destination as http

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hook-secret-1"
FINAL_STATUSES = {"delivered", "dead_lettered", "withheld"}


class Delivery:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = http.Destination()
        self.httpd, self.url = http.start(self.server)
        self.broker = EmbeddedBroker.start()
        self.address = self.broker.address
        self.settings = StreamingSettings(data_dir=tmp, partitions=3)
        create_topics(self.address, self.settings)
        self.server.script("/flaky", 500, ("status", 429, {"Retry-After": "1"}), 200)
        self.server.script("/final", 400)
        # rejects a batch holding an event marked bad: the sink bisects it down to that event
        self.server.script("/picky", lambda got: 400 if b'"bad":true' in got.body else 200)
        refused = f"http://127.0.0.1:{free_port()}/nobody"
        fast = {"max_events": 10, "max_wait_ms": 200}
        doc = {"destinations": [
            {"id": "ok", "type": "webhook", "topic": "dest.sales", "url": self.url + "/ok", "secret_env": "HOOK_SECRET",
             "batching": fast},
            {"id": "flaky", "type": "webhook", "topic": "dest.sales", "url": self.url + "/flaky", "batching": fast},
            {"id": "final", "type": "webhook", "topic": "dest.sales", "url": self.url + "/final", "batching": fast},
            # one batch holds all its events: the breaker's probes (2 s, 4 s, 8 s ...) are not what the test waits on
            {"id": "gone", "type": "webhook", "topic": "dest.sales", "url": refused,
             "batching": {"max_events": 100, "max_wait_ms": 500},
             "retry_window_s": 4, "breaker_failures": 2, "timeout_s": 1},
            {"id": "picky", "type": "webhook", "topic": "dest.sales", "url": self.url + "/picky",
             "batching": fast},
            {"id": "single", "type": "webhook", "topic": "dest.marketing", "url": self.url + "/single",
             "batching": {"max_events": 1, "max_wait_ms": 100}},
        ]}
        self.file = tmp / "destinations.yml"
        self.file.write_text(yaml.safe_dump(doc))
        self.destinations = load_destinations(self.file)
        create_delivery_topics(self.address, self.settings, self.destinations)
        self.env = {**os.environ, "KAFKA_BROKER_ADDRESS": self.address, "FIRSTMILE_DATA_DIR": str(tmp),
                    "FIRSTMILE_DESTINATIONS_FILE": str(self.file), "HOOK_SECRET": SECRET}
        self.lanes: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.producer = Producer({"bootstrap.servers": self.address, "linger.ms": 5})

    def start_lane(self, destination: str, lane: str) -> None:
        log = (self.tmp / f"{destination}-{lane}.log").open("ab")
        self.lanes[(destination, lane)] = subprocess.Popen(
            [sys.executable, "-m", "streaming.delivery", "--destination", destination, "--lane", lane],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def log(self, destination: str, lane: str) -> str:
        return (self.tmp / f"{destination}-{lane}.log").read_text()

    def route(self, topic: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.producer.produce(topic, key=event["profile_id"].encode(), value=orjson.dumps(event))
        self.producer.flush(10)

    def read(self, topic: str, *, until: Any, timeout: float = 120.0) -> list[dict[str, Any]]:
        consumer = Consumer({"bootstrap.servers": self.address, "group.id": f"t-{time.monotonic_ns()}",
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

    def close(self) -> None:
        for proc in self.lanes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.lanes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.broker.stop()
        self.httpd.shutdown()


def events(n: int, *, profile: str = "p", start: int = 0) -> list[dict[str, Any]]:
    return [{"event_id": f"{profile}-e{i}", "profile_id": f"{profile}-{i % 5}", "type": "track",
             "event_name": "Order Completed", "event_ts": "2026-11-02T12:00:00Z", "anonymous_id": f"a-{i % 5}",
             "properties": {"revenue": 10 + i}, "destinations": ["dest.sales"]} for i in range(start, start + n)]


def final_outcomes(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """destination → event id → its final status (delivered / dead_lettered / withheld)."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for o in outcomes:
        if o["status"] in FINAL_STATUSES:
            out[o["destination"]][o["event_id"]] = o["status"]
    return out


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivery]:
    platform = Delivery(tmp_path_factory.mktemp("delivery"))
    try:
        for destination, lane in [("ok", "fresh"), ("picky", "fresh"), ("flaky", "fresh"), ("flaky", "retry"),
                                  ("final", "fresh"),
                                  ("final", "retry"), ("gone", "fresh"), ("gone", "retry")]:
            platform.start_lane(destination, lane)
        yield platform
    finally:
        platform.close()


def test_every_event_ends_in_exactly_one_final_outcome_per_destination(delivery: Delivery) -> None:
    routed = events(20)
    publish_records(delivery.address, topics.CONTROL_ERASURE,
                    [("p-erased-0", erasure_value(request_id=None, at=None, source="test"))])
    erased = [{**e, "event_id": f"x-{i}", "profile_id": "p-erased-0"} for i, e in enumerate(events(2))]
    time.sleep(1.0)  # one broadcast hop for the lanes (bench-control: tens of ms)
    delivery.route(topics.DEST_SALES, routed + erased)
    ids = {e["event_id"] for e in routed + erased}

    def settled(outs: list[dict[str, Any]]) -> bool:
        finals = final_outcomes(outs)
        return all(set(finals.get(d, {})) == ids for d in ("ok", "flaky", "final", "gone"))

    outcomes = delivery.read(delivery.settings.topic(OUTCOMES), until=settled, timeout=180)
    finals = final_outcomes(outcomes)
    erased_ids = {e["event_id"] for e in erased}
    for destination, expected in [("ok", "delivered"), ("flaky", "delivered"), ("final", "dead_lettered"),
                                  ("gone", "dead_lettered")]:
        got = finals[destination]
        assert set(got) == ids, (destination, Counter(got.values()))
        assert {got[i] for i in erased_ids} == {"withheld"}, destination
        assert {got[i] for i in ids - erased_ids} == {expected}, (destination, Counter(got.values()))

    # the accepting destination: every event once, in signed batches with their ids
    received = [e["event_id"] for r in delivery.server.on("/ok") for e in r.json()["batch"]]
    assert sorted(received) == sorted(ids - erased_ids)
    assert all(http.signature_ok(r, SECRET.encode()) for r in delivery.server.on("/ok"))
    # the flaky one: retried after the 500 and, not sooner than its Retry-After, after the 429
    statuses = Counter(o["status"] for o in outcomes if o["destination"] == "flaky")
    assert statuses["retrying"] >= 1 and statuses["delivered"] == 20
    flaky = delivery.server.on("/flaky")
    assert len(flaky) >= 3 and any(b.at - a.at >= 1.0 for a, b in zip(flaky, flaky[1:], strict=False))
    # dead letters keep why: the final answer with its body; the unreachable one's exhausted retries
    dlq = delivery.read("delivery.final.dlq", until=lambda out: len(out) >= 22, timeout=30)
    reasons = Counter(d["reason"] for d in dlq)
    assert reasons == {"final_answer": 20, "erased": 2}
    assert all(d["http_status"] == 400 and "scripted" in d["body"] for d in dlq if d["reason"] == "final_answer")
    gone = delivery.read("delivery.gone.dlq", until=lambda out: len(out) >= 22, timeout=30)
    assert Counter(d["reason"] for d in gone) == {"retries_exhausted": 20, "erased": 2}
    assert all(d["attempts"] >= 1 and "Connect" in (d["error"] or "") for d in gone if d["reason"] != "erased")
    assert "circuit open" in delivery.log("gone", "fresh") + delivery.log("gone", "retry")


def test_one_bad_event_or_a_poison_record_does_not_dead_letter_its_batch(delivery: Delivery) -> None:
    batch = events(9, profile="q")
    batch[4] = {**batch[4], "properties": {"bad": True}}
    delivery.producer.produce(topics.DEST_SALES, key=b"q-0", value=b'"not an object"')
    delivery.route(topics.DEST_SALES, batch)
    ids = {e["event_id"] for e in batch}

    def settled(outs: list[dict[str, Any]]) -> bool:
        return ids <= set(final_outcomes(outs).get("picky", {}))

    finals = final_outcomes(delivery.read(delivery.settings.topic(OUTCOMES), until=settled, timeout=120))["picky"]
    assert {finals[i] for i in ids - {"q-e4"}} == {"delivered"} and finals["q-e4"] == "dead_lettered"
    dlq = delivery.read("delivery.picky.dlq", timeout=30,
                        until=lambda out: {d["reason"] for d in out} >= {"final_answer", "not_an_object"})
    assert {d["reason"] for d in dlq} >= {"final_answer", "not_an_object"}
    assert [d["event"]["event_id"] for d in dlq if d["reason"] == "final_answer"] == ["q-e4"]


def test_dead_letters_are_replayed_once_the_destination_is_fixed(delivery: Delivery) -> None:
    rejected = {d["event"]["event_id"] for d in delivery.read("delivery.final.dlq", timeout=10, until=lambda _: False)
                if d["http_status"] == 400}
    assert len(rejected) >= 20
    delivery.server.script("/final", 200)
    before = len(delivery.server.on("/final"))
    replay = subprocess.run([sys.executable, "-m", "orchestration.cli", "replay", "--destination", "final",
                             "--status", "400"], env=delivery.env, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 0 and f"replayed {len(rejected)} dead letters" in replay.stdout, \
        replay.stdout + replay.stderr

    def replayed(outs: list[dict[str, Any]]) -> bool:
        return rejected <= {o["event_id"] for o in outs if o["destination"] == "final" and o["status"] == "delivered"}

    outcomes = delivery.read(delivery.settings.topic(OUTCOMES), until=replayed, timeout=90)
    delivered = {o["event_id"] for o in outcomes if o["destination"] == "final" and o["status"] == "delivered"}
    assert delivered == rejected and not any(i.startswith("x-") for i in delivered)  # the erased stay withheld
    assert len(delivery.server.on("/final")) > before
    bad = subprocess.run([sys.executable, "-m", "orchestration.cli", "replay", "--destination", "nope"],
                         env=delivery.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no destination 'nope'" in bad.stderr


def test_a_lane_killed_mid_stream_loses_nothing(delivery: Delivery) -> None:
    delivery.start_lane("single", "fresh")
    routed = [{**e, "destinations": ["dest.marketing"]} for e in events(60, profile="k")]
    delivery.route(topics.DEST_MARKETING, routed[:30])
    deadline = time.monotonic() + 90
    while len(delivery.server.on("/single")) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delivery.server.on("/single"), delivery.log("single", "fresh")
    delivery.lanes[("single", "fresh")].send_signal(signal.SIGKILL)
    delivery.lanes[("single", "fresh")].wait(timeout=10)
    delivery.route(topics.DEST_MARKETING, routed[30:])
    delivery.start_lane("single", "fresh")
    ids = {e["event_id"] for e in routed}
    deadline = time.monotonic() + 120
    while {r.json()["event_id"] for r in delivery.server.on("/single")} < ids and time.monotonic() < deadline:
        time.sleep(0.2)
    got = delivery.server.on("/single")
    assert {r.json()["event_id"] for r in got} == ids  # nothing lost
    # a duplicate (the batch in flight at the kill) carries the same idempotency key as its first copy
    assert all(r.headers["idempotency-key"] == r.json()["event_id"] for r in got)
