"""The hot-path worker: a Quix Streams application that wires the pure decisions of :mod:`streaming.pipeline`.

Topology (ARCHITECTURE.md, "Keys, state and scale-out")::

    control.identity, control.erasure ─ broadcast to every worker (ControlSync: merges, erased ids; read before
                                        the first event, snapshot in the state directory)
    events.raw (key: device) ─ decide_device [state: identity, session, device consent]
        ├─ events.dlq          invalid, with reason and original bytes
        ├─ events.quarantine   bots, with reasons
        ├─ events.suppressed   erased people, client retries (keyed by event id)
        └─ group_by(profile) ─ decide_profile [state: consent, segment]
               ├─ dest.warehouse / dest.marketing / dest.sales   (key: profile)
               ├─ events.suppressed                               no destination may receive it (ledger only)
               ├─ decisions                                       per-profile personalization (compacted)
               └─ profiles, profiles.devices                      the live profile for serving (compacted)

Outputs leave through one ``to_topic`` per branch whose topic is chosen per output, not one filter branch per
topic: Quix pickles and unpickles the value once per extra branch (nine branches cost about half the worker's CPU,
bench_hotpath.py). A stage that raises on an event (a bug, never bad input: that is the DLQ's
``schema``/``invalid_json``/… path) sends that event to the DLQ with reason ``processing_error`` and goes on.

Run one or many: ``python -m streaming.worker`` (every worker joins the same consumer group; scale = partitions).
"""

from __future__ import annotations

import gc
import logging
import signal
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.context import message_context
from quixstreams.models import TopicConfig
from quixstreams.models.serializers import SerializationContext, Serializer
from quixstreams.utils.json import dumps as json_dumps

from streaming import settings as topics
from streaming.broker import create_topics, fast_group_consumer_config, topic_specs
from streaming.contract import InvalidEvent
from streaming.control import ControlSync, PolicyReader
from streaming.control_tables import ControlTables
from streaming.pipeline import PROFILE, Origin, Output, dead_letter, decide_device, decide_profile
from streaming.policy import PolicyHolder
from streaming.recovery import use_true_high_watermarks
from streaming.settings import StreamingSettings, load_settings

logger = logging.getLogger(__name__)

#: Topics a stage may route an output to (``streaming.pipeline.Output.topic``); ``PROFILE`` means the repartition.
OUTPUT_TOPICS = (topics.DLQ, topics.QUARANTINE, topics.SUPPRESSED, topics.DECISIONS, topics.PROFILES,
                 topics.PROFILE_DEVICES, *topics.DESTINATIONS)


class RoutedSerializer(Serializer):
    """Serializes the ``value`` of a routed output ``{"topic", "key", "value"}`` as JSON (Quix's own encoding)."""

    def __call__(self, value: Any, ctx: SerializationContext) -> bytes | None:  # type: ignore[override]
        inner = value["value"]
        return None if inner is None else json_dumps(inner)  # None: a tombstone (an erased profile's view)


def _topic_config(settings: StreamingSettings, name: str) -> TopicConfig:
    spec = topic_specs(settings)[settings.topic(name)]
    return TopicConfig(num_partitions=int(spec["partitions"]), replication_factor=settings.replication_factor,
                       extra_config={k: str(v) for k, v in spec.items() if k != "partitions"})


def _routed(topic: str, key: bytes | None, value: dict[str, Any] | None) -> dict[str, Any]:
    return {"topic": topic, "key": key, "value": value}


def routed_from_device(out: Output, raw_key: bytes | None) -> dict[str, Any]:
    """Stage 1's output with the key its topic is keyed by: the profile for the repartition, the event id for a
    suppression (no identifier in the key), the (pseudonymous) device for the quarantine, the raw key for the DLQ
    (the raw tier)."""
    assert out.value is not None  # stage 1 never writes a tombstone
    if out.topic == PROFILE:
        return _routed(PROFILE, out.key.encode("utf-8") if out.key else None, out.value)
    if out.topic == topics.SUPPRESSED:
        return _routed(out.topic, str(out.value["event_id"]).encode("utf-8"), out.value)
    if out.topic == topics.QUARANTINE:
        return _routed(out.topic, str(out.key).encode("utf-8"), out.value)
    return _routed(out.topic, raw_key, out.value)


def routed_from_profile(outs: list[Output], key: bytes | str | None) -> list[dict[str, Any]]:
    """Stage 2's outputs keyed by profile (the message key of stage 2 when an output names none)."""
    fallback = key.encode("utf-8") if isinstance(key, str) else key
    return [_routed(o.topic, o.key.encode("utf-8") if o.key else fallback, o.value) for o in outs]


