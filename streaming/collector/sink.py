"""The collector's way to ``events.raw``: an idempotent, acked confluent-kafka producer driven by a poll thread.

A request produces its events and awaits one asyncio future; the poll thread's delivery callbacks count the
acknowledgements down and resolve that future on the event loop once every event is acknowledged (or the first
fails). The broker's health is tracked from three signals: delivery outcomes, librdkafka's ``_ALL_BROKERS_DOWN``
and a periodic metadata probe; ``/readyz`` reads it, and while every broker is down requests fail fast with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streaming.errors import FirstmileError

logger = logging.getLogger(__name__)


#: Delivery errors after which this producer instance never recovers by itself: replace it (a new producer id).
#: Seen on Tansu: after an in-flight ProduceRequest times out, librdkafka bumps the idempotent producer's epoch
#: and Tansu answers PRODUCER_FENCED to every later produce, without librdkafka raising a fatal error.
_REPLACE_PRODUCER = frozenset({
    KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.UNKNOWN_PRODUCER_ID, KafkaError.INVALID_PRODUCER_ID_MAPPING, KafkaError._FENCED, KafkaError._FATAL,
    KafkaError._INCONSISTENT,
})


class BrokerUnavailable(FirstmileError):
    """The broker did not acknowledge in time, refused, or is known to be down: answer 503."""


def _resolve(future: asyncio.Future[str], error: Any, token: str = "") -> None:
    if future.done():
        return
    if error is None:
        future.set_result(token)
    else:
        future.set_exception(BrokerUnavailable(str(error)))


def _resolve_many(done: list[tuple[asyncio.Future[str], Any, str]]) -> None:
    for future, error, token in done:
        _resolve(future, error, token)


def write_token(offsets: dict[int, int]) -> str:
    """What a request wrote, for read-your-writes (``streaming.serving``): ``<partition>.<offset>`` of the last
    event per ``events.raw`` partition, comma separated."""
    return ",".join(f"{p}.{o}" for p, o in sorted(offsets.items()))


class _Delivery:
    """Counts one request's acknowledgements down (only the poll thread calls it)."""

    __slots__ = ("future", "remaining", "error", "sink", "offsets")

    def __init__(self, sink: KafkaSink, future: asyncio.Future[str], count: int) -> None:
        self.sink = sink
        self.future = future
        self.remaining = count
        self.error: Any = None
        self.offsets: dict[int, int] = {}

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            first = self.error is None
            if first:
                self.error = err
            self.sink.on_failure(err)
            self.remaining -= 1
            if first:  # answer 503 at the first failure, not after the last acknowledgement
                self.sink.done.append((self.future, err, ""))
            return
        self.remaining -= 1
        partition, offset = msg.partition(), msg.offset()
        if offset > self.offsets.get(partition, -1):
            self.offsets[partition] = offset
        if self.remaining == 0 and self.error is None:
            self.sink.done.append((self.future, None, write_token(self.offsets)))


