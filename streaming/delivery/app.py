"""Delivery applications: one Quix Streams application per destination and lane, each its own consumer group, so a
destination's backlog never holds another's offsets (nor its retries its fresh events).

``python -m streaming.delivery --destination ID --lane fresh|retry`` runs one; ``python -m streaming.delivery``
runs every destination of the destinations file (both lanes, one process each: no lane shares a GIL, a socket or a
crash with another destination's), restarting a lane that exits on its own without touching the others.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from quixstreams import Application

from streaming import settings as topics
from streaming.broker import fast_group_consumer_config
from streaming.control import ControlReader
from streaming.control_tables import ERASURE, ControlTables
from streaming.delivery.config import Destination, DestinationsFile
from streaming.delivery.senders import Sender, make_sender
from streaming.delivery.sink import OUTCOMES, DestinationSink, Lane
from streaming.errors import BrokerError
from streaming.restarts import RestartPolicy, decide_restart
from streaming.settings import StreamingSettings

logger = logging.getLogger(__name__)


def delivery_topic_specs(settings: StreamingSettings, destinations: DestinationsFile) -> dict[str, dict[str, Any]]:
    """Retry and dead-letter topics per destination, and the outcomes topic (explicit configs, as Tansu needs)."""
    base = {"retention.ms": str(settings.retention_ms), "retention.bytes": str(settings.retention_bytes)}
    n = settings.partitions
    specs: dict[str, dict[str, Any]] = {}  # delivery.outcomes is a platform topic (streaming.broker)
    for d in destinations.destinations:
        specs[d.retry_topic(settings.topic_prefix)] = {"partitions": n, **base}
        # a dead letter waits for a fix and a replay: kept as long as the routed events are
        specs[d.dlq_topic(settings.topic_prefix)] = {"partitions": n, **base}
    return specs


def create_delivery_topics(address: str, settings: StreamingSettings, destinations: DestinationsFile) -> list[str]:
    admin = AdminClient({"bootstrap.servers": address})
    existing = set(admin.list_topics(timeout=30).topics)
    new = [NewTopic(name, num_partitions=int(spec["partitions"]), replication_factor=settings.replication_factor,
                    config={k: str(v) for k, v in spec.items() if k != "partitions"})
           for name, spec in delivery_topic_specs(settings, destinations).items() if name not in existing]
    for name, future in (admin.create_topics(new, request_timeout=30).items() if new else []):
        try:
            future.result(timeout=30)
        except Exception as exc:  # noqa: BLE001 - the admin API wraps the broker's error
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"could not create topic {name}: {exc}") from exc
    return [t.topic for t in new]


def build_delivery_app(settings: StreamingSettings, address: str, destination: Destination, lane: Lane, *,
                       sender: Sender | None = None, control: ControlTables | None = None,
                       state_dir: Path | None = None) -> tuple[Application, DestinationSink]:
    """The lane's application (not started) and its sink."""
    prefix = settings.topic_prefix
    batching = destination.batching
    app = Application(
        broker_address=address,
        consumer_group=f"{prefix}firstmile-delivery-{destination.id}" + ("-retry" if lane == "retry" else ""),
        auto_offset_reset="earliest",
        commit_interval=batching.max_wait_ms / 1000,
        commit_every=batching.max_events,
        # A checkpoint sends each partition's batch in turn: a hung destination can hold it for partitions x
        # timeout_s before the breaker opens. The fast-group default (7 s) expelled lanes then (make bench-delivery:
        # "Unknown member", the lane exits, a restart forgets the breaker); room for every partition's timeout.
        consumer_extra_config={**fast_group_consumer_config(), "fetch.wait.max.ms": 20,
                               "max.poll.interval.ms": int(max(60.0, 3 * settings.partitions * destination.timeout_s
                                                               + 30) * 1000)},
        state_dir=str(state_dir or settings.layout.state_dir / f"delivery-{destination.id}-{lane}"),
        loglevel="WARNING",
        processing_guarantee="at-least-once",
    )
    source = settings.topic(destination.topic) if lane == "fresh" else destination.retry_topic(prefix)
    topic = app.topic(source, key_deserializer="bytes", value_deserializer="json")
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})
    sink = DestinationSink(destination, lane, sender or make_sender(destination), producer,
                           retry_topic=destination.retry_topic(prefix), dlq_topic=destination.dlq_topic(prefix),
                           outcomes_topic=settings.topic(OUTCOMES), control=control)
    app.dataframe(topic).sink(sink)
    return app, sink


