"""The hot path run in-process over simulated traffic, landing what it decides in a lake like the lake sink does.

No broker: :func:`streaming.pipeline.decide_device` and :func:`streaming.pipeline.decide_profile` with one
:class:`~streaming.pipeline.DictState` per device and per profile (what the Quix worker keys its state by), and
:func:`warehouse.lake.write_batch` for the landing zone. Used to record shadow decisions under a candidate policy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from streaming import settings as topics
from streaming.contract import from_segment
from streaming.lake_sink import STREAM_OF_TOPIC
from streaming.pipeline import DictState, Origin, decide_device, decide_profile
from streaming.policy import CompiledPolicy
from streaming.simulator import SimEvent
from warehouse import lake as lake_layout

SECRET = b"replay-secret-0123456789"


class HotPath:
    """Both stages with their keyed state; keeps state across :meth:`replay` calls (days)."""

    def __init__(self) -> None:
        self.devices: dict[str, DictState] = defaultdict(DictState)
        self.profiles: dict[str, DictState] = defaultdict(DictState)
        self.offset = 0

    def replay(self, events: Iterable[SimEvent], policy: CompiledPolicy, lake: Path) -> dict[str, int]:
        """Decide ``events`` under ``policy``; write the lake's streams (and deliveries). Returns counts per stream."""
        by_stream: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            self.offset += 1
            payload = event.payload
            key = payload.get("anonymousId") or payload.get("userId") or "anonymous"
            raw = orjson.dumps(from_segment(payload, source_id="simulator", received_at=event.send_at))
            out = decide_device(raw, self.devices[key], policy, secret=SECRET, origin=Origin(0, self.offset),
                                key=key)
            outputs = [out] if out.topic != "profile" else \
                decide_profile(out.value, self.profiles[out.key or ""], policy)
            for o in outputs:
                value = {**o.value, "kafka_topic": o.topic, "kafka_partition": 0, "kafka_offset": self.offset}
                if o.topic in STREAM_OF_TOPIC:
                    by_stream[STREAM_OF_TOPIC[o.topic]].append(value)
                if o.topic in topics.DESTINATIONS:
                    by_stream["deliveries"].append({k: value.get(k) for k in lake_layout.DELIVERY_COLUMNS})
        for stream, records in by_stream.items():
            lake_layout.write_batch(lake, stream, records)
        return {stream: len(records) for stream, records in by_stream.items()}
