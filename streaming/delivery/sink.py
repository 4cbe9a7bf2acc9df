"""The delivery sink: one per destination and lane, a Quix ``BatchingSink`` (offsets are committed only after
``write`` returned, so an event is never committed before it was delivered, retried or dead-lettered).

Lanes. The **fresh** lane reads the routed topic; an event that fails with a retryable answer goes to the
destination's retry topic (``delivery.<id>.retry``) with its attempt count and when it is due, so retries never hold
up fresh events. The **retry** lane reads that topic and, while the head of a batch is not due yet, pauses (Quix's
backpressure: the batch is read again later) instead of sleeping.

Each event ends as one outcome on ``delivery.outcomes``: ``delivered``, ``retrying`` (attempt n failed, the next is
scheduled), ``dead_lettered`` (a final answer, or retries exhausted past the retry window; the dead letter on
``delivery.<id>.dlq`` keeps the status, the answer's first bytes and the attempts) or ``withheld`` (its profile was
erased since it was routed: it is not delivered, and the dead letter says why).

The circuit breaker: after ``breaker_failures`` failed sends in a row the destination is paused (both lanes apply
backpressure, events wait in Kafka); after the pause one batch probes it; success closes the breaker, failure pauses
it again for twice as long (at most :data:`MAX_PAUSE_S`). Each change is logged.

Order: per profile on the first attempt (the routed topic is keyed by profile and a lane sends a partition's batch
in offset order); an event that is retried is delivered after its profile's later events that succeeded first.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from confluent_kafka import Producer
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from streaming import settings as topics
from streaming.control_tables import ControlTables
from streaming.delivery.config import Destination
from streaming.delivery.senders import RateLimiter, Sender, SendResult
from streaming.errors import BrokerError

logger = logging.getLogger(__name__)

Lane = Literal["fresh", "retry"]
OUTCOMES = topics.DELIVERY_OUTCOMES
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 15 * 60.0
FIRST_PAUSE_S = 2.0
MAX_PAUSE_S = 60.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backoff_s(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Exponential with jitter (half to full of 2^(attempt-1) s, at most 15 min), never before ``Retry-After``."""
    ceiling = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2 ** max(0, attempt - 1))
    return max(ceiling * rng.uniform(0.5, 1.0), retry_after or 0.0)


class Breaker:
    """Consecutive failures → open for a pause that doubles while probes fail; one batch probes when it ends."""

    def __init__(self, destination_id: str, threshold: int) -> None:
        self.destination_id, self.threshold = destination_id, threshold
        self.failures = 0
        self.open_until = 0.0
        self.pause = FIRST_PAUSE_S
        self.opened = 0

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold

    def wait_s(self) -> float:
        """Seconds until the next probe (0: send now)."""
        return max(0.0, self.open_until - time.monotonic()) if self.is_open else 0.0

    def success(self) -> None:
        if self.is_open:
            logger.warning("destination %s: circuit closed (a probe succeeded)", self.destination_id)
        self.failures, self.pause = 0, FIRST_PAUSE_S

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if self.failures > self.threshold:
                self.pause = min(MAX_PAUSE_S, self.pause * 2)
            self.open_until = time.monotonic() + self.pause
            self.opened += 1
            logger.warning("destination %s: circuit open after %d failures in a row; next probe in %.0fs",
                           self.destination_id, self.failures, self.pause)


