"""What to simulate: the scenario (TOML, with overrides), its fields and their validation.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from streaming.errors import FirstmileError

SCENARIO_DIR = Path(__file__).parent.parent / "scenarios"
SCENARIOS: tuple[str, ...] = ("default", "bot-wave", "consent-storm", "backfill")
SITE = "https://shop.firstmile.example"
PURPOSES: tuple[str, ...] = ("analytics", "personalization", "marketing", "sales")
DAY_S = 86_400


class ScenarioError(FirstmileError, ValueError):
    """An invalid scenario; the message names the field at fault."""

    def __init__(self, field_name: str, problem: str, scenario: str = "") -> None:
        where = f"scenario {scenario!r}: " if scenario else ""
        super().__init__(f"{where}field `{field_name}`: {problem}")
        self.field = field_name


class SimulatorError(FirstmileError, RuntimeError):
    """Delivery failed (broker errors, HTTP errors after retries)."""


# --- scenario ----------------------------------------------------------------------------------------------------

def _f(default: Any, kind: type | tuple[type, ...], lo: float | None = None, hi: float | None = None,
       doc: str = "", optional: bool = False) -> Any:
    return field(default=default, metadata={"kind": kind, "lo": lo, "hi": hi, "doc": doc, "optional": optional})


@dataclass(frozen=True)
class Scenario:
    """What to simulate. Every field has a default; see ``streaming/scenarios/default.toml`` for the annotated set."""

    name: str = _f("default", str, doc="scenario name")
    description: str = _f("", str, doc="free text")
    seed: int = _f(42, int, doc="everything is derived from it")
    users: int = _f(200, int, 0, 100_000, "simulated people")
    days: int = _f(1, int, 1, 366, "simulated days")
    start_date: date = _f(date(2026, 11, 2), date, doc="day 0 (UTC); 'today' accepted in TOML/overrides")
    sessions_per_user_per_day: float = _f(1.0, (int, float), 0, 50, "mean sessions a person starts per day")
    eu_share: float = _f(0.45, (int, float), 0, 1, "share of people in the EEA/UK (consent default: denied)")
    us_share: float = _f(0.35, (int, float), 0, 1, "share of people in the US; the rest are elsewhere")
    registered_share: float = _f(0.45, (int, float), 0, 1, "share of people with an account (can log in)")
    intent_high_share: float = _f(0.2, (int, float), 0, 1, "share of people with high purchase intent")
    intent_low_share: float = _f(0.45, (int, float), 0, 1, "share with low intent; the rest are medium")
    consent_revocation_rate: float = _f(0.04, (int, float), 0, 1, "chance a session revokes consent mid-way")
    consent_grant_rate: float = _f(0.05, (int, float), 0, 1, "chance a session grants (more) consent mid-way")
    tcf_share: float = _f(0.7, (int, float), 0, 1, "share of EU devices whose CMP sends IAB TCF v2 strings")
    second_device_rate: float = _f(0.2, (int, float), 0, 1, "share of registered people who log in on a 2nd device")
    clock_skew_rate: float = _f(0.05, (int, float), 0, 1, "share of human devices with a skewed clock")
    crawler_bots: int = _f(3, int, 0, 1000, "listed crawlers (real crawler user agents)")
    crawler_sessions_per_day: float = _f(3.0, (int, float), 0, 1000, "crawl sessions per crawler per day")
    stealth_bots: int = _f(2, int, 0, 1000, "stealth scrapers (browser UAs, datacenter IPs, machine rhythm)")
    stealth_sessions_per_day: float = _f(3.0, (int, float), 0, 1000, "sessions per stealth bot per day")
    bot_wave_day: int | None = _f(None, int, 0, 365, "day a new bot wave starts (none if unset)", optional=True)
    wave_bots: int = _f(6, int, 0, 1000, "bots in the new wave (used only when bot_wave_day is set)")
    wave_sessions_per_day: float = _f(25.0, (int, float), 0, 10_000, "short sessions per wave bot per day")
    backfill_orders: int = _f(0, int, 0, 1_000_000, "historical orders imported (server-side, old timestamps)")
    backfill_day: int = _f(0, int, 0, 365, "simulated day on which the import is sent")
    backfill_min_days_ago: int = _f(30, int, 1, 3650, "newest imported order, days before start_date")
    backfill_max_days_ago: int = _f(365, int, 1, 3650, "oldest imported order, days before start_date")
    products_per_category: int = _f(30, int, 1, 10_000, "catalog size per category")
    offer_uplift: float = _f(0.3, (int, float), 0, 1,
                             "live mode: share of a high-intent visitor's chance to abandon a cart that a relevant "
                             "action shown in-session closes (medium 0.4x, low 0.1x; streaming/simulator/response.py)")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if value is None and meta.get("optional"):
                continue
            kind = meta["kind"]
            if isinstance(value, bool) or not isinstance(value, kind):
                names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
                raise ScenarioError(f.name, f"must be {names}, got {type(value).__name__} {value!r}", self.name)
            if isinstance(value, int | float) and not math.isfinite(value):
                raise ScenarioError(f.name, f"must be finite, got {value!r}", self.name)
            lo, hi = meta.get("lo"), meta.get("hi")
            if lo is not None and value < lo:
                raise ScenarioError(f.name, f"must be >= {lo}, got {value!r}", self.name)
            if hi is not None and value > hi:
                raise ScenarioError(f.name, f"must be <= {hi}, got {value!r}", self.name)
        if self.eu_share + self.us_share > 1:
            raise ScenarioError("us_share", f"eu_share + us_share must be <= 1, got {self.eu_share + self.us_share}",
                                self.name)
        if self.intent_high_share + self.intent_low_share > 1:
            raise ScenarioError("intent_low_share", "intent_high_share + intent_low_share must be <= 1", self.name)
        if self.backfill_min_days_ago > self.backfill_max_days_ago:
            raise ScenarioError("backfill_min_days_ago", "must be <= backfill_max_days_ago", self.name)
        if self.backfill_orders and self.backfill_day >= self.days:
            raise ScenarioError("backfill_day", f"must be < days ({self.days}), got {self.backfill_day}", self.name)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SCENARIO_FIELDS: dict[str, str] = {f.name: f.metadata["doc"] for f in fields(Scenario)}


def _coerce(name: str, value: Any, scenario: str) -> Any:
    if name == "start_date":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, str):
            if value.strip().lower() == "today":
                return datetime.now(UTC).date()
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                raise ScenarioError(name, f"must be a date (YYYY-MM-DD or 'today'), got {value!r}", scenario) from None
    kind = Scenario.__dataclass_fields__[name].metadata["kind"]
    if kind == (int, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ScenarioError(name, f"must be a number, got {value!r}", scenario) from None
    if kind is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ScenarioError(name, f"must be an integer, got {value!r}", scenario) from None
    return value


def scenario_from_dict(data: dict[str, Any]) -> Scenario:
    """Build a :class:`Scenario` from plain values (TOML table, CLI overrides). Unknown keys are rejected."""
    name = str(data.get("name", "default"))
    known = Scenario.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in data.items():
        key_n = key.replace("-", "_")
        if key_n not in known:
            raise ScenarioError(key, f"unknown field; known fields: {', '.join(known)}", name)
        values[key_n] = _coerce(key_n, value, name)
    return Scenario(**values)


def scenario_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f"no scenario {name_or_path!r}: not a file and not one of {', '.join(SCENARIOS)}")


def load_scenario(name_or_path: str | Path = "default", **overrides: Any) -> Scenario:
    """Load a shipped scenario by name (``default``, ``bot-wave``, ``consent-storm``, ``backfill``) or a TOML path,
    then apply ``overrides`` (field=value; ``None`` values are ignored). Raises :class:`ScenarioError`."""
    path = scenario_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("<file>", f"{path.name} is not valid TOML: {exc}") from None
    if isinstance(data.get("scenario"), dict):  # allow an optional [scenario] table
        data = {**{k: v for k, v in data.items() if k != "scenario"}, **data["scenario"]}
    data.setdefault("name", path.stem)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return scenario_from_dict(data)
