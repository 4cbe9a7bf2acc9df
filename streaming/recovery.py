"""State recovery on brokers whose high watermark under-reports (Tansu).

Tansu reports a partition's high watermark as the last record batch's base offset + 1 (STACK-FACTS.md). Quix's
state recovery compares the local store's changelog offset with the changelog's high watermark: a restarted worker
whose store already holds the changelog's last offset finds "stored offset >= high watermark" and dies with
``InvalidStoreChangelogOffset`` — on every restart, graceful or not, once a changelog's last batch holds more than
one record (found by tests/reliability/test_worker_crashes.py). The fix reads the partition's last batch to its
end when Quix asks for watermarks. On Kafka the reported watermark is already the end: the probe returns it
unchanged (one extra fetch per changelog partition, at assignment only).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

logger = logging.getLogger(__name__)


def end_by_consuming(broker_address: str, topic: str, partition: int, start: int, *, timeout: float = 10.0) -> int:
    """The offset after the last record of ``topic[partition]``, reading from ``start`` to the end."""
    probe = Consumer({"bootstrap.servers": broker_address, "group.id": f"firstmile-hwm-{uuid.uuid4().hex[:8]}",
                      "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 10})
    try:
        probe.assign([TopicPartition(topic, partition, start)])
        end, deadline = start, time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = probe.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return max(end, msg.offset())
                continue
            end = msg.offset() + 1
        logger.warning("could not read %s[%d] to its end within %.0fs; using offset %d", topic, partition,
                       timeout, end)
        return end
    finally:
        probe.close()


def use_true_high_watermarks(broker_address: str) -> None:
    """Make Quix's uncached watermark queries (state recovery) return the partition's real end. Idempotent."""
    from quixstreams.kafka.consumer import BaseConsumer

    original = BaseConsumer.get_watermark_offsets
    if getattr(original, "_firstmile_true_end", False):
        return

    def get_watermark_offsets(self: Any, partition: Any, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        low, high = original(self, partition, timeout, cached)
        if cached or high <= low:
            return low, high
        return low, max(high, end_by_consuming(broker_address, partition.topic, partition.partition, high - 1))

    get_watermark_offsets._firstmile_true_end = True  # type: ignore[attr-defined]
    BaseConsumer.get_watermark_offsets = get_watermark_offsets  # type: ignore[method-assign]
