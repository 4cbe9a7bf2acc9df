"""The worker on a real (embedded) broker: accounting, hot swap of a newer policy, rejection of an invalid one,
and consent ordered per profile across devices after the repartition."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics
from streaming.contract import from_segment
from streaming.control import publish_policy
from streaming.policy import bootstrap_policy, seal
from streaming.settings import StreamingSettings

pytestmark = pytest.mark.integration

CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0 Safari/537.36")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
OUTPUTS = (*topics.DESTINATIONS, topics.QUARANTINE, topics.DLQ, topics.SUPPRESSED)


def event(i, *, anon, user=None, ip="8.8.8.8", type_="track", consent=None, seconds=20.0):
    payload = {"type": type_, "messageId": f"{anon}-{i}", "anonymousId": anon, "userId": user,
               "event": "Product Viewed", "timestamp": (T0 + timedelta(seconds=seconds * i)).isoformat(),
               "context": {"ip": ip, "userAgent": CHROME}, "properties": {"category": "shoes", "price": 10}}
    if consent is not None:
        payload["consent"] = consent
    return orjson.dumps(from_segment(payload, source_id="test", received_at=T0 + timedelta(seconds=seconds * i)))


def consume_all(address, names, *, expect, timeout=60.0):
    """Records of the topics from the beginning until ``expect`` distinct inputs are seen (counted by consuming:
    Tansu's watermarks under-report), or the timeout."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": f"t-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 20})
    meta = consumer.list_topics(timeout=10)
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in names for p in meta.topics[t].partitions])
    records, deadline = [], time.monotonic() + timeout
    inputs: set = set()
    quiet_since = None
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            value = orjson.loads(msg.value())
            records.append((msg.topic(), value))
            inputs.add((value.get("raw_partition"), value.get("raw_offset")))
            quiet_since = None
        elif len(inputs) >= expect:
            # every input has an outcome; drain the other copies (one input may reach several topics)
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.5:
                break
    consumer.close()
    return records


def by_raw_offset(records):
    seen = {}
    for topic, value in records:
        seen.setdefault((value.get("raw_partition"), value.get("raw_offset")), []).append((topic, value))
    return seen


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("worker")
    broker = EmbeddedBroker.start()
    settings = StreamingSettings(data_dir=data_dir, partitions=3)
    create_topics(broker.address, settings)
    publish_policy(broker.address, topics.CONTROL_POLICY, bootstrap_policy())
    log = data_dir / "worker.log"
    env = {**os.environ, "KAFKA_BROKER_ADDRESS": broker.address, "FIRSTMILE_DATA_DIR": str(data_dir)}
    worker = subprocess.Popen([sys.executable, "-m", "streaming.worker"], env=env, stdout=log.open("wb"),
                              stderr=subprocess.STDOUT)
    producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 20})
    yield broker.address, producer, log
    worker.terminate()
    worker.wait(timeout=20)
    broker.stop()


def produce(producer, items):
    for key, value in items:
        producer.produce(topics.RAW, key=key.encode(), value=value)
    producer.flush(10)


def test_worker_accounts_for_every_input_and_hot_swaps_a_newer_policy(platform):
    address, producer, log = platform
    # A scraper with a browser user agent and a machine rhythm (3 s, no dwell): v1 lets it through.
    batch_a = [("bot-1", event(i, anon="bot-1", seconds=3.0)) for i in range(15)]
    batch_a += [("x", b"\x00not json"), ("x", b'{"type":"page"}')]
    produce(producer, batch_a)
    first = by_raw_offset(consume_all(address, OUTPUTS, expect=len(batch_a)))
    assert len(first) == len(batch_a)
    assert {t for outs in first.values() for t, _ in outs} >= {topics.DEST_WAREHOUSE, topics.DLQ}
    assert not any(t == topics.QUARANTINE for outs in first.values() for t, _ in outs)

    doc = bootstrap_policy()
    doc["policy_version"] = 2
    doc["rules"].append({"id": "bot.regular", "kind": "bot", "mode": "enforce", "when": {
        "and": [{">=": [{"var": "session_event_count"}, 5]}, {"<": [{"var": "interval_std_s"}, 0.5]},
                {"<": [{"var": "mean_interval_s"}, 5]}]}})
    v2 = seal(doc)
    publish_policy(address, topics.CONTROL_POLICY, v2)
    bad = dict(v2, policy_version=3, rules=[])  # checksum no longer matches: must be rejected, v2 stays
    producer.produce(topics.CONTROL_POLICY, key=b"policy", value=orjson.dumps(bad))
    producer.flush(10)
    deadline = time.monotonic() + 30
    while "policy v3 rejected" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "policy v2" in log.read_text() and "policy v3 rejected, keeping v2" in log.read_text()

    batch_b = [("bot-1", event(i, anon="bot-1", seconds=3.0)) for i in range(15, 25)]
    produce(producer, batch_b)
    total = len(batch_a) + len(batch_b)
    outs = by_raw_offset(consume_all(address, OUTPUTS, expect=total))
    time.sleep(2)  # nothing more may arrive: one input, one outcome set
    outs = by_raw_offset(consume_all(address, OUTPUTS, expect=total + 1, timeout=5))
    assert len(outs) == total
    later = [v for key, o in outs.items() for t, v in o if t == topics.QUARANTINE]
    assert len(later) == len(batch_b)
    assert {v["policy_version"] for v in later} == {2} and all("bot.regular" in v["bot_reasons"] for v in later)


def test_revocation_on_one_device_cuts_off_the_next_event_of_the_other_device(platform):
    address, producer, _ = platform
    grant = {"analytics": True, "personalization": True, "marketing": True, "sales": True}
    de = "85.214.132.117"
    produce(producer, [
        ("phone", event(0, anon="phone", user="u-42", ip=de, type_="consent", consent=grant)),
        ("laptop", event(1, anon="laptop", user="u-42", ip=de)),
    ])
    time.sleep(3)  # the grant and the link are decided before the revocation is sent
    produce(producer, [("phone", event(2, anon="phone", ip=de, type_="consent", consent={"marketing": False}))])
    time.sleep(3)
    produce(producer, [("laptop", event(3, anon="laptop", ip=de))])
    deadline = time.monotonic() + 40
    last = []
    while time.monotonic() < deadline:
        records = consume_all(address, OUTPUTS, expect=10**6, timeout=3)
        last = [(t, v) for t, v in records if v.get("event_id") == "laptop-3"]
        if last:
            break
    topics_of_last = {t for t, _ in last}
    assert topics.DEST_WAREHOUSE in topics_of_last
    assert topics.DEST_MARKETING not in topics_of_last
