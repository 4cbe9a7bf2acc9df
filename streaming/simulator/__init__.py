"""A seeded, reproducible traffic simulator: humans with hidden intent, crawlers, stealth bots and a new bot wave.

It speaks the Segment wire format (what analytics.js / the server SDKs send) and keeps the ground truth of every
event *outside* the payload (:class:`SimEvent.truth`), so tests and reports can score the hot path's decisions.

* :func:`load_scenario` reads a TOML scenario (``streaming/scenarios/*.toml``, or a path) with overrides on top;
  every field has a default and a bad field is rejected with a message naming it.
* :func:`generate` yields :class:`SimEvent` in ``send_at`` order. Output is a pure function of the scenario: the
  same seed gives identical events, and ``generate(s, day=k)`` gives exactly the day-``k`` slice of the full run
  (cross-day state - consent, logins, devices - is folded from cheap per-day plans, not from earlier output).
* :func:`send_to_kafka`, :func:`send_http` and :func:`write_truth` deliver events and the ground truth.
* :func:`play` (``--live``) plays the sessions now through the collector while the simulated website reads the
  profile API mid-session, and visitors respond to the action they are shown (:mod:`streaming.simulator.response`);
  it returns a :class:`LiveRun` that it writes for the latency-impact report.

Realism, in short. Humans browse a catalog; their hidden ``intent`` shows only through behaviour (how focused their
product views are on their favourite categories, dwell time, cart adds) and conversion is a logistic function of
that observable behaviour. Returning users log in on a second device (same ``userId``, new ``anonymousId``). EU
devices answer a consent banner (with IAB TCF v2 strings for most CMPs), users revoke or grant consent mid-session.
IPs come from real country networks of the offline geo database; user agents from ``fake-useragent``'s bundled
data. Crawlers use listed crawler user agents; stealth scrapers use browser user agents from datacenter networks
with a machine-like rhythm; from ``bot_wave_day`` a new wave of cart-hoarding bots uses residential IPs, mobile
user agents and a human-like rhythm, so a policy learned before the wave misses it.

The package, by concept: ``scenario``, ``events``, ``reference``, ``population``, ``day``, ``generation``,
``bot_traffic``, ``delivery``, ``response``, ``live``, ``cli``."""

from streaming.simulator.cli import main
from streaming.simulator.delivery import restamp, send_http, send_to_kafka, summarize, truth_rows, write_truth
from streaming.simulator.events import SimEvent
from streaming.simulator.events import _iso as _iso  # tests stamp times as the generator does
from streaming.simulator.generation import generate
from streaming.simulator.live import LiveTarget, Pace, play
from streaming.simulator.live_records import LiveRun, latest_run_dir, read_run
from streaming.simulator.live_sessions import SessionScript
from streaming.simulator.reference import (
    CATEGORIES,
    CLOUDS,
    COUNTRIES,
    CRAWLER_FAMILIES,
    EMAIL_DOMAINS,
    EU_COUNTRIES,
    FIRST_NAMES,
    LAST_NAMES,
    OTHER_COUNTRIES,
    REFERRERS,
    TCF_MAPPING,
    TCF_VENDORS,
    US_TIMEZONES,
    browser_user_agents,
    cloud_ip,
    country_ip,
    crawler_user_agents,
    encode_tcf,
    geo_lookup,
    network_pools,
)
from streaming.simulator.scenario import (
    DAY_S,
    PURPOSES,
    SCENARIO_DIR,
    SCENARIO_FIELDS,
    SCENARIOS,
    SITE,
    Scenario,
    ScenarioError,
    SimulatorError,
    load_scenario,
    scenario_from_dict,
    scenario_path,
)

__all__ = [
    'DAY_S', 'PURPOSES', 'SCENARIOS', 'SCENARIO_DIR', 'SCENARIO_FIELDS', 'SITE', 'Scenario', 'ScenarioError',
    'SimulatorError', 'load_scenario', 'scenario_from_dict', 'scenario_path', 'SimEvent', 'CATEGORIES',
    'CLOUDS', 'COUNTRIES', 'CRAWLER_FAMILIES', 'EMAIL_DOMAINS', 'EU_COUNTRIES', 'FIRST_NAMES', 'LAST_NAMES',
    'OTHER_COUNTRIES', 'REFERRERS', 'TCF_MAPPING', 'TCF_VENDORS', 'US_TIMEZONES', 'browser_user_agents',
    'cloud_ip', 'country_ip', 'crawler_user_agents', 'encode_tcf', 'geo_lookup', 'network_pools', 'generate',
    'restamp', 'send_http', 'send_to_kafka', 'summarize', 'truth_rows', 'write_truth', 'main',
    'LiveRun', 'LiveTarget', 'Pace', 'SessionScript', 'latest_run_dir', 'play', 'read_run',
]