def _failed(stage: str, exc: Exception, raw: bytes | None, origin: Origin, key: bytes | None) -> dict[str, Any]:
    """A stage raised on this event: dead-letter it with the input it had, so it is counted and can be replayed."""
    logger.exception("%s failed on the record at %s/%s: dead-lettered as processing_error", stage,
                     origin.partition, origin.offset)
    detail = f"{stage}: {type(exc).__name__}: {exc}"
    out = dead_letter(raw, InvalidEvent("processing_error", detail), origin, key=key)
    return _routed(topics.DLQ, key, out.value)


def build_app(settings: StreamingSettings, broker_address: str, holder: PolicyHolder, *,
              state_dir: str | None = None, control: ControlTables | None = None) -> Application:
    """The worker's Quix application (not started). ``holder`` supplies the current policy per event, ``control``
    the identity merges and erasures (kept current by :class:`~streaming.control.ControlSync`)."""
    tables = control if control is not None else ControlTables()
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
    routed = RoutedSerializer()

    def topic(name: str) -> Any:
        return app.topic(settings.topic(name), key_serializer="bytes", key_deserializer="bytes",
                         value_serializer=routed, value_deserializer="json", config=_topic_config(settings, name))

    out_topics = {name: topic(name) for name in OUTPUT_TOPICS}
    raw = app.topic(settings.topic(topics.RAW), key_deserializer="bytes", value_deserializer="bytes",
                    config=_topic_config(settings, topics.RAW))

    def stage1(value: bytes | None, key: bytes | None, _ts: int, _headers: Any, state: Any) -> dict[str, Any]:
        ctx = message_context()
        origin = Origin(ctx.partition, ctx.offset)
        try:
            out = decide_device(value, state, holder.current, secret=secret, origin=origin, key=key, control=tables)
        except Exception as exc:  # noqa: BLE001 - contained: the stream never stops for one event
            return _failed("decide_device", exc, value, origin, key)
        return routed_from_device(out, key)

    def stage2(value: dict[str, Any], key: bytes | None, _ts: int, _headers: Any,
               state: Any) -> list[dict[str, Any]]:
        try:
            # the version stage 1 decided this event with, while this process still holds it
            outs = decide_profile(value, state, holder.version(value.get("policy_version")), tables)
        except Exception as exc:  # noqa: BLE001 - contained, as in stage 1
            ctx = message_context()
            raw = json_dumps(value)
            origin = Origin(value.get("raw_partition", ctx.partition), value.get("raw_offset", ctx.offset)) \
                if isinstance(value, dict) else Origin(ctx.partition, ctx.offset)
            return [_failed("decide_profile", exc, raw, origin, key)]
        return routed_from_profile(outs, key)

    def choose(value: dict[str, Any], _key: Any, _ts: int, _headers: Any) -> Any:
        return out_topics[value["topic"]]

    def key_of(value: dict[str, Any]) -> Any:
        return value["key"]

    decided = app.dataframe(raw).apply(stage1, stateful=True, metadata=True)
    decided.filter(lambda o: o["topic"] != PROFILE).to_topic(choose, key=key_of)
    profiles = decided.filter(lambda o: o["topic"] == PROFILE).apply(lambda o: o["value"])
    profiles = profiles.group_by(lambda v: v["profile_id"], name="profile", key_serializer="str",
                                 key_deserializer="str")
    profiles.apply(stage2, stateful=True, metadata=True, expand=True).to_topic(choose, key=key_of)
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
    # readiness: no event is decided before the policy and both control tables are read to their end
    control = ControlSync(address, settings, control_snapshot_path(settings))
    caught_up_s = control.start()
    reader.wait_caught_up()
    logger.info("worker starting with policy v%d, %d erased ids and merges (control caught up in %.1fs from "
                "offsets %s)", holder.current.version, len(control.tables), caught_up_s, control.loaded_offsets)
    # Millions of control entries are long-lived: out of the collector's reach, a full collection stays ~2 ms
    # instead of ~200 ms with 1M merges loaded (make bench-control). Entries added later are collected as usual.
    gc.freeze()
    app = build_app(settings, address, holder, control=control.tables)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    try:
        app.run()
    finally:
        reader.stop()
        control.stop()


def control_snapshot_path(settings: StreamingSettings) -> Path:
    """Where a worker keeps its control tables between restarts (beside its Quix state)."""
    return settings.layout.state_dir / f"{settings.consumer_group}.control.snapshot"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker()


if __name__ == "__main__":
    main()
