"""The worker with the fix proposed for the restart/recovery bug the suite found (tests/reliability/README.md,
"Bugs found"), so that the fix can be validated before it is applied to streaming/worker.py:

    FIRSTMILE_RELIABILITY_WORKER=tests.reliability.patched_worker pytest -s tests/reliability

(the xfail-marked tests then XPASS, which strict xfail reports as failures: that is the signal to apply the fix
and drop the markers). Not used by default.

The bug: Tansu reports a partition's high watermark as the last record batch's base offset + 1 (STACK-FACTS.md).
Quix's state recovery reads the changelog's high watermark with ``get_watermark_offsets``: a restarted worker
whose local store already holds the changelog's last offset finds ``stored offset >= high watermark`` and dies
with ``InvalidStoreChangelogOffset`` (every restart, graceful or not, once a changelog's last batch holds more than
one record; a worker without local state is not affected: scenario 3 passes). The fix: correct the high watermark
by reading the partition's last batch to its end.
"""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition


def end_by_consuming(broker_address: str, topic: str, partition: int, start: int, *, timeout: float = 10.0) -> int:
    """The offset after the last record of ``topic[partition]``, reading from ``start`` to the end."""
    import time

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
        return end
    finally:
        probe.close()


def use_true_high_watermarks(broker_address: str) -> None:
    """Make Quix's (uncached) watermark queries return the partition's real end on Tansu."""
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


def main() -> None:
    import logging
    import os

    from streaming.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    use_true_high_watermarks(os.environ["KAFKA_BROKER_ADDRESS"])
    run_worker()


if __name__ == "__main__":
    main()