class KafkaSink:
    def __init__(self, address: str, topic: str, *, linger_ms: float = 1.0, ack_timeout_ms: int = 5000,
                 extra: dict[str, Any] | None = None) -> None:
        self.address = address
        self.topic = topic
        self.ack_timeout_ms = ack_timeout_ms
        self.config: dict[str, Any] = {
            "bootstrap.servers": address,
            "client.id": "firstmile-collector",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            # A request waits at most this long for its acknowledgements; then the delivery report fails and the
            # client gets 503 (it retries; event_id dedupes downstream).
            "message.timeout.ms": ack_timeout_ms,
            "request.timeout.ms": max(ack_timeout_ms, 1000),
            "socket.keepalive.enable": True,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "compression.type": "none",
            # Tansu (and a Kafka with auto.create.topics.enable) creates a topic on a metadata request: with 4
            # partitions and none of the explicit configs create_topics() sets. Never let the probe do that.
            "allow.auto.create.topics": False,
            "error_cb": self._on_error,
            **(extra or {}),
        }
        self.producer = Producer(self.config)
        self.last_ack = 0.0
        self.last_probe_ok = 0.0
        self.probe_ok = False
        self.all_down = False
        self.fatal: KafkaError | None = None
        #: the broker was lost (down or timing out): start a fresh producer once it answers again
        self.stale = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: list[tuple[asyncio.Future[str], Any, str]] = []
        self._running = True
        self._thread = threading.Thread(target=self._poll_loop, name="collector-kafka-poll", daemon=True)
        self._thread.start()

    # -- callbacks (poll thread) ---------------------------------------------------------------------------
    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        if err.fatal():
            logger.error("fatal producer error, the producer will be replaced: %s", err)
            self.fatal = err
        elif code == KafkaError._ALL_BROKERS_DOWN:
            logger.warning("all brokers down: failing requests fast until a probe succeeds")
            self.all_down = True
            self.stale = True
            self.probe_ok = False
        else:
            logger.info("producer error: %s", err)

    def on_failure(self, err: KafkaError) -> None:
        logger.warning("delivery failed: %s", err)
        self.probe_ok = False
        if err.code() in _REPLACE_PRODUCER and self.fatal is None:
            logger.error("producer unusable (%s): it will be replaced", err.name())
            self.fatal = err
        elif err.code() == KafkaError._MSG_TIMED_OUT:
            self.stale = True

    def _poll_loop(self) -> None:
        # Completed requests are handed to the event loop once per poll() (one wake-up for many acks).
        while self._running:
            try:
                self.producer.poll(0.05)
            except Exception:  # a callback must never kill the thread
                logger.exception("producer poll failed")
            if self.done:
                done, self.done = self.done, []
                if any(error is None for _, error, _ in done):
                    self.last_ack = time.monotonic()
                loop = self.loop
                if loop is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                        loop.call_soon_threadsafe(_resolve_many, done)

    # -- the request path (event loop) ---------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.probe_ok and not self.all_down and not self.stale and self.fatal is None

    def produce(self, messages: list[tuple[bytes, bytes]]) -> asyncio.Future[str]:
        """Produce ``(key, value)`` pairs; the returned future resolves when all are acknowledged, to their
        :func:`write_token`."""
        if self.all_down or self.fatal is not None:
            raise BrokerUnavailable("broker unavailable")
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        delivery = _Delivery(self, future, len(messages))
        produce = self.producer.produce
        topic = self.topic
        try:
            for key, value in messages:
                produce(topic, value, key, on_delivery=delivery)
        except BufferError as exc:  # the local queue is full: the broker is not keeping up
            raise BrokerUnavailable("producer queue full") from exc
        except KafkaException as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return future

    async def send(self, messages: list[tuple[bytes, bytes]]) -> str:
        """Produce and wait for every acknowledgement; returns the :func:`write_token`."""
        future = self.produce(messages)
        loop = future.get_loop()
        # A backstop only: librdkafka's message.timeout.ms fails the delivery first.
        timer = loop.call_later(self.ack_timeout_ms / 1000 + 1.0, _resolve, future, "acknowledgement timed out")
        try:
            return await future
        finally:
            timer.cancel()

    # -- health (executor threads) -------------------------------------------------------------------------
    def probe(self, timeout: float = 2.0) -> bool:
        """A metadata request for the topic: the broker answers and the topic has partitions with leaders."""
        if self.fatal is not None:
            self._replace_producer()
        ok = self._metadata_ok(timeout)
        if ok and self.stale:
            # Back after an outage. The idempotent producer's state does not survive it on Tansu: after in-flight
            # timeouts it is fenced (PRODUCER_FENCED on every produce), and against a restarted in-memory broker
            # its produce requests time out silently. A fresh producer (new producer id) works in both cases.
            self._replace_producer()
            ok = self._metadata_ok(timeout)
        if ok:
            self.last_probe_ok = time.monotonic()
            self.all_down = False
        self.probe_ok = ok
        return ok

    def _metadata_ok(self, timeout: float) -> bool:
        try:
            metadata = self.producer.list_topics(self.topic, timeout=timeout)
        except KafkaException as exc:
            logger.info("broker probe failed: %s", exc)
            return False
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            logger.info("broker probe: topic %s not available (%s)", self.topic, topic.error if topic else None)
            return False
        return all(p.leader >= 0 for p in topic.partitions.values())

    def _replace_producer(self) -> None:
        old = self.producer
        self.producer = Producer(self.config)
        self.fatal = None
        self.stale = False
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.poll(0)
        except Exception:  # noqa: BLE001 - the old producer is gone either way
            logger.exception("purging the failed producer")
        logger.warning("producer replaced (fresh producer id)")

    def close(self, timeout: float = 5.0) -> int:
        """Flush what is queued (bounded), stop the poll thread. Returns the count still unflushed."""
        left = self.producer.flush(timeout)
        self._running = False
        self._thread.join(timeout=1.0)
        return int(left)
