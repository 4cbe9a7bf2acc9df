"""Broadcast of the control topics: every worker reads every policy (and every control record), outside the
consumer group.

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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streaming import settings as topics
from streaming.control_tables import ERASURE, IDENTITY, ControlTables
from streaming.errors import BrokerError
from streaming.policy import PolicyHolder, canonical_json, compile_policy
from streaming.settings import StreamingSettings

logger = logging.getLogger(__name__)


class BroadcastReader(threading.Thread):
    """Daemon thread reading every partition of a topic outside any consumer group (a broadcast), from the given
    offsets (default: the beginning), handing each record to :meth:`handle`. :meth:`wait_caught_up` returns once
    it has read up to the end of every partition as it was when it started (readiness, not a sleep)."""

    def __init__(self, broker_address: str, topic: str, *, name: str, poll_timeout: float = 0.2,
                 start_offsets: dict[int, int] | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.topic = topic
        self.poll_timeout = poll_timeout
        self.start_offsets = start_offsets or {}
        self._stop_event = threading.Event()
        self._caught_up = threading.Event()
        self.seen = 0
        self.consumer = Consumer({
            "bootstrap.servers": broker_address,
            # confluent-kafka insists on a group id; a throwaway one, never committed, keeps us out of any group.
            "group.id": f"firstmile-{name}-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            "auto.offset.reset": "earliest",
        })

    def handle(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=10)
            partitions = sorted(metadata.topics[self.topic].partitions) if self.topic in metadata.topics else []
            if not partitions:
                logger.warning("control topic %s has no partitions: nothing to read", self.topic)
                self._caught_up.set()
                return
            self.consumer.assign([TopicPartition(self.topic, p, self.start_offsets.get(p, OFFSET_BEGINNING))
                                  for p in partitions])
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
                        logger.error("%s reader: %s", self.topic, msg.error())
                    continue
                at_eof.discard(msg.partition())
                self.seen += 1
                self.handle(msg.key(), msg.value(), msg.partition(), msg.offset())
        finally:
            self.consumer.close()

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        if not self._caught_up.wait(timeout):
            raise BrokerError(f"{self.name} did not catch up with {self.topic} within {timeout:.0f}s")

    def stop(self) -> None:
        self._stop_event.set()


class PolicyReader(BroadcastReader):
    """Feeds ``holder`` from ``control.policy``. Call :meth:`wait_caught_up` before processing."""

    def __init__(self, broker_address: str, topic: str, holder: PolicyHolder, *, poll_timeout: float = 0.2) -> None:
        super().__init__(broker_address, topic, name="policy-reader", poll_timeout=poll_timeout)
        self.holder = holder

    def handle(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        if value is not None:  # None: a tombstone, compaction removing an old key
            self.holder.offer(value)


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


class ControlReader(BroadcastReader):
    """Feeds one table (``identity`` or ``erasure``) of ``tables`` from its control topic, resuming at the
    snapshot's offset when there is one."""

    def __init__(self, broker_address: str, topic: str, tables: ControlTables, table: str) -> None:
        super().__init__(broker_address, topic, name=f"control-{table}-reader",
                         start_offsets={0: getattr(tables.offsets, table)} if getattr(tables.offsets, table) else None)
        self.tables, self.table = tables, table

    def handle(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        self.tables.apply(self.table, key.decode("utf-8", "replace") if key else "", value, offset)


class ControlSync:
    """The worker's control tables: a snapshot loaded from ``snapshot``, one reader per control topic, and a
    snapshot written every ``save_every_s`` when something changed (and at :meth:`stop`)."""

    def __init__(self, broker_address: str, settings: StreamingSettings, snapshot: Path, *,
                 save_every_s: float = 30.0) -> None:
        self.snapshot = snapshot
        self.tables = ControlTables.load(snapshot)
        self.loaded_offsets = self.tables.offsets
        self.readers = [ControlReader(broker_address, settings.topic(topics.CONTROL_IDENTITY), self.tables, IDENTITY),
                        ControlReader(broker_address, settings.topic(topics.CONTROL_ERASURE), self.tables, ERASURE)]
        self._saved = self.tables.offsets
        self._save_every_s = save_every_s
        self._stop = threading.Event()
        self._saver = threading.Thread(target=self._save_loop, name="control-snapshot", daemon=True)

    def start(self, *, timeout: float = 120.0) -> float:
        """Start the readers and block until both caught up; returns the seconds it took."""
        began = time.monotonic()
        for reader in self.readers:
            reader.start()
        for reader in self.readers:
            reader.wait_caught_up(timeout)
        self._saver.start()
        return time.monotonic() - began

    def save(self) -> None:
        if self.tables.offsets != self._saved:
            self.tables.save(self.snapshot)
            self._saved = self.tables.offsets

    def _save_loop(self) -> None:
        while not self._stop.wait(self._save_every_s):
            try:
                self.save()
            except OSError as exc:
                logger.error("control snapshot %s not written: %s", self.snapshot, exc)

    def stop(self) -> None:
        self._stop.set()
        for reader in self.readers:
            reader.stop()
        for reader in self.readers:
            if reader.is_alive():
                reader.join(timeout=5)
        self.save()


_PRODUCERS: dict[str, Producer] = {}
_PRODUCERS_LOCK = threading.Lock()


def _producer(broker_address: str) -> Producer:
    """One idempotent producer per broker and process, kept open: a new one holds its first message ~0.5-1 s on
    Tansu (its idempotent producer id arrives on a retry timer; make bench-control measured it), which would make
    every erasure request that slow."""
    with _PRODUCERS_LOCK:
        producer = _PRODUCERS.get(broker_address)
        if producer is None:
            producer = _PRODUCERS[broker_address] = Producer({
                "bootstrap.servers": broker_address, "enable.idempotence": True, "acks": "all", "linger.ms": 2,
                "queue.buffering.max.messages": 200_000})
        return producer


def publish_records(broker_address: str, topic: str, records: Iterable[tuple[str, bytes | None]], *,
                    timeout: float = 60.0) -> int:
    """Produce ``(key, value)`` records (a value of None is a tombstone) to a control topic and wait for every
    acknowledgement. Returns how many were published; raises :class:`BrokerError` if any was not."""
    producer = _producer(broker_address)
    errors: list[str] = []
    pending = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        pending[0] -= 1
        if err is not None:
            errors.append(str(err))

    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key.encode("utf-8"), value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        pending[0] += 1
    deadline = time.monotonic() + timeout
    while pending[0] > 0 and time.monotonic() < deadline:
        producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
    if pending[0] > 0 or errors:
        with _PRODUCERS_LOCK:
            _PRODUCERS.pop(broker_address, None)  # a broken producer is not reused
        raise BrokerError(f"publishing {count} records to {topic} failed: {errors[:3] or f'{pending[0]} unacked'}")
    return count
