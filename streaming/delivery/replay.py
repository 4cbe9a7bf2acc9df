"""Send events to a destination again: its dead letters (default) or a time range of its routed topic.

``firstmile replay --destination ID [--from T] [--to T] [--status 400,500|retries_exhausted|...] [--routed]``
puts each selected event on the destination's retry topic as a new first attempt (due now, a fresh retry window);
the retry lane delivers it with the same idempotency key, so a destination that already has it keeps one copy.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streaming.delivery.config import Destination
from streaming.errors import BrokerError
from streaming.settings import StreamingSettings


def _read(address: str, topic: str, start_ms: int | None, end_ms: int | None) -> list[tuple[bytes | None, Any, int]]:
    """(key, decoded value, timestamp ms) of a topic's records in [start, end), read to its end."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": f"firstmile-replay-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics or not meta.topics[topic].partitions:
            raise BrokerError(f"topic {topic} does not exist")
        parts = list(meta.topics[topic].partitions)
        starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
        if start_ms is not None:
            starts = consumer.offsets_for_times([TopicPartition(topic, p, start_ms) for p in parts], timeout=10)
        consumer.assign(starts)
        out: list[tuple[bytes | None, Any, int]] = []
        done: set[int] = set()
        deadline = time.monotonic() + 120
        while len(done) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                continue
            ts = msg.timestamp()[1]
            if end_ms is not None and ts >= end_ms:
                done.add(msg.partition())
                continue
            if msg.value() is not None:
                out.append((msg.key(), orjson.loads(msg.value()), ts))
        return out
    finally:
        consumer.close()


def replay(address: str, settings: StreamingSettings, destination: Destination, *, start: datetime | None = None,
           end: datetime | None = None, statuses: set[str] | None = None, routed: bool = False) -> int:
    """Put the selected events on the destination's retry topic; returns how many."""
    prefix = settings.topic_prefix
    source = settings.topic(destination.topic) if routed else destination.dlq_topic(prefix)
    start_ms = int(start.timestamp() * 1000) if start else None
    end_ms = int(end.timestamp() * 1000) if end else None
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "acks": "all"})
    now, count = time.time(), 0
    for key, value, _ts in _read(address, source, start_ms, end_ms):
        if not routed:
            if statuses and not ({str(value.get("http_status")), str(value.get("reason"))} & statuses):
                continue
            event = value["event"]
        else:
            event = value
        retry = {"event": event, "attempt": 0, "first_attempt_at": now, "due_at": now, "replayed": True}
        producer.produce(destination.retry_topic(prefix), key=key, value=orjson.dumps(retry))
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise BrokerError("replayed events not acknowledged by the broker")
    return count
