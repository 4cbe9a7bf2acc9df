"""The hot-path worker: a Quix Streams application that wires the pure decisions of :mod:`streaming.pipeline`.

Topology (ARCHITECTURE.md, "Keys, state and scale-out")::

    events.raw (key: device) ─ decide_device [state: identity, session, device consent]
        ├─ events.dlq          invalid, with reason and original bytes
        ├─ events.quarantine   bots, with reasons
        └─ group_by(profile) ─ decide_profile [state: consent, segment]
               ├─ dest.warehouse / dest.marketing / dest.sales   (key: profile)
               ├─ events.suppressed                               no destination may receive it (ledger only)
               └─ decisions                                       per-profile personalization (compacted)

Run one or many: ``python -m streaming.worker`` (every worker joins the same consumer group; scale = partitions).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from quixstreams import Application
from quixstreams.context import message_context
from quixstreams.models import TopicConfig

from streaming import settings as topics
from streaming.broker import create_topics, fast_group_consumer_config, topic_specs
from streaming.control import PolicyReader
from streaming.pipeline import Origin, decide_device, decide_profile
from streaming.policy import PolicyHolder
from streaming.recovery import use_true_high_watermarks
from streaming.settings import StreamingSettings, load_settings

logger = logging.getLogger(__name__)

STAGE2_TOPICS = (*topics.DESTINATIONS, topics.SUPPRESSED, topics.DECISIONS)


def _is_topic(name: str) -> Any:
    return lambda o: o["topic"] == name


def _topic_config(settings: StreamingSettings, name: str) -> TopicConfig:
    spec = topic_specs(settings)[settings.topic(name)]
    return TopicConfig(num_partitions=int(spec["partitions"]), replication_factor=settings.replication_factor,
                       extra_config={k: str(v) for k, v in spec.items() if k != "partitions"})


def build_app(settings: StreamingSettings, broker_address: str, holder: PolicyHolder, *,
              state_dir: str | None = None) -> Application:
    """The worker's Quix application (not started). ``holder`` supplies the current policy per event."""
    secret = settings.pii_secret.encode("utf-8")
    app = Application(
        broker_address=broker_address,
        consumer_group=settings.consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval,
        # Tansu forms a group in ~3 s with these (defaults: ~23 s); fetch wait 20 ms is its sustainable minimum.
        consumer_extra_config={**fast_group_consumer_config(), "fetch.wait.max.ms": 20},
        # With a repartition, linger >= 10 ms keeps the repartition topic from filling with tiny batches.
        producer_extra_config={"linger.ms": 10},
        state_dir=state_dir or str(settings.layout.state_dir),
        loglevel="WARNING",
        processing_guarantee="at-least-once",
    )

    def topic(name: str, *, key: Any = "str", value: Any = "json") -> Any:
        return app.topic(settings.topic(name), key_deserializer=key, key_serializer=key, value_deserializer=value,
                         value_serializer=value, config=_topic_config(settings, name))

    raw = topic(topics.RAW, key="bytes", value="bytes")
    dlq = topic(topics.DLQ, key="bytes")
    quarantine = topic(topics.QUARANTINE, key="bytes")
    stage2_out = {name: topic(name) for name in STAGE2_TOPICS}

    def stage1(value: bytes | None, key: bytes | None, _ts: int, _headers: Any, state: Any) -> dict[str, Any]:
        ctx = message_context()
        out = decide_device(value, state, holder.current, secret=secret,
                            origin=Origin(ctx.partition, ctx.offset), key=key)
        return {"topic": out.topic, "value": out.value}

    def stage2(value: dict[str, Any], state: Any) -> list[dict[str, Any]]:
        return [{"topic": o.topic, "value": o.value} for o in decide_profile(value, state, holder.current)]

    sdf = app.dataframe(raw)
    decided = sdf.apply(stage1, stateful=True, metadata=True)
    decided.filter(lambda o: o["topic"] == topics.DLQ).apply(lambda o: o["value"]).to_topic(dlq)
    decided.filter(lambda o: o["topic"] == topics.QUARANTINE).apply(lambda o: o["value"]).to_topic(quarantine)
    # Stage-1 suppressions (erased people, client retries) are keyed by event id: no identifier in the key.
    decided.filter(lambda o: o["topic"] == topics.SUPPRESSED).apply(lambda o: o["value"]).to_topic(
        stage2_out[topics.SUPPRESSED], key=lambda v: v["event_id"])
    profiles = decided.filter(lambda o: o["topic"] == "profile").apply(lambda o: o["value"])
    profiles = profiles.group_by(lambda v: v["profile_id"], name="profile", key_serializer="str",
                                 key_deserializer="str")
    routed = profiles.apply(stage2, stateful=True, expand=True)
    for name, out_topic in stage2_out.items():
        routed.filter(_is_topic(name)).apply(lambda o: o["value"]).to_topic(out_topic)
    return app


def run_worker(settings: StreamingSettings | None = None, *, broker_address: str | None = None) -> None:
    """Start a worker against the configured broker: read policy to the end, then process until SIGTERM/SIGINT."""
    from streaming import enrich

    settings = settings or load_settings()
    address = broker_address or settings.kafka_broker_address
    if not address:
        raise SystemExit("KAFKA_BROKER_ADDRESS is not set: start the platform with `firstmile up`, or point the "
                         "worker at a broker")
    create_topics(address, settings)
    use_true_high_watermarks(address)  # state recovery after a restart on Tansu (streaming/recovery.py)
    enrich.warm()
    holder = PolicyHolder()
    reader = PolicyReader(address, settings.topic(topics.CONTROL_POLICY), holder)
    reader.start()
    reader.wait_caught_up()
    logger.info("worker starting with policy v%d", holder.current.version)
    app = build_app(settings, address, holder)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    try:
        app.run()
    finally:
        reader.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker()


if __name__ == "__main__":
    main()
