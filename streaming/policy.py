"""The policy: a versioned, checksummed document of rules, models, routing and consent defaults.

The warehouse learns, ml builds a new policy document, Dagster publishes it to the compacted ``control.policy``
topic, and every worker compiles it and swaps it in without a restart. :func:`compile_policy` rejects an invalid
document with a :class:`~streaming.errors.PolicyError` naming the field or rule at fault; the holder keeps the last
good policy and never goes back to an older version.

Document (JSON)::

    {"policy_version": 2, "parent_version": 1, "created_at": "...", "description": "...",
     "consent": {"region_defaults": {"EU": {"analytics": false, ...}, ...}, "tcf_purposes": {"analytics": [1, 8, 9]}},
     "rules": [{"id": "bot.ua_crawler", "kind": "bot", "mode": "enforce", "when": {JsonLogic}, "description": "...",
                "evidence": {...}}],
     "models": {"propensity": {"kind": "logistic", "features": [...], "transform": [...], "mean": [...],
                               "scale": [...], "coef": [...], "intercept": 0.0, "source": {...}},
                "bot": {... same ..., "threshold": 0.9, "mode": "shadow"}},
     "routing": {"dest.warehouse": {"purposes": ["analytics"], "when": true}, ...},
     "segments": [{"id": "high_intent", "when": {JsonLogic}, "action": "offer_free_shipping"}],
     "checksum": "sha256:..."}

Identity merges and erasures are not in the policy: they are keyed data of any size, on their own compacted topics
(``control.identity``, ``control.erasure``; :mod:`streaming.control_tables`). A document that still carries
``identity_merges`` or ``erased_ids`` is rejected with a message saying where they go.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streaming import facts as fact_catalog
from streaming.consent import DEFAULT_REGION_DEFAULTS, DEFAULT_TCF_MAPPING, PURPOSES
from streaming.errors import PolicyError
from streaming.rules import Predicate, RuleSyntaxError, compile_rule, variables

logger = logging.getLogger(__name__)

RULE_KINDS = ("bot", "route")
MODES = ("enforce", "shadow")
TRANSFORMS = ("none", "log1p")

#: Every fact a rule may read: the fact catalog's (streaming.facts, each with its Python and SQL definition).
FACTS: frozenset[str] = fact_catalog.NAMES


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def checksum(doc: Mapping[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """Return the document with its checksum set (after any edit)."""
    out = {k: v for k, v in doc.items() if k != "checksum"}
    out["checksum"] = checksum(out)
    return out


@dataclass(frozen=True)
class LinearModel:
    """A logistic model evaluated as a plain dot product (~2 µs; sklearn's single-row predict costs ~240 µs)."""

    name: str
    features: tuple[str, ...]
    log1p: tuple[bool, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float | None = None
    mode: str = "enforce"

    def __post_init__(self) -> None:
        lengths = {len(self.features), len(self.log1p), len(self.mean), len(self.scale), len(self.coef)}
        if len(lengths) != 1:
            raise ValueError(f"model {self.name}: features, transforms, mean, scale and coef differ in length")
        # One tuple per feature, so score() walks one sequence (it runs twice per event).
        object.__setattr__(self, "_terms", tuple(zip(self.features, self.log1p, self.mean, self.scale, self.coef,
                                                     strict=True)))

    def score(self, facts: Mapping[str, Any]) -> float:
        z = self.intercept
        get = facts.get
        for name, use_log, mu, sd, w in self._terms:  # type: ignore[attr-defined]
            x: Any = get(name)
            if x.__class__ is not float:
                x = float(x) if isinstance(x, int | float) else 0.0
            if use_log:
                x = math.log1p(x) if x > 0.0 else 0.0
            z += w * (x - mu) / sd
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


@dataclass(frozen=True)
class CompiledRule:
    id: str
    kind: str
    mode: str
    predicate: Predicate
    description: str = ""


@dataclass(frozen=True)
class Route:
    destination: str
    purposes: tuple[str, ...]
    predicate: Predicate


@dataclass(frozen=True)
class Segment:
    id: str
    action: str
    predicate: Predicate


@dataclass(frozen=True)
class CompiledPolicy:
    version: int
    checksum: str
    document: Mapping[str, Any]
    bot_rules: tuple[CompiledRule, ...]
    route_rules: tuple[CompiledRule, ...]
    routes: tuple[Route, ...]
    segments: tuple[Segment, ...]
    propensity: LinearModel | None
    bot_model: LinearModel | None
    region_defaults: Mapping[str, Mapping[str, bool]]
    tcf_purposes: Mapping[str, tuple[int, ...]]
    compiled_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _require(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise PolicyError(f"{where}.{key}: required field is missing")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PolicyError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _compile_condition(node: Any, where: str) -> Predicate:
    unknown = variables(node) - FACTS
    if unknown:
        raise PolicyError(f"{where}: unknown fact(s) {sorted(unknown)}; rules may read {sorted(FACTS)}")
    try:
        return compile_rule(node, where)
    except RuleSyntaxError as exc:
        raise PolicyError(str(exc)) from None


def _compile_model(name: str, doc: Any, where: str) -> LinearModel:
    if not isinstance(doc, dict):
        raise PolicyError(f"{where}: expected an object")
    if doc.get("kind") != "logistic":
        raise PolicyError(f"{where}.kind: only 'logistic' models run on the hot path, got {doc.get('kind')!r}")
    features = _require(doc, "features", list, where)
    n = len(features)
    unknown = set(features) - FACTS
    if unknown:
        raise PolicyError(f"{where}.features: not available at the first mile: {sorted(unknown)}")
    arrays = {}
    for key in ("mean", "scale", "coef"):
        values = _require(doc, key, list, where)
        if len(values) != n or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise PolicyError(f"{where}.{key}: expected {n} finite numbers")
        arrays[key] = tuple(float(v) for v in values)
    if any(s <= 0 for s in arrays["scale"]):
        raise PolicyError(f"{where}.scale: every scale must be > 0")
    transform = doc.get("transform", ["none"] * n)
    if len(transform) != n or any(t not in TRANSFORMS for t in transform):
        raise PolicyError(f"{where}.transform: expected {n} of {TRANSFORMS}")
    intercept = doc.get("intercept", 0.0)
    if not isinstance(intercept, int | float) or not math.isfinite(intercept):
        raise PolicyError(f"{where}.intercept: expected a finite number")
    threshold = doc.get("threshold")
    if threshold is not None and not (isinstance(threshold, int | float) and 0 <= threshold <= 1):
        raise PolicyError(f"{where}.threshold: expected a number in [0, 1]")
    mode = doc.get("mode", "enforce")
    if mode not in MODES:
        raise PolicyError(f"{where}.mode: expected one of {MODES}, got {mode!r}")
    return LinearModel(name=name, features=tuple(features), log1p=tuple(t == "log1p" for t in transform),
                       mean=arrays["mean"], scale=arrays["scale"], coef=arrays["coef"], intercept=float(intercept),
                       threshold=None if threshold is None else float(threshold), mode=mode)


def compile_policy(doc: Any, *, destinations: tuple[str, ...] | None = None) -> CompiledPolicy:
    """Validate and compile a policy document. Raises :class:`PolicyError` naming the field or rule at fault."""
    if not isinstance(doc, dict):
        raise PolicyError("policy: expected a JSON object")
    version = _require(doc, "policy_version", int, "policy")
    if version < 1:
        raise PolicyError("policy.policy_version: must be >= 1")
    declared = doc.get("checksum")
    if declared is None:
        raise PolicyError("policy.checksum: required field is missing (seal the document)")
    if declared != checksum(doc):
        raise PolicyError("policy.checksum: does not match the document (edited after sealing, or corrupted)")

    bot_rules: list[CompiledRule] = []
    route_rules: list[CompiledRule] = []
    seen: set[str] = set()
    for i, rule in enumerate(_require(doc, "rules", list, "policy")):
        where = f"policy.rules[{i}]"
        if not isinstance(rule, dict):
            raise PolicyError(f"{where}: expected an object")
        rule_id = _require(rule, "id", str, where)
        where = f"policy.rules[{i}] (id={rule_id!r})"
        if rule_id in seen:
            raise PolicyError(f"{where}.id: duplicate rule id")
        seen.add(rule_id)
        kind = rule.get("kind")
        if kind not in RULE_KINDS:
            raise PolicyError(f"{where}.kind: expected one of {RULE_KINDS}, got {kind!r}")
        mode = rule.get("mode", "enforce")
        if mode not in MODES:
            raise PolicyError(f"{where}.mode: expected one of {MODES}, got {mode!r}")
        if "when" not in rule:
            raise PolicyError(f"{where}.when: required field is missing")
        compiled = CompiledRule(rule_id, kind, mode, _compile_condition(rule["when"], f"{where}.when"),
                                str(rule.get("description", "")))
        (bot_rules if kind == "bot" else route_rules).append(compiled)

    routes = []
    for dest, spec in _require(doc, "routing", dict, "policy").items():
        where = f"policy.routing[{dest!r}]"
        if destinations is not None and dest not in destinations:
            raise PolicyError(f"{where}: unknown destination; known: {list(destinations)}")
        if not isinstance(spec, dict):
            raise PolicyError(f"{where}: expected an object")
        purposes = _require(spec, "purposes", list, where)
        bad = [p for p in purposes if p not in PURPOSES]
        if bad or not purposes:
            raise PolicyError(f"{where}.purposes: expected a non-empty list of {PURPOSES}, got {purposes}")
        routes.append(Route(dest, tuple(purposes), _compile_condition(spec.get("when", True), f"{where}.when")))

    segments = []
    for i, seg in enumerate(doc.get("segments", [])):
        where = f"policy.segments[{i}]"
        if not isinstance(seg, dict):
            raise PolicyError(f"{where}: expected an object")
        segments.append(Segment(_require(seg, "id", str, where), str(seg.get("action", "")),
                                _compile_condition(seg.get("when", False), f"{where}.when")))

    models = doc.get("models") or {}
    if not isinstance(models, dict):
        raise PolicyError("policy.models: expected an object")
    unknown_models = set(models) - {"propensity", "bot"}
    if unknown_models:
        raise PolicyError(f"policy.models: unknown model(s) {sorted(unknown_models)}; expected propensity, bot")
    propensity = _compile_model("propensity", models["propensity"], "policy.models.propensity") \
        if models.get("propensity") else None
    bot_model = _compile_model("bot", models["bot"], "policy.models.bot") if models.get("bot") else None
    if bot_model is not None and bot_model.threshold is None:
        raise PolicyError("policy.models.bot.threshold: required for the bot model")

    consent = doc.get("consent") or {}
    region_defaults = consent.get("region_defaults") or DEFAULT_REGION_DEFAULTS
    for region, purposes_map in region_defaults.items():
        if not isinstance(purposes_map, dict) or set(purposes_map) - set(PURPOSES):
            raise PolicyError(f"policy.consent.region_defaults[{region!r}]: expected purpose → bool for {PURPOSES}")
    if "UNKNOWN" in region_defaults and any(region_defaults["UNKNOWN"].values()):
        raise PolicyError("policy.consent.region_defaults['UNKNOWN']: must deny every purpose (fail closed)")
    if "EU" in region_defaults and any(region_defaults["EU"].values()):
        raise PolicyError("policy.consent.region_defaults['EU']: must deny every purpose until granted (GDPR)")
    tcf = {k: tuple(v) for k, v in (consent.get("tcf_purposes") or DEFAULT_TCF_MAPPING).items()}
    if set(tcf) != set(PURPOSES):
        raise PolicyError(f"policy.consent.tcf_purposes: must map exactly {PURPOSES}")

    for moved in ("identity_merges", "erased_ids"):
        if moved in doc:
            raise PolicyError(f"policy.{moved}: identity merges and erasures are not part of the policy; publish them "
                              "to control.identity / control.erasure (streaming.control.publish_records, or the "
                              "loop's published_control asset, or POST /v1/regulations)")

    return CompiledPolicy(version=version, checksum=declared, document=doc, bot_rules=tuple(bot_rules),
                          route_rules=tuple(route_rules), routes=tuple(routes), segments=tuple(segments),
                          propensity=propensity, bot_model=bot_model, region_defaults=region_defaults,
                          tcf_purposes=tcf)


def parse_policy(raw: bytes | str, **kwargs: Any) -> CompiledPolicy:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy: not valid JSON ({exc})") from None
    return compile_policy(doc, **kwargs)


def bootstrap_policy() -> dict[str, Any]:
    """Policy v1, what a fresh installation enforces before the warehouse has learned anything.

    Bots the user agent gives away (the crawler-user-agents and isbot lists, weighed; agents that name themselves;
    HTTP libraries; no user agent from a datacenter) and an obvious rate limit. Stealth bots with browser user
    agents and a moderate, regular rhythm pass it: that is what the loop is for.
    """
    doc: dict[str, Any] = {
        "policy_version": 1,
        "parent_version": None,
        "created_at": "2026-01-01T00:00:00Z",
        "description": "bootstrap: bots the user agent gives away and an obvious rate limit",
        "consent": {"region_defaults": DEFAULT_REGION_DEFAULTS,
                    "tcf_purposes": {k: list(v) for k, v in DEFAULT_TCF_MAPPING.items()}},
        "rules": [
            # The user agent's sources, each a rule of its own, in order: a rule fires only where the ones before
            # it did not, so ``rules_fired`` names the source that decided (the ledger's ``ua_reasons`` lists every
            # source that holds) and each rule's backtest is what that source adds.
            {"id": "bot.ua_crawler", "kind": "bot", "mode": "enforce",
             "description": "user agent matches the crawler-user-agents list (a pattern known to match real "
                            "browsers counts only on a user agent that does not parse as a known browser)",
             "when": {"==": [{"var": "ua_crawler"}, True]}},
            {"id": "bot.ua_isbot", "kind": "bot", "mode": "enforce",
             "description": "user agent matches isbot's pattern list (weighed alike), where the crawler list does "
                            "not",
             "when": {"and": [{"var": "ua_isbot"}, {"!": {"var": "ua_crawler"}}]}},
            {"id": "bot.ua_self_identified", "kind": "bot", "mode": "enforce",
             "description": "user agent names itself a bot, crawler, spider, scanner, monitor ... or carries a "
                            "contact URL or e-mail, where no list matches",
             "when": {"and": [{"var": "ua_self_identified"}, {"!": {"var": "ua_crawler"}},
                              {"!": {"var": "ua_isbot"}}]}},
            {"id": "bot.ua_library", "kind": "bot", "mode": "enforce",
             "description": "an HTTP library or command-line client, where nothing above holds",
             "when": {"and": [{"var": "ua_library"}, {"!": {"var": "ua_crawler"}}, {"!": {"var": "ua_isbot"}},
                              {"!": {"var": "ua_self_identified"}}]}},
            {"id": "bot.ua_weak_pattern", "kind": "bot", "mode": "enforce",
             "description": "only list patterns known to also match real browsers, on a well-formed browser user "
                            "agent: quarantined with a datacenter network or a machine's rate",
             "when": {"and": [{"var": "ua_weak_pattern"},
                              {"or": [{"var": "datacenter"},
                                      {"and": [{">=": [{"var": "session_event_count"}, 10]},
                                               {">": [{"var": "events_per_minute"}, 30]}]}]}]}},
            {"id": "bot.ua_missing", "kind": "bot", "mode": "enforce",
             "description": "no user agent at all, from a datacenter network (a server-side source or an import "
                            "sends no user agent and, as a rule, no IP: it is not caught)",
             "when": {"and": [{"var": "ua_missing"}, {"var": "datacenter"}]}},
            {"id": "bot.rate_flood", "kind": "bot", "mode": "enforce",
             "description": "more than 120 events per minute sustained over 10+ events",
             "when": {"and": [{">=": [{"var": "session_event_count"}, 10]},
                              {">": [{"var": "events_per_minute"}, 120]}]}},
        ],
        "models": {},
        "routing": {
            "dest.warehouse": {"purposes": ["analytics"], "when": True},
            "dest.marketing": {"purposes": ["marketing"],
                               "when": {"in": [{"var": "event_name"},
                                               ["Product Viewed", "Product Added", "Order Completed"]]}},
            "dest.sales": {"purposes": ["sales"],
                           "when": {"or": [{">=": [{"var": "cart_value"}, 500]},
                                           {">=": [{"var": "revenue"}, 500]}]}},
        },
        "segments": [
            {"id": "cart_builder", "action": "show_checkout_reminder",
             "when": {">=": [{"var": "cart_adds"}, 1]}},
            {"id": "browser", "action": "show_recommendations", "when": {">=": [{"var": "product_views"}, 3]}},
        ],
    }
    return seal(doc)


#: Compiled versions a holder keeps besides the current one, so stage 2 can finish an event under the version that
#: decided its stage 1 across a swap (events in flight between the stages span seconds, not many versions).
KEPT_VERSIONS = 8


class PolicyHolder:
    """The process-wide current policy, swapped atomically. Older or invalid documents never replace a newer one."""

    def __init__(self, initial: CompiledPolicy | None = None) -> None:
        self._lock = threading.Lock()
        self._current = initial or compile_policy(bootstrap_policy())
        self._kept: dict[int, CompiledPolicy] = {self._current.version: self._current}
        self._bootstrap = initial is None
        self.rejected: list[tuple[int | None, str]] = []
        self.listeners: list[Callable[[CompiledPolicy], None]] = []

    @property
    def current(self) -> CompiledPolicy:
        return self._current  # a plain attribute read: atomic in CPython, no lock on the hot path

    def version(self, version: Any) -> CompiledPolicy:
        """The policy of ``version`` if this process still holds it, else the current one.

        One decision per event: stage 2 finishes an event under the version stage 1 decided it with, even when a
        new version was swapped in between. Only a version this process never held (a restart between the stages)
        falls back to the current one, and the ledger then names both (``routed_by_policy_version``)."""
        kept = self._kept.get(version) if isinstance(version, int) else None
        return kept if kept is not None else self._current

    def offer(self, raw: bytes | str | Mapping[str, Any]) -> bool:
        """Try a policy document. Returns True if it became current; logs and records the reason otherwise."""
        version = None
        try:
            if isinstance(raw, Mapping):
                doc: Any = dict(raw)
            else:
                try:
                    doc = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise PolicyError(f"policy: not valid JSON ({exc})") from None
            if isinstance(doc, dict) and isinstance(doc.get("policy_version"), int):
                version = doc["policy_version"]
            compiled = compile_policy(doc)
        except PolicyError as exc:
            logger.error("policy v%s rejected, keeping v%d: %s", version, self._current.version, exc)
            self.rejected.append((version, str(exc)))
            return False
        with self._lock:
            if compiled.checksum == self._current.checksum:
                return False  # the same document again (a compacted topic replays it on every start)
            # The built-in bootstrap may be replaced by any published policy; after that, only newer versions.
            newer = compiled.version > self._current.version or (
                self._bootstrap and compiled.version >= self._current.version)
            if not newer:
                reason = f"version {compiled.version} is not newer than current {self._current.version}"
                logger.warning("policy v%d ignored: %s", compiled.version, reason)
                self.rejected.append((compiled.version, reason))
                return False
            self._current = compiled
            self._bootstrap = False
            self._kept = {v: p for v, p in self._kept.items() if v > compiled.version - KEPT_VERSIONS}
            self._kept[compiled.version] = compiled
        logger.info("policy v%d (%s) is now current", compiled.version, compiled.checksum[:19])
        for listener in self.listeners:
            listener(compiled)
        return True
