"""Erasure as a tracked request: the record of a regulation (Segment's Regulations API shape) and its states.

``POST /v1/regulations`` on the collector (server keys only) turns a request into:

1. one ``control.erasure`` record per subject id (the id as events carry it, after
   :func:`streaming.pii.pseudonymous_id`), which every worker applies before its next event: the subject's next
   event is suppressed at the edge (a ledger-only record with reason ``erased``);
2. the request itself on the compacted ``control.regulations`` topic, keyed by its id, with its states so far.

The Dagster loop (``orchestration/defs/regulations.py``) picks up requests that are not done, deletes
(``SUPPRESS_WITH_DELETE``: lake files rewritten, warehouse rebuilt, ML artefacts checked for the subject's ids) and
publishes the request again with each new state. ``GET /v1/regulations/{id}`` answers from the same topic.

States, in order: ``received`` → ``suppressed_at_edge`` → (``SUPPRESS_WITH_DELETE`` only) ``lake_rewritten`` →
``warehouse_rebuilt`` → ``ml_artefacts_checked`` → ``done``; or ``failed`` (with a detail) at any step after
``suppressed_at_edge``. A request's id is a hash of what it asks, so posting the same request again is idempotent.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import orjson

from streaming.control import BroadcastReader, publish_records
from streaming.control_tables import erasure_value
from streaming.errors import FirstmileError

RegulationType = Literal["SUPPRESS", "SUPPRESS_WITH_DELETE"]
SubjectType = Literal["USER_ID", "ANONYMOUS_ID"]
State = Literal["received", "suppressed_at_edge", "lake_rewritten", "warehouse_rebuilt", "ml_artefacts_checked",
                "done", "failed"]
REGULATION_TYPES = ("SUPPRESS", "SUPPRESS_WITH_DELETE")
SUBJECT_TYPES = ("USER_ID", "ANONYMOUS_ID")
DELETE_STEPS: tuple[State, ...] = ("lake_rewritten", "warehouse_rebuilt", "ml_artefacts_checked")
#: At most this many subject ids per request (Segment's limit is 5,000).
MAX_SUBJECTS = 5000


class InvalidRegulation(FirstmileError, ValueError):
    """A regulation request that cannot be accepted; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class StateEntry(msgspec.Struct, kw_only=True):
    state: State
    at: str
    detail: dict[str, Any] | None = None


class Regulation(msgspec.Struct, kw_only=True):
    """A request and what has happened to it (the value on ``control.regulations``)."""

    id: str
    regulation_type: RegulationType
    subject_type: SubjectType
    #: the subjects as events carry them (pseudonymized like the hot path does)
    subject_ids: list[str]
    received_at: str
    states: list[StateEntry]

    @property
    def status(self) -> State:
        return self.states[-1].state

    def reached(self, state: State) -> StateEntry | None:
        return next((s for s in self.states if s.state == state), None)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def public(self) -> dict[str, Any]:
        """``GET /v1/regulations/{id}``'s ``regulation`` object."""
        return {"id": self.id, "regulationType": self.regulation_type, "subjectType": self.subject_type,
                "subjectIds": self.subject_ids, "createdAt": self.received_at, "overallStatus": self.status,
                "states": [msgspec.to_builtins(s) for s in self.states]}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_request(body: Mapping[str, Any], pseudonymize: Any) -> tuple[RegulationType, SubjectType, list[str]]:
    """Validate a ``POST /v1/regulations`` body; ``pseudonymize`` maps an id to the form events carry."""
    if not isinstance(body, Mapping):
        raise InvalidRegulation("body", "expected a JSON object")
    rtype = body.get("regulationType")
    if rtype not in REGULATION_TYPES:
        raise InvalidRegulation("regulationType", f"must be one of {', '.join(REGULATION_TYPES)}")
    stype = body.get("subjectType")
    if stype not in SUBJECT_TYPES:
        raise InvalidRegulation("subjectType", f"must be one of {', '.join(SUBJECT_TYPES)}")
    ids = body.get("subjectIds")
    if not isinstance(ids, list) or not ids:
        raise InvalidRegulation("subjectIds", "must be a non-empty list of ids")
    if len(ids) > MAX_SUBJECTS:
        raise InvalidRegulation("subjectIds", f"at most {MAX_SUBJECTS} ids per request")
    if not all(isinstance(i, str) and i.strip() for i in ids):
        raise InvalidRegulation("subjectIds", "every id must be a non-empty string")
    return rtype, stype, sorted({pseudonymize(i.strip()) for i in ids})


