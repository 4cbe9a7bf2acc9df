"""The fact catalog: every fact a rule or model may read, its Python derivation and its SQL expression side by side.

One definition, two engines. The hot path (:mod:`streaming.pipeline`) derives an event's facts with
:func:`derive`; the warehouse reads the same facts from a decided event of ``stg_decided`` (dbt's one dedupe of the
lake's decided streams, the copy that counts) with :data:`SQL`, which the backtest (:mod:`ml.backtest`) uses to
replay rules and models in DuckDB.
The policy loader (:data:`streaming.policy.FACTS`) accepts a rule only if every fact it reads is in this catalog.
``tests/streaming/test_facts.py`` runs random rules over every fact through both engines and compares them event by
event, so a fact whose two definitions drift apart fails there.

A fact is derived in stage 1 (keyed by device) from the parsed event, the session features, enrichment and the
device's identity link; ``bot_score`` and ``score`` are the policy's models evaluated over the other facts (the
stream computes them, the warehouse reads them as stamped, or recomputes them from a candidate's coefficients).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from streaming.bots import user_agent_evidence
from streaming.sessions import FEATURES

ORDER_EVENTS = ("Order Completed",)

FactKind = Literal["string", "number", "boolean"]


#: What stage 1 knows about an event when it derives the facts (the keyword arguments of :func:`derive`):
#: the parsed event's ``type``, ``event`` (a track's name), ``name`` (a page's or screen's), ``properties``,
#: ``user_agent``, ``source_id``; the session-so-far ``features``; enrichment (``browser``, ``os``, ``device_type``,
#: ``country``, ``region``, ``asn``, ``datacenter``, ``crawler_pattern``); and ``user_id``: the event's own, or the
#: one its device linked to earlier (identity at the edge). The user agent's facts read ``ua``, its weighed evidence
#: (:func:`streaming.bots.user_agent_evidence` of ``user_agent`` and ``browser``), bound once per event.
INPUTS: tuple[str, ...] = ("type", "event", "name", "properties", "user_agent", "source_id", "features", "browser",
                           "os", "device_type", "country", "region", "asn", "datacenter", "crawler_pattern",
                           "user_id")


def revenue(type_: str, event: str | None, properties: dict[str, Any]) -> float | None:
    """An order's value: the first numeric of ``revenue``, ``total``, ``value`` (Segment's order properties)."""
    if type_ != "track" or event not in ORDER_EVENTS:
        return None
    for key in ("revenue", "total", "value"):
        value = properties.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def category(properties: dict[str, Any]) -> str | None:
    value = properties.get("category")
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    kind: FactKind
    #: the DuckDB expression over a row of ``stg_decided``
    sql: str
    #: the hot path's derivation: a Python expression over :data:`INPUTS`; None for the model scores, which the
    #: policy's models compute from the other facts
    python: str | None
    doc: str


#: User-agent facts → the reason each puts in the ledger's ``ua_reasons`` (:func:`ua_reasons`), which is what the
#: warehouse reads them from (``ua_crawler`` is also a column of its own). ``UaEvidence`` has a field per reason.
UA_REASONS: dict[str, str] = {"ua_crawler": "crawler", "ua_isbot": "isbot", "ua_self_identified": "self_identified",
                              "ua_library": "library", "ua_missing": "missing", "ua_weak_pattern": "weak_pattern"}


def ua_reasons(facts: dict[str, Any]) -> list[str] | None:
    """The ledger's ``ua_reasons``: the user-agent facts that hold, by reason (None when none does)."""
    return [reason for fact, reason in UA_REASONS.items() if facts[fact]] or None


def _ua_fact(name: str, doc: str, *, sql: str | None = None) -> Fact:
    reason = UA_REASONS[name]
    in_ledger = f"coalesce(json_contains(json_extract(ledger, '$.ua_reasons'), '\"{reason}\"'), false)"
    return Fact(name, "boolean", sql or in_ledger, f"ua.{reason}", doc)


def _feature(name: str) -> Fact:
    return Fact(name, "number", f"f_{name}", f"features.get({name!r})",
                f"session feature {name!r} (streaming.sessions; dbt: int_session_features)")


