"""Publishing what the warehouse learned about people to the control topics, as a difference: read what
``control.identity`` / ``control.erasure`` already hold, publish only what they do not.

The records are the hot path's (:mod:`streaming.control_tables`); the rows come from the warehouse
(:mod:`warehouse.control`). Used by the loop's ``published_control`` asset and the erasure job (the identifiers a
request's warehouse run found that the edge did not know). Nothing is ever removed from the topics here: a merge
that leaves ``identity_merges`` because the edge applied it (its devices now carry the survivor's id) stays in force,
and an erasure is one-way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from streaming import settings as topics
from streaming.control import BroadcastReader, publish_records
from streaming.control_tables import erasure_value, merge_value
from streaming.regulations import now_iso
from streaming.settings import StreamingSettings
from warehouse.control import Erasure, Merge, ambiguous_merges, merge_cycles, merges_touching_erased


class ControlTopic(BroadcastReader):
    """Every key of one control topic with its latest value (a tombstone removes the key, except on
    ``control.erasure``, where the hot path ignores tombstones), and the offset after the last record."""

    def __init__(self, broker_address: str, topic: str, *, one_way: bool = False) -> None:
        super().__init__(broker_address, topic, name=f"snapshot-{topic}")
        self.values: dict[str, bytes] = {}
        self.next_offset = 0
        self._one_way = one_way

    def handle(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        self.next_offset = max(self.next_offset, offset + 1)
        name = key.decode("utf-8", "replace") if key else ""
        if value is not None:
            self.values[name] = value
        elif not self._one_way:
            self.values.pop(name, None)

    def read(self, timeout: float = 30.0) -> ControlTopic:
        """Read the topic to its end (counting by consuming: Tansu under-reports its watermarks), then stop."""
        self.start()
        try:
            self.wait_caught_up(timeout)
        finally:
            self.stop()
            self.join(timeout=5)
        return self


@dataclass(frozen=True)
class ControlState:
    """What the control topics hold: merges (merged profile → survivor it names), erased identifiers, offsets."""

    merges: dict[str, str]
    erased: frozenset[str]
    offsets: dict[str, int]


def read_control_state(broker_address: str, settings: StreamingSettings, *, timeout: float = 30.0) -> ControlState:
    identity = ControlTopic(broker_address, settings.topic(topics.CONTROL_IDENTITY)).read(timeout)
    erasure = ControlTopic(broker_address, settings.topic(topics.CONTROL_ERASURE), one_way=True).read(timeout)
    merges = {}
    for key, value in identity.values.items():
        into = orjson.loads(value).get("into")
        if isinstance(into, str):
            merges[key] = into
    return ControlState(merges=merges, erased=frozenset(erasure.values),
                        offsets={"identity": identity.next_offset, "erasure": erasure.next_offset})


@dataclass
class ControlChecks:
    """The blocking checks' findings (empty lists: passed)."""

    cycles: list[list[str]] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    touching_erased: list[Merge] = field(default_factory=list)
    #: the erased identifiers the merges were checked against
    erased: frozenset[str] = frozenset()


def check_control(merges: list[Merge], erasures: list[Erasure], state: ControlState) -> ControlChecks:
    """Before anything is published: the merges, with those the topic already holds (the mart's target wins for a
    key it re-states), must form chains ending in a survivor, each merged profile with one survivor; and none may
    start or end at an erased identifier (the suppression list's or the topic's: a regulations request reaches the
    topic before the warehouse)."""
    graph = {**state.merges}
    for merge in merges:
        graph[merge.from_profile_id] = merge.to_profile_id
    edges = list(graph.items()) + [(m.from_profile_id, m.to_profile_id) for m in merges]
    erased = frozenset({e.identifier_value for e in erasures} | set(state.erased))
    return ControlChecks(cycles=merge_cycles(edges), ambiguous=ambiguous_merges(merges),
                         touching_erased=merges_touching_erased(merges, erased), erased=erased)


@dataclass
class ControlPlan:
    """What to publish: merges and erasures the topics do not hold yet, and how many they already do."""

    merges: list[Merge]
    erasures: list[str]
    merges_present: int
    erasures_present: int


def plan_control(merges: Iterable[Merge], erasures: Iterable[Erasure | str], state: ControlState) -> ControlPlan:
    """A merge is present when the topic maps its profile to the same survivor (its consent is what the edge folded
    when it applied the merge: re-publishing it would not fold it again); an erasure when its identifier is a key."""
    new_merges, merges_present = [], 0
    for merge in merges:
        if state.merges.get(merge.from_profile_id) == merge.to_profile_id:
            merges_present += 1
        else:
            new_merges.append(merge)
    values = sorted({e.identifier_value if isinstance(e, Erasure) else e for e in erasures})
    new_erasures = [v for v in values if v not in state.erased]
    return ControlPlan(new_merges, new_erasures, merges_present, len(values) - len(new_erasures))


def publish_control(broker_address: str, settings: StreamingSettings, plan: ControlPlan, *,
                    source: str = "warehouse", request_id: str | None = None) -> dict[str, int]:
    """Publish the plan (acknowledged; raises :class:`~streaming.errors.BrokerError` otherwise): erasures first, so
    a merge is never applied before the erasure of a profile it touches. Returns counts per topic."""
    at = now_iso()
    erased = publish_records(broker_address, settings.topic(topics.CONTROL_ERASURE), [
        (value, erasure_value(request_id=request_id, at=at, source=source)) for value in plan.erasures])
    merged = publish_records(broker_address, settings.topic(topics.CONTROL_IDENTITY), [
        (m.from_profile_id, merge_value(m.to_profile_id, consent=m.consent, at=at, source=source))
        for m in plan.merges])
    return {"identity": merged, "erasure": erased}