class DestinationSink(BatchingSink):
    """Delivers a lane's batches to one destination (see the module docstring)."""

    def __init__(self, destination: Destination, lane: Lane, sender: Sender, producer: Producer, *,
                 retry_topic: str, dlq_topic: str, outcomes_topic: str, control: ControlTables | None = None,
                 seed: int | None = None) -> None:
        super().__init__()
        self.destination, self.lane, self.sender, self.producer = destination, lane, sender, producer
        self.retry_topic, self.dlq_topic, self.outcomes_topic = retry_topic, dlq_topic, outcomes_topic
        self.control = control or ControlTables()
        self.breaker = Breaker(destination.id, destination.breaker_failures)
        self.limiter = RateLimiter(destination.rate_limit_per_s)
        self.rng = random.Random(seed)
        self.counts = {"delivered": 0, "retrying": 0, "dead_lettered": 0, "withheld": 0}
        self._settled = False

    # ---- the batch --------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Quix flushes every partition's batch in one checkpoint, and backpressure rewinds them all: once one
        batch of this checkpoint was settled (sent, put on the retry topic, dead-lettered), a later one must not
        raise it, or the settled batch is read and sent again (make bench-delivery counted hundreds of such
        duplicates). ``_settled`` says whether that point is passed."""
        self._settled = False
        super().flush()

    def _pause(self, entries: list[dict[str, Any]], seconds: float) -> None:
        """Wait ``seconds`` before these entries are tried: backpressure while nothing of this checkpoint was
        settled, else back on the retry topic, due then (no rewind of what is settled)."""
        if not self._settled:
            raise SinkBackpressureError(retry_after=min(seconds, MAX_PAUSE_S))
        for entry in entries:
            self._reschedule(entry, time.time() + seconds)
        self._flush()

    def write(self, batch: SinkBatch) -> None:
        entries = []
        for item in batch:
            entry = self._entry(item.value)
            if entry is None:  # not a JSON object: nothing to deliver, kept as a dead letter with why
                self._dead_letter({"event": {"value": item.value}, "attempt": 0, "first_attempt_at": time.time()},
                                  "not_an_object", SendResult("final", error="the record is not a JSON object"),
                                  "dead_lettered")
            else:
                entries.append(entry)
        if self.lane == "retry" and entries:
            now = time.time()
            due = [e for e in entries if e["due_at"] <= now]
            if not due:
                if not self._settled:
                    raise SinkBackpressureError(retry_after=min(min(e["due_at"] for e in entries) - now,
                                                                MAX_PAUSE_S))
                for entry in entries:
                    self._produce(self.retry_topic, entry["event"], entry)
                self._flush()
                return
            for entry in entries:  # not due yet: back on the retry topic as it was (no rewind of what is settled)
                if entry["due_at"] > now:
                    self._produce(self.retry_topic, entry["event"], entry)
            entries = due
        wait = self.breaker.wait_s()
        if wait > 0 and self.lane == "fresh":
            self._pause(entries, wait)  # paused: fresh events wait in Kafka (or, mid-checkpoint, on the retry topic)
            return
        if wait > 0:
            # Paused retries are rescheduled for the probe (or dead-lettered once out of their window) rather than
            # re-read: a rewind would repeat what this batch already settled.
            for entry in entries:
                self._reschedule(entry, time.time() + wait)
            self._flush()
            self._settled = True
            return
        sendable = []
        for entry in entries:
            if self._erased(entry["event"]):
                self._dead_letter(entry, "erased", SendResult("final", error="the profile was erased after "
                                                                            "the event was routed"), "withheld")
            else:
                sendable.append(entry)
        for chunk in self._chunks(sendable):
            self.limiter.wait(len(chunk))
            self._send(chunk)
        self._flush()
        self._settled = True

    def _flush(self) -> None:
        remaining = self.producer.flush(30)
        if remaining:
            raise BrokerError(f"{remaining} delivery records not acknowledged: the batch is read again")

    def _reschedule(self, entry: dict[str, Any], due_at: float) -> None:
        """Back on the retry topic, due at ``due_at``, attempts unchanged; dead-lettered if that is past the
        retry window."""
        if due_at - entry["first_attempt_at"] > self.destination.retry_window_s:
            last = SendResult("retry", entry.get("last_status"), error=entry.get("last_error") or "circuit open")
            self._dead_letter(entry, "retries_exhausted", last, "dead_lettered")
            return
        self._produce(self.retry_topic, entry["event"], {**entry, "due_at": due_at})

    def _send(self, chunk: list[dict[str, Any]]) -> None:
        """Send a chunk and settle each event; a final answer to several events is bisected, so one bad event
        does not dead-letter the others (their halves are sent again: same idempotency keys per event)."""
        if self.breaker.is_open and self.breaker.wait_s() > 0:  # opened by an earlier chunk of this batch
            result = SendResult("retry", error="circuit open")
        else:
            result = self.sender.send([e["event"] for e in chunk])
            # a final answer (a 4xx) still means the destination is up: only unavailability opens the breaker
            self.breaker.failure() if result.outcome == "retry" else self.breaker.success()
        if result.outcome == "final" and len(chunk) > 1:
            half = len(chunk) // 2
            self._send(chunk[:half])
            self._send(chunk[half:])
            return
        for entry in chunk:
            self._settle(entry, result)

    def _entry(self, value: Any) -> dict[str, Any] | None:
        """A retry-topic record as is; a routed record wrapped as attempt 0; None for a record that is not an
        object."""
        if self.lane == "retry":
            return dict(value) if isinstance(value, dict) and isinstance(value.get("event"), dict) else None
        if not isinstance(value, dict):
            return None
        return {"event": value, "attempt": 0, "first_attempt_at": time.time(), "due_at": 0.0}

    def _erased(self, event: dict[str, Any]) -> bool:
        control = self.control
        return any(control.is_erased(event.get(k)) for k in ("profile_id", "user_id", "anonymous_id"))

    def _chunks(self, entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        limits = self.destination.batching
        chunks: list[list[dict[str, Any]]] = []
        size = 0
        for entry in entries:
            n = len(orjson.dumps(entry["event"]))
            if not chunks or len(chunks[-1]) >= limits.max_events or size + n > limits.max_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(entry)
            size += n
        return chunks

    # ---- one event's outcome ----------------------------------------------------------------------------------
    def _settle(self, entry: dict[str, Any], result: SendResult) -> None:
        attempt = entry["attempt"] + 1
        if result.outcome == "delivered":
            self._outcome(entry["event"], "delivered", attempt, result)
            return
        if result.outcome == "final":
            self._dead_letter({**entry, "attempt": attempt}, "final_answer", result, "dead_lettered")
            return
        waited = time.time() - entry["first_attempt_at"]
        delay = backoff_s(attempt, result.retry_after_s, self.rng)
        if waited + delay > self.destination.retry_window_s:
            self._dead_letter({**entry, "attempt": attempt}, "retries_exhausted", result, "dead_lettered")
            return
        retry = {**entry, "attempt": attempt, "due_at": time.time() + delay, "last_status": result.http_status,
                 "last_error": result.error or result.body[:200]}
        self._produce(self.retry_topic, entry["event"], retry)
        self._outcome(entry["event"], "retrying", attempt, result)

    def _dead_letter(self, entry: dict[str, Any], reason: str, result: SendResult, status: str) -> None:
        self._produce(self.dlq_topic, entry["event"], {
            "event": entry["event"], "destination": self.destination.id, "reason": reason,
            "http_status": result.http_status, "body": result.body, "error": result.error,
            "attempts": entry["attempt"], "first_attempt_at": entry["first_attempt_at"],
            "dead_lettered_at": now_iso()})
        self._outcome(entry["event"], status, entry["attempt"], result, reason=reason)

    def _outcome(self, event: dict[str, Any], status: str, attempt: int, result: SendResult, *,
                 reason: str | None = None) -> None:
        self.counts[status] += 1
        self._produce(self.outcomes_topic, event, {
            "event_id": event.get("event_id"), "destination": self.destination.id,
            "routed_topic": self.destination.topic, "profile_id": event.get("profile_id"),
            "event_ts": event.get("event_ts"), "status": status, "attempt": attempt, "lane": self.lane,
            "http_status": result.http_status, "reason": reason, "at": now_iso()})

    def _produce(self, topic: str, event: dict[str, Any], value: dict[str, Any]) -> None:
        key = str(event.get("profile_id") or event.get("event_id") or "").encode()
        while True:
            try:
                self.producer.produce(topic, key=key, value=orjson.dumps(value))
                return
            except BufferError:
                self.producer.poll(0.05)
