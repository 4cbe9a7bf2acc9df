"""What the warehouse learns about people, at the edge, for real: an embedded Tansu broker, a worker and the
collector as subprocesses, the regulations API over HTTP, control records on their compacted topics.

* an erasure request (``POST /v1/regulations``) suppresses the next event of every device of the subject, with a
  ledger-only record naming the control offset it was decided under, and is tracked (``GET``), idempotent and for
  server keys only;
* a merge on ``control.identity`` moves the merged device's next event to the survivor without widening consent;
* merges and erasures published while every worker is down apply before the first event after the restart (the
  worker reads both topics to their end before deciding, resuming from its snapshot).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics, free_port
from streaming.contract import from_segment
from streaming.control import publish_policy, publish_records
from streaming.control_tables import erasure_value, merge_value
from streaming.policy import bootstrap_policy
from streaming.settings import StreamingSettings
from tests.streaming.test_collector import start_collector, stop_process, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER_KEY = "server-key-test"
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0 Safari/537.36")
US_IP, DE_IP = "8.8.8.8", "85.214.132.117"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
OUTPUTS = (*topics.DESTINATIONS, topics.QUARANTINE, topics.DLQ, topics.SUPPRESSED)
ALL_PURPOSES = {"analytics": True, "marketing": True, "sales": True, "personalization": True}


class Edge:
    """A broker, a worker, a collector, and every output the worker writes, by event id."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.broker = EmbeddedBroker.start()
        self.address = self.broker.address
        create_topics(self.address, StreamingSettings(data_dir=data_dir, partitions=3))
        publish_policy(self.address, topics.CONTROL_POLICY, bootstrap_policy())
        self.port = free_port()
        self.collector = start_collector(self.address, self.port, FIRSTMILE_SERVER_KEYS=SERVER_KEY,
                                         FIRSTMILE_DATA_DIR=str(data_dir))
        self.worker: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.producer = Producer({"bootstrap.servers": self.address, "linger.ms": 0})
        self.outputs: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.consumer = Consumer({"bootstrap.servers": self.address, "group.id": f"t-{time.monotonic_ns()}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        meta = self.consumer.list_topics(timeout=10)
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in OUTPUTS
                              for p in meta.topics[t].partitions])
        self.seq = 0

    @property
    def log(self) -> Path:
        return self.data_dir / f"worker-{self.starts}.log"

    def start_worker(self) -> None:
        self.starts += 1
        env = {**os.environ, "KAFKA_BROKER_ADDRESS": self.address, "FIRSTMILE_DATA_DIR": str(self.data_dir)}
        self.worker = subprocess.Popen([sys.executable, "-m", "streaming.worker"], env=env, cwd=ROOT,
                                       stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def stop_worker(self) -> None:
        assert self.worker is not None
        self.worker.terminate()
        self.worker.wait(timeout=30)
        self.worker = None

    def send(self, anon: str, *, user: str | None = None, ip: str = US_IP, type_: str = "track",
             consent: dict[str, bool] | None = None, timeout: float = 60.0) -> list[tuple[str, dict[str, Any]]]:
        """One event of device ``anon`` straight onto events.raw; its outputs once the worker decided it."""
        self.seq += 1
        at = T0 + timedelta(seconds=30 * self.seq)
        payload = {"type": type_, "messageId": f"e-{anon}-{self.seq}", "anonymousId": anon, "userId": user,
                   "timestamp": at.isoformat(), "context": {"ip": ip, "userAgent": CHROME},
                   "properties": {"category": "shoes", "price": 10}}
        if type_ == "track":
            payload["event"] = "Product Viewed"
        if consent is not None:
            payload["consent"] = consent
        self.producer.produce(topics.RAW, key=anon.encode(),
                              value=orjson.dumps(from_segment(payload, source_id="test", received_at=at)))
        self.producer.flush(10)
        return self.wait_for(payload["messageId"], timeout)

    def wait_for(self, event_id: str, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while event_id not in self.outputs and time.monotonic() < deadline:
            self._poll(0.2)
        settle = time.monotonic() + 0.5  # an event's other outputs (several destinations) come with it
        while time.monotonic() < settle:
            self._poll(0.05)
        assert event_id in self.outputs, f"no output for {event_id} within {timeout}s:\n{self.log.read_text()[-3000:]}"
        return self.outputs[event_id]

    def _poll(self, timeout: float) -> None:
        msg = self.consumer.poll(timeout)
        if msg is not None and not msg.error():
            value = orjson.loads(msg.value())
            if isinstance(value, dict) and value.get("event_id"):
                self.outputs.setdefault(value["event_id"], []).append((msg.topic(), value))

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", auth=(SERVER_KEY, ""), timeout=30)

    def close(self) -> None:
        if self.worker is not None:
            self.stop_worker()
        stop_process(self.collector)
        self.consumer.close()
        self.broker.stop()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    platform = Edge(tmp_path_factory.mktemp("control-edge"))
    platform.start_worker()
    try:
        platform.send("warm-up", timeout=120)  # the worker joined its group and decides
        yield platform
    finally:
        platform.close()


def topics_of(outputs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return sorted(t for t, _ in outputs)


def test_an_erasure_request_suppresses_the_next_event_of_every_device_of_the_subject(edge: Edge) -> None:
    for device in ("dev-e1", "dev-e2"):
        assert topics.DEST_WAREHOUSE in topics_of(edge.send(device, user="u-erase"))
    with edge.http() as client:
        body = {"regulationType": "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID", "subjectIds": ["u-erase"]}
        asked = time.monotonic()
        answer = client.post("/v1/regulations", json=body)
        assert answer.status_code == 200, answer.text
        reg_id = answer.json()["data"]["regulateId"]
        # the device's next event, sent right after the answer: suppressed, whichever device, without identifiers
        for device in ("dev-e2", "dev-e1"):
            outs = edge.send(device)
            assert topics_of(outs) == [topics.SUPPRESSED], outs
            record = outs[0][1]
            assert record["ledger"]["reason"] == "erased" and record["ledger"]["control"]["erasure"] >= 1
            assert record["anonymous_id"] is None and record["user_id"] is None
        suppressed_within = time.monotonic() - asked
        # idempotent: the same request answers the same id; tracked: its states with times
        assert client.post("/v1/regulations", json=body).json()["data"]["regulateId"] == reg_id
        wait_until(lambda: client.get(f"/v1/regulations/{reg_id}").status_code == 200, 10, "regulation readable")
        reg = client.get(f"/v1/regulations/{reg_id}").json()["data"]["regulation"]
        assert [s["state"] for s in reg["states"]][:2] == ["received", "suppressed_at_edge"]
        assert reg["subjectIds"] == ["u-erase"] and reg["overallStatus"] == "suppressed_at_edge"
        assert client.get("/v1/regulations/reg_unknown").status_code == 404
        bad = client.post("/v1/regulations", json={**body, "subjectType": "EMAIL"})
        assert bad.status_code == 400 and bad.json()["field"] == "subjectType"
    # a write key (what browsers carry) cannot erase anyone
    refused = httpx.post(f"http://127.0.0.1:{edge.port}/v1/regulations", json=body, auth=("test-key", ""))
    assert refused.status_code == 401
    other = edge.send("dev-other", user="u-keep")
    assert topics.DEST_WAREHOUSE in topics_of(other)
    assert suppressed_within < 30


def test_a_merge_moves_the_merged_devices_next_event_to_the_survivor_without_widening_consent(edge: Edge) -> None:
    # the survivor granted everything on an EU device; the merged (anonymous) profile had denied marketing later
    edge.send("dev-s", user="u-survivor", ip=DE_IP, type_="consent", consent=ALL_PURPOSES)
    assert topics.DEST_MARKETING in topics_of(edge.send("dev-s", ip=DE_IP))
    assert edge.send("dev-m", ip=DE_IP)[0][1]["profile_id"] == "dev-m"
    denied_at = int((T0 + timedelta(days=30)).timestamp() * 1000)
    publish_records(edge.address, topics.CONTROL_IDENTITY,
                    [("dev-m", merge_value("u-survivor", consent={"marketing": [False, denied_at]}))])
    deadline = time.monotonic() + 30
    while True:  # one broadcast hop: the worker applies the merge before a later event
        outs = edge.send("dev-m", ip=DE_IP)
        if outs[0][1]["profile_id"] == "u-survivor" or time.monotonic() > deadline:
            break
    record = outs[0][1]
    assert record["profile_id"] == "u-survivor" and record["ledger"]["identity"]["merged_from"] == "dev-m"
    assert record["ledger"]["control"]["identity"] >= 1
    assert topics.DEST_WAREHOUSE in topics_of(outs) and topics.DEST_MARKETING not in topics_of(outs)
    assert record["consent"]["marketing"] is False and record["consent"]["analytics"] is True
    # and the survivor's own device: the merged profile's later denial holds for it too
    assert topics.DEST_MARKETING not in topics_of(edge.send("dev-s", ip=DE_IP))


def test_control_records_published_while_the_worker_is_down_apply_before_its_first_event(edge: Edge) -> None:
    assert topics.DEST_WAREHOUSE in topics_of(edge.send("dev-d1", user="u-down"))
    edge.stop_worker()
    snapshot = edge.data_dir / "state" / "firstmile-worker.control.snapshot"
    assert snapshot.exists()  # written at shutdown: the restart resumes from its offsets
    publish_records(edge.address, topics.CONTROL_ERASURE,
                    [("u-down", erasure_value(request_id=None, at=None, source="test"))])
    publish_records(edge.address, topics.CONTROL_IDENTITY, [("dev-d2", merge_value("u-survivor"))])
    edge.start_worker()
    erased = edge.send("dev-d1", timeout=120)  # the first event after the restart
    assert topics_of(erased) == [topics.SUPPRESSED] and erased[0][1]["ledger"]["reason"] == "erased"
    merged = edge.send("dev-d2")
    assert merged[0][1]["profile_id"] == "u-survivor"
    log = edge.log.read_text()
    assert "control caught up" in log and "from offsets ControlOffsets(identity=1, erasure=1)" in log, log[-2000:]
