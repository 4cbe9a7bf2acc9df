"""The decided record: the typed contract of what the hot path decides about an event.

One declaration, read by every tier. :class:`Decided` is the record on the destination topics and
``events.quarantine`` (the lake's ``events`` and ``quarantine`` streams), :class:`Suppressed` the ledger-only record
on ``events.suppressed``, :class:`DeadLetter` the record on ``events.dlq``; :class:`Ledger` and
:class:`SuppressionLedger` are their explanations. :class:`Handoff` is what stage 1 (keyed by device) hands stage 2
(keyed by profile) beside the record, across the repartition topic.

What derives from it or is checked against it, by a test:

* the hot path's records: stage 1 builds its record through :class:`DeviceRecord` (a missing or unknown field is
  a ``TypeError`` at once; mypy checks the field types) and converts it once with ``msgspec.to_builtins``, because
  the worker hands Quix plain dicts (JSON) and the tests read them as dicts. Against the same record built as a
  dict display that costs ~0.1 % of the per-event compute (cachegrind's cycle estimate over the same traffic; the
  whole split of the pipeline into steps costs +3 %, within the hot path's 5 % budget). What is stamped on that
  dict afterwards (stage 2's ``consent``, ``destinations`` and ledger keys, the quarantine's) and the smaller
  records (:class:`Suppressed`, :class:`DeadLetter`, :class:`ProfileDecision`, built in :mod:`streaming.outputs`)
  are dict displays; ``tests/streaming/test_decided.py`` converts every output of simulated traffic to its Struct
  (``msgspec.convert``, strict, ``forbid_unknown_fields``) and requires every declared key to be written by some
  decision;
* the lake (``warehouse/lake.py`` ``DECIDED_SCHEMA``, ``DELIVERY_COLUMNS``, ``DLQ_SCHEMA``): the warehouse may not
  import the hot path, so it keeps its storage types and ``tests/warehouse/test_lake_contract.py`` checks them
  against these fields (JSON columns for nested values, ``f_<name>`` columns for ``features``); dbt's column lists
  (``dbt_project.yml`` vars) are checked against ``warehouse/lake.py`` by the same file;
* the facts rules read (:mod:`streaming.facts`): each is a column of :class:`Decided`, a session feature, or travels
  in :attr:`Handoff.facts`; and every ledger key the warehouse, ml or the report reads as JSON is declared here.

Defaults mark what a stream leaves out: a field with a default is absent (or null) on some records; the field's
comment says which.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from streaming.contract import EventType

#: The key of the record stage 1 sends to stage 2 that holds the :class:`Handoff` (stage 2 removes it).
HANDOFF = "handoff"
#: Fields of :class:`Decided` that stage 2 sets (stage 1's record for stage 2 has neither; a quarantined one has
#: ``consent`` null and ``destinations`` ``["events.quarantine"]``).
STAGE_TWO_FIELDS: tuple[str, ...] = ("consent", "destinations")

#: How an event was tied to its profile: its own user id, its device's earlier link, or neither.
Via = Literal["user_id", "device_link", "anonymous"]
#: Why stage 1 suppressed an event: an erased person, a client retry, an event id reused with another payload.
SuppressionReason = Literal["erased", "duplicate_event_id", "event_id_reused"]


class _Contract(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base: unknown keys rejected (a key the hot path adds must be declared here first). Each class also says
    ``kw_only=True``: msgspec applies it to the fields a class declares, not to inherited ones."""