def regulation_id(rtype: str, stype: str, subject_ids: Iterable[str]) -> str:
    """The same request always gets the same id (idempotent POST)."""
    body = orjson.dumps([rtype, stype, sorted(subject_ids)])
    return "reg_" + hashlib.blake2b(body, digest_size=10).hexdigest()


def new_regulation(rtype: RegulationType, stype: SubjectType, subject_ids: list[str]) -> Regulation:
    at = now_iso()
    return Regulation(id=regulation_id(rtype, stype, subject_ids), regulation_type=rtype, subject_type=stype,
                      subject_ids=subject_ids, received_at=at, states=[StateEntry(state="received", at=at)])


def with_state(reg: Regulation, state: State, detail: dict[str, Any] | None = None) -> Regulation:
    return msgspec.structs.replace(reg, states=[*reg.states, StateEntry(state=state, at=now_iso(), detail=detail)])


def encode(reg: Regulation) -> bytes:
    return msgspec.json.encode(reg)


def decode(value: bytes) -> Regulation:
    return msgspec.json.decode(value, type=Regulation)


def suppress_at_edge(broker_address: str, erasure_topic: str, regulations_topic: str, reg: Regulation, *,
                     source: str = "regulations_api") -> Regulation:
    """Publish the subject ids to ``control.erasure`` (acknowledged), then the request with state
    ``suppressed_at_edge`` (and ``done`` for a ``SUPPRESS``) to ``control.regulations``; return it."""
    at = now_iso()
    publish_records(broker_address, erasure_topic,
                    [(sid, erasure_value(request_id=reg.id, at=at, source=source)) for sid in reg.subject_ids])
    reg = with_state(reg, "suppressed_at_edge", {"subject_ids": len(reg.subject_ids)})
    if reg.regulation_type == "SUPPRESS":
        reg = with_state(reg, "done")
    publish_regulation(broker_address, regulations_topic, reg)
    return reg


def publish_regulation(broker_address: str, topic: str, reg: Regulation) -> None:
    publish_records(broker_address, topic, [(reg.id, encode(reg))])


class RegulationStore(BroadcastReader):
    """Every request on ``control.regulations``, latest state per id (the collector's GET, the Dagster sensor)."""

    def __init__(self, broker_address: str, topic: str) -> None:
        super().__init__(broker_address, topic, name="regulations-reader")
        self._by_id: dict[str, Regulation] = {}
        self._lock = threading.Lock()

    def handle(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        if key is None or value is None:
            return
        try:
            reg = decode(value)
        except msgspec.DecodeError:
            return
        self.put(reg)

    def put(self, reg: Regulation) -> None:
        """Record ``reg`` unless a record with more states is already known (the topic and local writes race)."""
        with self._lock:
            known = self._by_id.get(reg.id)
            if known is None or len(reg.states) >= len(known.states):
                self._by_id[reg.id] = reg

    def get(self, reg_id: str) -> Regulation | None:
        return self._by_id.get(reg_id)

    def all(self) -> list[Regulation]:
        with self._lock:
            return list(self._by_id.values())


def read_regulations(broker_address: str, topic: str, *, timeout: float = 30.0) -> list[Regulation]:
    """Every request on the topic, read once to its end (the Dagster sensor)."""
    store = RegulationStore(broker_address, topic)
    store.start()
    try:
        store.wait_caught_up(timeout)
        return store.all()
    finally:
        store.stop()
        store.join(timeout=5)