#: The catalog. The hot path stamps each fact on the decided record as the column its SQL reads (session features
#: as ``f_<name>``; ``type`` is ``event_type`` in the warehouse, ``identified`` is read from the ledger).
CATALOG: tuple[Fact, ...] = (
    *(_feature(name) for name in FEATURES),
    Fact("type", "string", "event_type", "type", "page | track | identify | alias | consent | group"),
    Fact("event_name", "string", "event_name", "event or name",
         "a track event's name, or a page's or screen's name (NULL otherwise)"),
    Fact("category", "string", "category", "category(properties)",
         "properties.category when it is a string"),
    Fact("revenue", "number", "revenue", "revenue(type, event, properties)",
         "an order's revenue, else total, else value (numbers only)"),
    Fact("user_agent", "string", "user_agent", "user_agent", "context.userAgent"),
    _ua_fact("ua_crawler", "a crawler-user-agents pattern holds: one not known to match real browsers, or a weak "
             "one on a user agent that does not parse as a known browser (streaming.bots)", sql="ua_crawler"),
    _ua_fact("ua_isbot", "an isbot pattern holds (weighed as ua_crawler)"),
    _ua_fact("ua_self_identified", "the user agent names itself a bot, crawler, spider, scanner, monitor ... or "
             "carries a contact URL or e-mail (allow-listed browser tokens aside)"),
    _ua_fact("ua_library", "an HTTP library or command-line client (curl, python-requests, Go-http-client, okhttp, "
             "Java, ...)"),
    _ua_fact("ua_missing", "no user agent at all"),
    _ua_fact("ua_weak_pattern", "only list patterns known to also match real browsers, on a user agent that parses "
             "as a known browser: evidence only with other evidence"),
    Fact("browser", "string", "browser", "browser", "ua-parser's browser family"),
    Fact("os", "string", "os", "os", "ua-parser's OS family"),
    Fact("device_type", "string", "device_type", "device_type", "mobile | tablet | desktop | ..."),
    Fact("country", "string", "country", "country", "ISO country of the IP (NULL: private/unknown)"),
    Fact("region", "string", "region", "region", "consent region of the country (EU, US, ..., UNKNOWN)"),
    Fact("asn", "string", "asn", "asn", "the IP's network (ASN name)"),
    Fact("datacenter", "boolean", "datacenter", "datacenter", "the ASN is a known hosting provider"),
    Fact("source_id", "string", "source_id", "source_id", "the source resolved from the write key"),
    Fact("identified", "boolean",
         "(coalesce(json_extract_string(ledger, '$.identity.via'), 'anonymous') <> 'anonymous')",
         "bool(user_id)",
         "the event carries a user id, or its device linked to one earlier (ledger.identity.via)"),
    Fact("bot_score", "number", "bot_score", None, "the policy's bot model over the other facts"),
    Fact("score", "number", "score", None, "the policy's propensity model over the other facts"),
)

BY_NAME: dict[str, Fact] = {fact.name: fact for fact in CATALOG}
#: Every fact a rule may read.
NAMES: frozenset[str] = frozenset(BY_NAME)
#: Fact -> kind (``string`` / ``number`` / ``boolean``): how SQL tests its truthiness like Python does.
KINDS: dict[str, str] = {fact.name: fact.kind for fact in CATALOG}
#: Fact -> DuckDB expression over a row of ``stg_decided`` (what the backtest and the report evaluate rules with).
SQL: dict[str, str] = {fact.name: fact.sql for fact in CATALOG}


def _compile_derive() -> Callable[..., dict[str, Any]]:
    """One function that builds the facts dict from :data:`INPUTS`, generated from the catalog's Python expressions:
    a dict display costs ~1.5 µs per event where a call per fact costs ~4 (the hot path runs it on every event)."""
    items = ", ".join(f"{fact.name!r}: {fact.python}" for fact in CATALOG if fact.python is not None)
    source = (f"def derive(*, {', '.join(INPUTS)}):\n    ua = user_agent_evidence(user_agent, browser)\n"
              f"    return {{{items}}}\n")
    namespace: dict[str, Any] = {"category": category, "revenue": revenue, "user_agent_evidence": user_agent_evidence}
    exec(compile(source, "<streaming.facts catalog>", "exec"), namespace)  # noqa: S102 - source built from CATALOG
    return namespace["derive"]  # type: ignore[no-any-return]


#: ``derive(**inputs)``: every fact the hot path derives before scoring (the models then add ``bot_score`` and
#: ``score``); keyword arguments are exactly :data:`INPUTS`.
derive: Callable[..., dict[str, Any]] = _compile_derive()