class _FrozenContract(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """The same, immutable (a handoff is shared by the stages in process)."""


class RuleError(_Contract, kw_only=True):
    """A rule, route, segment or model that raised on this event (a bad rule, never bad input): it counted as not
    fired, and the event is flagged."""

    #: rule id, ``routing.<destination>``, ``segment.<id>`` or ``model.<name>``
    rule: str
    #: ``<ExceptionType>: <message>``, at most 200 characters
    error: str


class Scores(_Contract, kw_only=True):
    propensity: float | None
    bot: float | None


class Identity(_Contract, kw_only=True):
    """Identity at the edge: the profile the event was decided for, and how it was found."""

    profile_id: str
    #: this event linked its device to a user id (a first identify/login on the device)
    linked_now: bool
    #: the profile id a warehouse merge (``control.identity``) moved the event from
    merged_from: str | None
    via: Via


class SegmentDecision(_Contract, kw_only=True):
    """A personalization decision (also published on the compacted ``decisions`` topic)."""

    segment: str
    action: str


class ControlOffsets(msgspec.Struct, frozen=True, kw_only=True):
    """The control tables an event was decided under: per control topic (one partition each), the next offset —
    every record below it was applied (:mod:`streaming.control_tables`). Replaying the topics up to these offsets
    rebuilds the merges and erasures the decision saw."""

    identity: int = 0
    erasure: int = 0


class Ledger(_Contract, kw_only=True):
    """Why a decided event went where it went. Stage 1 writes the first block; stage 2 the second (a quarantined
    event never reaches stage 2: it has ``decision`` ``"quarantined"`` and no stage-2 keys)."""

    # stage 1 (device)
    policy_version: int
    policy_checksum: str
    #: enforced bot rules (and ``model.bot``) that held: any one quarantines the event
    rules_fired: list[str]
    #: rules (bot and route) and ``model.bot`` in shadow mode that held: recorded, not enforced
    shadow_rules_fired: list[str]
    scores: Scores
    #: the crawler-user-agents pattern the user agent matched (a strong one when there is one; a weak one counts
    #: only as ``ua_reasons`` says)
    crawler_pattern: str | None
    #: the user-agent facts that hold, each source apart (``streaming.facts.UA_REASONS``): ``crawler``, ``isbot``,
    #: ``self_identified``, ``library``, ``missing``, ``weak_pattern``; absent when none does
    ua_reasons: list[str] | None = None
    identity: Identity
    #: why a TCF string decided nothing (``tcf_invalid: ...``); absent when it decided, or there was none
    consent_note: str | None = None
    #: rules and models that raised on this event, in both stages; absent when none did
    errors: list[RuleError] | None = None
    #: the identity merges and erasures the event was decided under (offsets of ``control.identity``/``.erasure``)
    control: ControlOffsets | None = None
    #: what the client sent (type, names, user id, original time, properties and traits before scrubbing), hashed
    #: as the hot path recognises a retry (``admission.payload_fingerprint``); the warehouse's ``payload_hash``
    payload_hash: str | None = None
    # stage 2 (profile)
    #: what is granted now, per purpose (explicit decisions, else the region's default)
    purposes: dict[str, bool] | None = None
    #: purposes this event changed
    consent_changed: list[str] | None = None
    #: profiles merged into this one whose consent was folded in on this event (latest wins, a denial wins a tie)
    consent_merged_from: list[str] | None = None
    #: destination → ``sent`` | ``condition_false`` | ``condition_error`` | ``consent_missing:<purposes>`` |
    #: ``erased_profile``
    destinations: dict[str, str] | None = None
    #: enforced route rules that held (absent when the profile was erased before routing)
    route_rules_fired: list[str] | None = None
    #: ``"quarantined"`` (stage 1), or the personalization decision made on this event (stage 2, on change only)
    decision: Literal["quarantined"] | SegmentDecision | None = None
    #: the version that routed the event when stage 1's version was no longer held (a restart between the stages)
    routed_by_policy_version: int | None = None


class SuppressionLedger(_Contract, kw_only=True):
    """The ledger of a suppressed event: in stage 1 a ``reason``; in stage 2 (no destination may receive it) the
    per-destination reasons and the purposes granted."""

    policy_version: int
    decision: Literal["suppressed"]
    #: stage 1 only
    reason: SuppressionReason | None = None
    #: stage 1, not for an erasure: as :attr:`Ledger.payload_hash`
    payload_hash: str | None = None
    #: as :attr:`Ledger.control`
    control: ControlOffsets | None = None
    #: stage 2 only: destination → reason (as :attr:`Ledger.destinations`; never ``sent``)
    destinations: dict[str, str] | None = None
    purposes: dict[str, bool] | None = None
    errors: list[RuleError] | None = None
    routed_by_policy_version: int | None = None


class DeviceRecord(_Contract, kw_only=True):
    """Stage 1's decided record: every field of :class:`Decided` but the two stage 2 sets (:data:`STAGE_TWO_FIELDS`).
    Personal data only as keyed hashes or truncated (``streaming.pii``); timestamps in UTC (ISO 8601 with ``Z`` on
    the wire)."""

    event_id: str
    type: EventType
    #: a track's name, or a page's or screen's name
    event_name: str | None
    anonymous_id: str | None
    user_id: str | None
    #: the stitched profile (after warehouse merges): the key of stage 2 and of every destination topic
    profile_id: str
    #: the key of ``events.raw``: the anonymous id, else the user id
    device_id: str
    source_id: str
    #: device time corrected by the clock skew (``streaming.contract``)
    event_ts: datetime
    received_at: datetime
    clock_skew_ms: int
    #: ``<device_id>:<epoch ms of the session's first event>`` (``streaming.sessions``)
    session_id: str
    ip_hash: str | None
    ip_prefix: str | None
    email_hash: str | None
    user_agent: str | None
    country: str | None
    #: consent region of the country (``EU``, ``US``, ``OTHER``, ``UNKNOWN``)
    region: str
    asn: str | None
    datacenter: bool
    ua_crawler: bool
    browser: str | None
    os: str | None
    device_type: str | None
    page_path: str | None
    category: str | None
    revenue: float | None
    properties: dict[str, Any]
    traits: dict[str, Any]
    #: the session-so-far features, ``streaming.sessions.FEATURES`` (the lake: one ``f_<name>`` column each)
    features: dict[str, float]
    is_bot: bool
    bot_reasons: list[str]
    bot_score: float | None
    score: float | None
    #: the policy version stage 1 decided with; stage 2 routes with the same one while it is held
    policy_version: int
    raw_partition: int
    raw_offset: int
    ledger: Ledger


class Decided(DeviceRecord, kw_only=True):
    """A decided event, as the destination topics and ``events.quarantine`` carry it: stage 1's record with what
    stage 2 (or the quarantine) decided."""

    #: what is granted now (stage 2); null when quarantined
    consent: dict[str, bool] | None
    #: the destination topics that received it (stage 2), or ``["events.quarantine"]``
    destinations: list[str]


class Suppressed(_Contract, kw_only=True):
    """A ledger-only record on ``events.suppressed``: an event nobody may receive. No payload: only what the
    warehouse needs to account for it and, in stage 2, to recompute its session's later features."""

    event_id: str
    type: EventType
    event_name: str | None
    #: null (with ``user_id`` and ``device_id``) when the person is erased
    anonymous_id: str | None
    user_id: str | None
    device_id: str | None
    event_ts: datetime
    received_at: datetime
    policy_version: int
    #: null in stage 1; what is granted now in stage 2
    consent: dict[str, bool] | None
    #: always empty
    destinations: list[str]
    is_bot: Literal[False]
    raw_partition: int
    raw_offset: int
    #: always empty
    features: dict[str, float]
    ledger: SuppressionLedger
    # stage 2 only
    profile_id: str | None = None
    session_id: str | None = None
    country: str | None = None
    category: str | None = None
    #: only the product fields session features read (``streaming.outputs.SESSION_INPUTS``)
    properties: dict[str, Any] | None = None


class DeadLetter(_Contract, kw_only=True):
    """An input the hot path could not decide, on ``events.dlq``, with a machine-readable reason."""

    #: the input's event id when its bytes still parse, else null
    event_id: str | None
    #: ``not_utf8``, ``invalid_json``, ``schema``, ``missing_id``, ... (``streaming.contract``), or
    #: ``processing_error`` when a stage raised
    reason: str
    #: at most 500 characters
    detail: str
    #: base64 of the original bytes (the lake stores them decoded, PII scrubbed: ``streaming.lake_sink``)
    original: str
    received_at: datetime
    raw_partition: int
    raw_offset: int


class ProfileDecision(_Contract, kw_only=True):
    """A profile's new personalization segment, on the compacted ``decisions`` topic keyed by profile (only with
    the ``personalization`` purpose granted, only on change)."""

    profile_id: str
    segment: str
    action: str
    score: float | None
    event_id: str
    session_id: str
    policy_version: int
    decided_at: datetime


class LastEvent(_Contract, kw_only=True):
    """The event a profile view was published for: what it was, where it went, and why (its ledger)."""

    event_id: str
    type: EventType
    event_name: str | None
    event_ts: datetime
    session_id: str | None
    device_id: str | None
    destinations: list[str]
    ledger: Ledger


class ProfileScores(_Contract, kw_only=True):
    propensity: float | None
    bot: float | None


class ProfileView(_Contract, kw_only=True):
    """The live profile on the compacted ``profiles`` topic, keyed by profile (``streaming.profile_view``); the
    serving process answers from it. A tombstone (no value) for an erased profile."""

    profile_id: str
    user_id: str | None
    #: the devices the profile has seen (newest last, at most ``MAX_DEVICES``)
    devices: list[str]
    #: per purpose, granted now (explicit decisions, else the region's default)
    consent: dict[str, bool]
    segment: str | None
    action: str | None
    scores: ProfileScores
    #: the session-so-far features of the last event's session
    features: dict[str, float]
    last_event: LastEvent
    last_event_at: datetime
    policy_version: int
    #: ``events.raw`` partition → the last input offset this view reflects (read-your-writes tokens compare to it)
    offsets: dict[str, int]
    decided_at: datetime


class DeviceProfile(_Contract, kw_only=True):
    """Which profile a device belongs to now, on the compacted ``profiles.devices`` topic keyed by device."""

    profile_id: str
    at: datetime


class ConsentDecisions(_FrozenContract, kw_only=True, frozen=True):
    """Purposes an event decided (a ``consent`` event's map and/or a TCF string), when the collector received it."""

    decisions: dict[str, bool]
    at_ms: int


class Handoff(_FrozenContract, kw_only=True, frozen=True):
    """What stage 1 hands stage 2 besides the record (under the record's :data:`HANDOFF` key, as its JSON object;
    stage 2 removes it, so it never reaches a destination or the lake)."""

    #: facts rules read that are neither columns of the record nor session features (today: ``identified``)
    facts: dict[str, Any]
    #: the purposes this event decided, if it decided any
    consent: ConsentDecisions | None = None
    #: purpose → (granted, at_ms) decided on the device while it was anonymous, carried on the event that links the
    #: device to a profile
    device_consent: dict[str, tuple[bool, int]] | None = None


def iso(ts: datetime) -> str:
    """A timestamp as the contract carries it: ISO 8601 in UTC, with ``Z``."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc(ts: datetime) -> datetime:
    """The same instant in UTC (how the contract's timestamps are encoded: ``...Z``)."""
    return ts if ts.tzinfo is UTC else ts.astimezone(UTC)


def epoch_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def take_handoff(record: dict[str, Any]) -> Handoff:
    """Remove the :class:`Handoff` from a record stage 1 sent to stage 2 (it travels as its JSON object) and read
    it as the Struct; a malformed one raises ``msgspec.ValidationError``."""
    value = record.pop(HANDOFF)
    return value if value.__class__ is Handoff else msgspec.convert(value, Handoff)


def field_names(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    """The keys of a contract Struct, in declaration order."""
    return struct.__struct_fields__
