"""The worker's per-event wiring without a broker (streaming/worker.py): which key each output is produced with,
and stage 1's record across the repartition topic (Quix's JSON).

Quix's ``sdf.test(...)`` cannot run the worker's dataframe here: in quixstreams 3.28 ``Application.topic()`` asks
the broker for the topic's metadata (``TopicManager._get_or_create_broker_topic``), so building the dataframe needs
a broker; tests/streaming/test_worker.py runs the wiring on the embedded one.
"""

from __future__ import annotations

import orjson

from streaming import settings as topics
from streaming.decided import HANDOFF, Handoff, take_handoff
from streaming.pipeline import PROFILE, DictState, Origin, Output, decide_device, decide_profile
from streaming.worker import routed_from_device, routed_from_profile
from tests.streaming.events import policy, raw

SECRET = b"worker-secret-0123"


def test_stage_1_outputs_are_keyed_by_what_their_topic_is_keyed_by():
    value = {"event_id": "e-9"}
    assert routed_from_device(Output(PROFILE, "u1", value), b"raw") == {"topic": PROFILE, "key": b"u1",
                                                                         "value": value}
    assert routed_from_device(Output(topics.SUPPRESSED, "dev", value), b"raw")["key"] == b"e-9"  # no identifier
    assert routed_from_device(Output(topics.QUARANTINE, "h:dev", value), b"raw")["key"] == b"h:dev"
    assert routed_from_device(Output(topics.DLQ, "raw", value), b"raw")["key"] == b"raw"


def test_stage_2_outputs_are_keyed_by_profile_or_the_message_key():
    outs = [Output(topics.DEST_WAREHOUSE, "u1", {}), Output(topics.DECISIONS, None, {})]
    assert [r["key"] for r in routed_from_profile(outs, "u-key")] == [b"u1", b"u-key"]
    assert [r["key"] for r in routed_from_profile(outs, b"u-key")] == [b"u1", b"u-key"]


def test_stage_1s_record_crosses_the_repartition_topic_and_decides_the_same():
    out = decide_device(raw(0), DictState(), policy(), secret=SECRET, origin=Origin(0, 1), key="dev-1")
    assert out.topic == PROFILE and isinstance(take_handoff(dict(out.value)), Handoff)
    crossed = orjson.loads(orjson.dumps(out.value))
    assert crossed[HANDOFF] == out.value[HANDOFF] and crossed[HANDOFF]["facts"]["identified"] is False
    assert set(crossed[HANDOFF]) == {"facts"}  # nothing consent-related on an event that decides no consent
    in_process = decide_profile(dict(out.value), DictState(), policy())
    after_topic = decide_profile(crossed, DictState(), policy())
    assert _stable(after_topic) == _stable(in_process)


def _stable(outs):
    """Outputs without the time they were decided at (the profile view stamps it)."""
    return [(o.topic, o.key, {k: v for k, v in (o.value or {}).items() if k != "decided_at"}) for o in outs]
