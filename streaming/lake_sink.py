"""The lake sink: destination, quarantine, suppression and dead-letter topics → Parquet in the landing zone.

A separate Quix application (its own consumer group) so the hot path never waits on disk. Writes happen in a
``BatchingSink`` flushed at each checkpoint (side effects belong in sinks: offsets are committed only after the
flush succeeded), into the date-partitioned layout that :mod:`warehouse.lake` defines.
"""

from __future__ import annotations

import base64
import logging
import signal
from pathlib import Path

from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

from streaming import pii
from streaming import settings as topics
from streaming.broker import create_topics, fast_group_consumer_config
from streaming.settings import StreamingSettings, load_settings
from warehouse import lake

logger = logging.getLogger(__name__)

#: topic → lake stream. dest.marketing and dest.sales are delivery targets, not the record: the warehouse copy
#: is what dest.warehouse received.
STREAM_OF_TOPIC = {
    topics.DEST_WAREHOUSE: "events",
    topics.QUARANTINE: "quarantine",
    topics.SUPPRESSED: "suppressed",
    topics.DLQ: "dlq",
    topics.DELIVERY_OUTCOMES: "delivery_outcomes",
}


class LakeSink(BatchingSink):
    """Writes one Parquet file per (topic, partition, flush, event date), named after the offsets it holds."""

    def __init__(self, lake_root: Path, stream: str, *, secret: bytes = b"") -> None:
        super().__init__()
        self.lake_root = lake_root
        self.stream = stream
        self.secret = secret
        self.files_written = 0

    def write(self, batch: SinkBatch) -> None:
        records = []
        first = last = None
        for item in batch:
            value = dict(item.value) if isinstance(item.value, dict) else {"original": item.value}
            if self.stream == "deliveries":
                value = {k: value.get(k) for k in lake.DELIVERY_COLUMNS}
            if self.stream == "dlq" and isinstance(value.get("original"), str):
                # The durable copy of an invalid event must not hold clear PII: emails, phones and IPs are
                # replaced by their keyed hashes (the exact bytes stay on events.dlq, with raw retention).
                original = base64.b64decode(value["original"]).decode("utf-8", "replace")
                value["original"] = pii.scrub_text(original, self.secret).encode("utf-8")
            value["kafka_topic"] = batch.topic
            value["kafka_partition"] = batch.partition
            value["kafka_offset"] = item.offset
            first = item.offset if first is None else first
            last = item.offset
            records.append(value)
        if not records:
            return
        stem = f"{batch.topic}+{batch.partition}+{first:012d}+{last:012d}"
        written = lake.write_batch(self.lake_root, self.stream, records, file_stem=stem)
        self.files_written += len(written)
        logger.debug("lake: %d %s records → %d files", len(records), self.stream, len(written))


def build_app(settings: StreamingSettings, broker_address: str) -> tuple[Application, dict[str, LakeSink]]:
    app = Application(
        broker_address=broker_address,
        consumer_group=settings.lake_consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.lake_flush_seconds,
        # A flush writes one Parquet file per (topic, partition, event date): a year of backfill in one burst takes
        # longer than the 7 s poll interval that makes groups form fast on Tansu, and the sink was expelled.
        consumer_extra_config={**fast_group_consumer_config(), "max.poll.interval.ms": 60000,
                               "fetch.wait.max.ms": 100},
        loglevel="WARNING",
        use_changelog_topics=False,
    )
    sinks = {}
    lake_root = settings.layout.lake
    deliveries = LakeSink(lake_root, "deliveries")
    sinks["deliveries"] = deliveries
    for topic_name in dict.fromkeys((*STREAM_OF_TOPIC, *topics.DESTINATIONS)):
        topic = app.topic(settings.topic(topic_name), key_deserializer="bytes", value_deserializer="json")
        sdf = app.dataframe(topic)
        if topic_name in STREAM_OF_TOPIC:
            sink = LakeSink(lake_root, STREAM_OF_TOPIC[topic_name], secret=settings.pii_secret.encode("utf-8"))
            sinks[sink.stream] = sink
            sdf.sink(sink)
        if topic_name in topics.DESTINATIONS:
            sdf.sink(deliveries)
    return app, sinks


def run_lake_sink(settings: StreamingSettings | None = None, *, broker_address: str | None = None) -> None:
    settings = settings or load_settings()
    address = broker_address or settings.kafka_broker_address
    if not address:
        raise SystemExit("KAFKA_BROKER_ADDRESS is not set")
    settings.layout.ensure()
    create_topics(address, settings)
    app, _ = build_app(settings, address)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    app.run()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_lake_sink()


if __name__ == "__main__":
    main()
