"""Broadcast of ``control.policy``: every worker reads every policy, outside the consumer group.

A consumer group would hand the topic's partition to one worker only (STACK-FACTS.md: with two workers one got all
21 policy messages, the other none). So each process runs one daemon thread with a plain consumer that ``assign``s
every partition from the beginning, never commits, and offers each document to the process-wide
:class:`~streaming.policy.PolicyHolder`. Processing starts only once the reader has caught up.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streaming.errors import BrokerError
from streaming.policy import PolicyHolder, canonical_json, compile_policy

logger = logging.getLogger(__name__)


class PolicyReader(threading.Thread):
    """Daemon thread feeding ``holder`` from the control topic. Call :meth:`wait_caught_up` before processing."""

    def __init__(self, broker_address: str, topic: str, holder: PolicyHolder, *, poll_timeout: float = 0.2) -> None:
        super().__init__(name="policy-reader", daemon=True)
        self.holder = holder
        self.topic = topic
        self.poll_timeout = poll_timeout
        self._stop_event = threading.Event()
        self._caught_up = threading.Event()
        self.seen = 0
        self.consumer = Consumer({
            "bootstrap.servers": broker_address,
            # confluent-kafka insists on a group id; a throwaway one, never committed, keeps us out of any group.
            "group.id": f"firstmile-policy-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            "auto.offset.reset": "earliest",
        })

    def run(self) -> None:
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=10)
            partitions = sorted(metadata.topics[self.topic].partitions) if self.topic in metadata.topics else []
            if not partitions:
                logger.warning("control topic %s has no partitions; keeping the bootstrap policy", self.topic)
                self._caught_up.set()
                return
            self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            at_eof: set[int] = set()
            while not self._stop_event.is_set():
                msg = self.consumer.poll(self.poll_timeout)
                if msg is None:
                    if len(at_eof) == len(partitions):
                        self._caught_up.set()
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        at_eof.add(msg.partition())
                        if len(at_eof) == len(partitions):
                            self._caught_up.set()
                    else:
                        logger.error("policy reader: %s", msg.error())
                    continue
                at_eof.discard(msg.partition())
                self.seen += 1
                if msg.value() is None:
                    continue  # a tombstone: compaction removing an old key
                self.holder.offer(msg.value())
        finally:
            self.consumer.close()

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        if not self._caught_up.wait(timeout):
            raise BrokerError(f"policy reader did not catch up with {self.topic} within {timeout:.0f}s")

    def stop(self) -> None:
        self._stop_event.set()


def publish_policy(broker_address: str, topic: str, doc: dict[str, Any], *, timeout: float = 30.0) -> int:
    """Validate and publish a policy document to the compacted control topic. Returns its version.

    The key is constant so compaction keeps the newest document; the value is the canonical JSON.
    """
    compiled = compile_policy(doc)  # never publish what a worker would reject
    producer = Producer({"bootstrap.servers": broker_address, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 0})
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer.produce(topic, key=b"policy", value=canonical_json(doc), on_delivery=on_delivery)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise BrokerError(f"publishing policy v{compiled.version} to {topic} failed: {errors or 'timeout'}")
    logger.info("published policy v%d to %s", compiled.version, topic)
    return compiled.version


def wait_for_version(holder: PolicyHolder, version: int, *, timeout: float = 30.0) -> float:
    """Block until ``holder`` runs ``version`` (or newer); return the seconds it took."""
    start = time.monotonic()
    while holder.current.version < version:
        if time.monotonic() - start > timeout:
            raise BrokerError(f"policy v{version} not picked up within {timeout:.0f}s "
                              f"(still v{holder.current.version})")
        time.sleep(0.01)
    return time.monotonic() - start
