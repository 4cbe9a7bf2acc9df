"""The collector's way to ``events.raw``: an idempotent, acked confluent-kafka producer driven by a poll thread.

A request produces its events and awaits one asyncio future; the poll thread's delivery callbacks count the
acknowledgements down and resolve that future on the event loop once every event is acknowledged (or the first
fails). The broker's health is tracked from three signals: delivery outcomes, librdkafka's ``_ALL_BROKERS_DOWN``
and a periodic metadata probe; ``/readyz`` reads it, and while every broker is down requests fail fast with 503.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time, refused, or is known to be down: answer 503."""


def _resolve(future: asyncio.Future[None], error: Any) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(BrokerUnavailable(str(error)))


class _Delivery:
    """Counts one request's acknowledgements down (only the poll thread calls it)."""

    __slots__ = ("future", "loop", "remaining", "error", "sink")

    def __init__(self, sink: KafkaSink, future: asyncio.Future[None], count: int) -> None:
        self.sink = sink
        self.future = future
        self.loop = future.get_loop()
        self.remaining = count
        self.error: Any = None

    def __call__(self, err: Any, _msg: Any) -> None:
        if err is not None:
            if self.error is None:
                self.error = err
            self.sink.on_failure(err)
        else:
            self.sink.last_ack = time.monotonic()
        self.remaining -= 1
        if self.remaining == 0 or (err is not None and self.error is err):
            try:
                self.loop.call_soon_threadsafe(_resolve, self.future, self.error)
            except RuntimeError:  # loop closed at shutdown
                pass


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
            "error_cb": self._on_error,
            **(extra or {}),
        }
        self.producer = Producer(self.config)
        self.last_ack = 0.0
        self.last_probe_ok = 0.0
        self.probe_ok = False
        self.all_down = False
        self.fatal: KafkaError | None = None
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
            self.probe_ok = False
        else:
            logger.info("producer error: %s", err)

    def on_failure(self, err: KafkaError) -> None:
        logger.warning("delivery failed: %s", err)
        self.probe_ok = False

    def _poll_loop(self) -> None:
        while self._running:
            try:
                self.producer.poll(0.05)
            except Exception:  # a callback must never kill the thread
                logger.exception("producer poll failed")

    # -- the request path (event loop) ---------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.probe_ok and not self.all_down and self.fatal is None

    def produce(self, messages: list[tuple[bytes, bytes]]) -> asyncio.Future[None]:
        """Produce ``(key, value)`` pairs; the returned future resolves when all are acknowledged."""
        if self.all_down or self.fatal is not None:
            raise BrokerUnavailable("broker unavailable")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
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

    async def send(self, messages: list[tuple[bytes, bytes]]) -> None:
        future = self.produce(messages)
        loop = future.get_loop()
        # A backstop only: librdkafka's message.timeout.ms fails the delivery first.
        timer = loop.call_later(self.ack_timeout_ms / 1000 + 1.0, _resolve, future, "acknowledgement timed out")
        try:
            await future
        finally:
            timer.cancel()

    # -- health (executor threads) -------------------------------------------------------------------------
    def probe(self, timeout: float = 2.0) -> bool:
        """A metadata request for the topic: the broker answers and the topic has partitions with leaders."""
        if self.fatal is not None:
            self._replace_producer()
        try:
            metadata = self.producer.list_topics(self.topic, timeout=timeout)
            topic = metadata.topics.get(self.topic)
            ok = bool(topic is not None and topic.error is None and topic.partitions
                      and all(p.leader >= 0 for p in topic.partitions.values()))
        except KafkaException as exc:
            logger.info("broker probe failed: %s", exc)
            ok = False
        if ok:
            self.last_probe_ok = time.monotonic()
            self.all_down = False
        self.probe_ok = ok
        return ok

    def _replace_producer(self) -> None:
        old = self.producer
        self.producer = Producer(self.config)
        self.fatal = None
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.poll(0)
        except Exception:  # noqa: BLE001 - the old producer is gone either way
            logger.exception("purging the failed producer")
        logger.warning("producer replaced after a fatal error")

    def close(self, timeout: float = 5.0) -> int:
        """Flush what is queued (bounded), stop the poll thread. Returns the count still unflushed."""
        left = self.producer.flush(timeout)
        self._running = False
        self._thread.join(timeout=1.0)
        return int(left)