def run_lane(settings: StreamingSettings, address: str, destination: Destination, lane: Lane) -> None:
    """Run one lane until SIGTERM/SIGINT, with the erasures every worker holds (withheld at delivery)."""
    control = ControlTables()
    reader = ControlReader(address, settings.topic(topics.CONTROL_ERASURE), control, ERASURE)
    reader.start()
    reader.wait_caught_up(120)
    app, sink = build_delivery_app(settings, address, destination, lane, control=control)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    logger.info("delivering %s (%s) from %s, lane %s", destination.id, destination.type, destination.topic, lane)
    try:
        app.run()
    finally:
        reader.stop()
        sink.sender.close()
        logger.info("destination %s lane %s stopped: %s", destination.id, lane, sink.counts)


@dataclass
class _LaneProcess:
    """One destination's lane under :func:`run_all`, and when it may start again."""

    destination: str
    lane: Lane
    argv: list[str]
    process: subprocess.Popen[bytes]
    started_at: float
    rapid_failures: int = 0
    restart_at: float | None = None
    gave_up: bool = False

    @property
    def name(self) -> str:
        return f"{self.destination}/{self.lane}"


def run_all(destinations: DestinationsFile, env: dict[str, str], *,
            policy: RestartPolicy | None = None) -> int:
    """One process per destination and lane, each restarted alone when it exits (streaming/restarts.py: backoff
    from 1 s to 30 s, given up on after 5 quick exits in a row), so a destination whose lane crashes never restarts
    the others' (make bench-delivery: restarting every lane with it took the healthy destinations' p99 from
    0.3 s to 14-20 s). A lane given up on stays down, logged as an error; its events wait in Kafka. Returns 0 on
    SIGTERM/SIGINT with every lane running, 1 when a lane was given up on (at once when all were)."""
    policy = policy or RestartPolicy()

    def start(destination: str, lane: Lane) -> _LaneProcess:
        argv = [sys.executable, "-m", "streaming.delivery", "--destination", destination, "--lane", lane]
        return _LaneProcess(destination, lane, argv, subprocess.Popen(argv, env=env), time.monotonic())

    both: tuple[Lane, ...] = ("fresh", "retry")
    lanes = [start(d.id, lane) for d in destinations.destinations for lane in both]
    stopping = False

    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping and not all(lane.gave_up for lane in lanes):
        now = time.monotonic()
        for lane in lanes:
            if lane.gave_up:
                continue
            if lane.restart_at is None and lane.process.poll() is not None:
                _lane_exited(lane, policy, now)
            elif lane.restart_at is not None and now >= lane.restart_at:
                lane.process, lane.started_at, lane.restart_at = subprocess.Popen(lane.argv, env=env), now, None
                logger.info("lane %s restarted (pid %d)", lane.name, lane.process.pid)
        time.sleep(0.25)
    for lane in lanes:
        if lane.process.poll() is None:
            lane.process.terminate()
    for lane in lanes:
        try:
            lane.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lane.process.kill()
            lane.process.wait()
    return 1 if any(lane.gave_up for lane in lanes) else 0


def _lane_exited(lane: _LaneProcess, policy: RestartPolicy, now: float) -> None:
    code = lane.process.returncode
    decision = decide_restart(policy, started_at=lane.started_at, exited_at=now, rapid_failures=lane.rapid_failures)
    lane.rapid_failures = decision.rapid_failures
    if decision.delay_s is None:
        lane.gave_up = True
        logger.error("lane %s exited with %s, %d times in a row within %.0fs of its start: giving up on it (its "
                     "events wait in Kafka; the other lanes keep running)", lane.name, code,
                     decision.rapid_failures, policy.healthy_after_s)
        return
    lane.restart_at = now + decision.delay_s
    logger.warning("lane %s exited with %s after %.0fs; restarting it alone in %.0fs", lane.name, code,
                   now - lane.started_at, decision.delay_s)
