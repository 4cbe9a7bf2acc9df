"""The traffic simulator: reproducible, valid on the wire, truthful, and realistic where the other tiers rely on it."""

from __future__ import annotations

import base64
import collections
import json
import statistics
import threading
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from streaming import simulator as sim
from streaming.contract import from_segment, parse_raw

CLOUD_TOKENS = ("AMAZON", "GOOGLE", "MICROSOFT", "DIGITALOCEAN", "OVH", "HETZNER")


def small(name: str = "default", **overrides: object) -> sim.Scenario:
    base: dict[str, object] = {"users": 20, "days": 2, "crawler_bots": 1, "stealth_bots": 1,
                               "stealth_sessions_per_day": 1.0, "crawler_sessions_per_day": 1.0}
    base.update(overrides)
    return sim.load_scenario(name, **base)


def snapshot(events: list[sim.SimEvent]) -> list[tuple[str, str, str]]:
    return [(json.dumps(e.payload, sort_keys=True), json.dumps(e.truth, sort_keys=True), e.send_at.isoformat())
            for e in events]


@pytest.fixture(scope="module")
def default_events() -> list[sim.SimEvent]:
    return list(sim.generate(small(users=60)))


# --- reproducibility ------------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_output() -> None:
    sc = small()
    first = list(sim.generate(sc))
    sim.generation._world.cache_clear()  # nothing may depend on process-level caches
    assert snapshot(first) == snapshot(list(sim.generate(sc)))
    assert len(first) > 100


def test_a_single_day_equals_its_slice_of_the_full_run() -> None:
    sc = small(days=3, bot_wave_day=1, wave_bots=1, wave_sessions_per_day=3.0)
    full = list(sim.generate(sc))
    for day in range(3):
        assert snapshot(list(sim.generate(sc, day=day))) == snapshot([e for e in full if e.truth["day"] == day])


def test_a_different_seed_differs() -> None:
    a = snapshot(list(sim.generate(small(seed=1))))
    b = snapshot(list(sim.generate(small(seed=2))))
    assert a != b
    assert not {json.loads(x[0])["messageId"] for x in a} & {json.loads(x[0])["messageId"] for x in b}


def test_events_come_in_send_at_order_within_their_day(default_events: list[sim.SimEvent]) -> None:
    times = [e.send_at for e in default_events]
    assert times == sorted(times)
    sc = small(users=60)
    start = datetime(sc.start_date.year, sc.start_date.month, sc.start_date.day, tzinfo=UTC)
    for e in default_events:
        assert start + timedelta(days=e.truth["day"]) <= e.send_at < start + timedelta(days=e.truth["day"] + 1)


# --- the wire contract and the truth ---------------------------------------------------------------------------------

def test_every_payload_passes_the_contract(default_events: list[sim.SimEvent]) -> None:
    for e in default_events:
        record = from_segment(e.payload, source_id="sim", received_at=e.send_at)
        event = parse_raw(orjson.dumps(record))
        assert event.event_id == e.payload["messageId"]
        assert e.payload["type"] in ("page", "track", "identify", "consent")
        if e.payload["type"] == "consent":
            assert set(e.payload["consent"]) == set(sim.PURPOSES)


def test_truth_matches_what_was_sent(default_events: list[sim.SimEvent], tmp_path) -> None:
    ids = [e.payload["messageId"] for e in default_events]
    assert len(ids) == len(set(ids))
    assert all(e.truth["event_id"] == e.payload["messageId"] for e in default_events)
    for e in default_events:
        assert set(e.truth) >= {"event_id", "actor", "actor_id", "bot_kind", "user_id", "region", "intent",
                                "will_convert", "day"}
        assert "truth" not in e.payload and "actor" not in json.dumps(e.payload)
    actors = collections.Counter(e.truth["actor"] for e in default_events)
    assert actors["human"] > 0 and actors["crawler"] > 0 and actors["stealth_bot"] > 0
    for path in (tmp_path / "truth.jsonl", tmp_path / "truth.parquet"):
        sim.write_truth(default_events, path)
    rows = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert [r["event_id"] for r in rows] == ids
    assert collections.Counter(r["actor"] for r in rows) == actors
    import polars as pl

    frame = pl.read_parquet(tmp_path / "truth.parquet")
    assert frame["event_id"].to_list() == ids
    assert dict(frame.group_by("actor").len().iter_rows()) == dict(actors)


def test_humans_carry_their_person_and_bots_none(default_events: list[sim.SimEvent]) -> None:
    for e in default_events:
        if e.truth["actor"] == "human":
            assert e.truth["user_id"] and e.truth["intent"] in ("low", "medium", "high") and e.truth["bot_kind"] is None
            if e.payload.get("userId"):
                assert e.payload["userId"] == e.truth["user_id"]
        else:
            assert e.truth["user_id"] is None and e.truth["bot_kind"] and e.truth["will_convert"] is False


# --- scenarios ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sim.SCENARIOS)
def test_shipped_scenarios_load(name: str) -> None:
    sc = sim.load_scenario(name)
    assert sc.name == name
    assert isinstance(sc.start_date, date)


def test_overrides_and_today() -> None:
    sc = sim.load_scenario("default", users=7, start_date="today")
    assert sc.users == 7 and sc.start_date == datetime.now(UTC).date()


@pytest.mark.parametrize(("overrides", "field"), [
    ({"users": -1}, "users"),
    ({"days": 0}, "days"),
    ({"eu_share": 1.5}, "eu_share"),
    ({"seed": "abc"}, "seed"),
    ({"users": True}, "users"),
    ({"start_date": "yesterday-ish"}, "start_date"),
    ({"colour": "blue"}, "colour"),
    ({"eu_share": 0.7, "us_share": 0.5}, "us_share"),
    ({"backfill_orders": 10, "backfill_day": 5, "days": 2}, "backfill_day"),
    ({"sessions_per_user_per_day": float("nan")}, "sessions_per_user_per_day"),
])
def test_invalid_fields_are_rejected_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(sim.ScenarioError, match=f"`{field}`") as info:
        sim.load_scenario("default", **overrides)
    assert info.value.field == field


def test_invalid_field_in_a_file(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('users = 5\nstealth_bots = "many"\n')
    with pytest.raises(sim.ScenarioError, match="`stealth_bots`"):
        sim.load_scenario(str(path))
    path.write_text("users = 5\n")
    assert sim.load_scenario(str(path)).name == "mine"


# --- realism --------------------------------------------------------------------------------------------------------

def test_bot_wave_appears_only_from_its_day() -> None:
    sc = sim.load_scenario("bot-wave", users=10, days=4, wave_bots=2, wave_sessions_per_day=5.0, crawler_bots=0,
                           stealth_bots=1)
    per_day = sim.summarize(sim.generate(sc))
    assert all("wave" not in per_day[d] for d in range(sc.bot_wave_day))
    assert all(per_day[d].get("wave", 0) > 0 for d in range(sc.bot_wave_day, sc.days))


def test_wave_bots_have_a_new_signature() -> None:
    """Stealth scrapers: datacenter IPs, metronome rhythm, no cart. The wave: residential IPs, irregular, carts."""
    sc = sim.load_scenario("bot-wave", users=5, days=3, wave_bots=2, crawler_bots=0)
    events = list(sim.generate(sc))
    by_session: dict[str, list[sim.SimEvent]] = collections.defaultdict(list)
    for e in events:
        if e.truth["actor"] == "stealth_bot":
            by_session[e.truth["session"]].append(e)
    stats: dict[str, list[tuple[float, bool, bool]]] = collections.defaultdict(list)
    for session in by_session.values():
        kind = session[0].truth["bot_kind"]
        pages = [datetime.fromisoformat(e.payload["timestamp"].replace("Z", "+00:00")).timestamp()
                 for e in session if e.payload["type"] == "page"]
        gaps = [b - a for a, b in zip(pages, pages[1:], strict=False)]
        cv = statistics.pstdev(gaps) / statistics.mean(gaps) if len(gaps) > 2 else 1.0
        _, asn = sim.geo_lookup(session[0].payload["context"]["ip"])
        datacenter = any(t in asn.upper() for t in CLOUD_TOKENS)
        carts = any(e.payload.get("event") == "Product Added" for e in session)
        stats[kind].append((cv, datacenter, carts))
    assert stats["scraper"] and stats["wave"]
    assert all(cv < 0.05 and dc and not cart for cv, dc, cart in stats["scraper"])
    assert all(not dc and cart for _, dc, cart in stats["wave"])
    assert statistics.mean(cv for cv, _, _ in stats["wave"] if cv != 1.0) > 0.2


def test_high_intent_converts_more_and_through_observable_behaviour() -> None:
    sc = sim.load_scenario("default", users=250, days=1, crawler_bots=0, stealth_bots=0)
    sessions: dict[str, dict[str, object]] = {}
    for e in sim.generate(sc):
        s = sessions.setdefault(e.truth["session"], {"intent": e.truth["intent"], "conv": e.truth["will_convert"],
                                                     "adds": 0, "views": 0})
        s["adds"] += e.payload.get("event") == "Product Added"  # type: ignore[operator]
        s["views"] += e.payload.get("event") == "Product Viewed"  # type: ignore[operator]
        if e.payload.get("event") == "Order Completed":
            assert s["conv"]
    rate = {i: statistics.mean(float(bool(s["conv"])) for s in sessions.values() if s["intent"] == i)
            for i in ("low", "medium", "high")}
    assert rate["high"] > rate["medium"] > rate["low"]
    assert rate["high"] > 3 * rate["low"]
    # the signal is observable: sessions with cart adds convert, and high intent views more products
    assert all(s["adds"] for s in sessions.values() if s["conv"])
    views = {i: statistics.mean(s["views"] for s in sessions.values() if s["intent"] == i)  # type: ignore[misc]
             for i in ("low", "high")}
    assert views["high"] > 1.5 * views["low"]


def test_orders_carry_the_funnel_properties(default_events: list[sim.SimEvent]) -> None:
    by_name = collections.defaultdict(list)
    for e in default_events:
        by_name[e.payload.get("event")].append(e.payload.get("properties", {}))
    assert by_name["Order Completed"], "no orders at all"
    for props in by_name["Product Viewed"]:
        assert {"product_id", "category", "price"} <= set(props)
    for props in by_name["Product Added"]:
        assert {"product_id", "category", "price", "quantity"} <= set(props)
    for props in by_name["Order Completed"]:
        assert {"order_id", "revenue", "total", "products"} <= set(props) and props["products"]


def test_identity_pii_and_second_devices() -> None:
    sc = sim.load_scenario("consent-storm", users=60, days=2, crawler_bots=0, stealth_bots=0)
    events = list(sim.generate(sc))
    identifies = [e for e in events if e.payload["type"] == "identify"]
    assert identifies and all("@" in e.payload["traits"]["email"] and e.payload["traits"]["phone"].startswith("+")
                              for e in identifies)
    devices: dict[str, set[str]] = collections.defaultdict(set)
    for e in events:
        if e.payload.get("userId") and e.payload.get("anonymousId"):
            devices[e.payload["userId"]].add(e.payload["anonymousId"])
    assert any(len(v) >= 2 for v in devices.values()), "nobody logged in on a second device"


def test_consent_changes_mid_session_and_tcf_strings_decode() -> None:
    from streaming.consent import purposes_from_tcf

    sc = sim.load_scenario("consent-storm", users=60, days=2, crawler_bots=0, stealth_bots=0)
    events = list(sim.generate(sc))
    consents = [e for e in events if e.payload["type"] == "consent"]
    actions = collections.Counter(e.payload["properties"]["action"] for e in consents)
    assert actions["revoke"] + actions["revoke_all"] > 0 and actions["grant"] > 0
    # a revocation is followed by more events of the same session (it happens mid-session)
    sessions = collections.defaultdict(list)
    for e in events:
        sessions[e.truth["session"]].append(e)
    mid = [s for s in sessions.values() for i, e in enumerate(s) if e.payload["type"] == "consent"
           and e.payload["properties"]["action"].startswith("revoke") and i < len(s) - 1]
    assert mid
    tcf = [e for e in events if "consent" in e.payload["context"]]
    assert tcf
    for e in tcf:
        if e.payload["type"] == "consent":
            assert purposes_from_tcf(e.payload["context"]["consent"]["tcString"]) == e.payload["consent"]
    # regions differ: EU profiles answer a banner, US ones never see one
    banner_regions = {e.truth["region"] for e in consents if e.payload["properties"]["source"] == "banner"}
    assert banner_regions == {"EU"}


def test_ips_and_user_agents_are_real(default_events: list[sim.SimEvent]) -> None:
    crawler_uas = {ua for _, instances in sim.crawler_user_agents() for ua in instances}
    checked = collections.Counter()
    for e in default_events[::3]:
        ip, ua = e.payload["context"].get("ip"), e.payload["context"].get("userAgent")
        country, asn = sim.geo_lookup(ip)
        if e.truth["actor"] == "human":
            assert country == e.truth["country"]
            assert not sim.reference._is_crawler_ua(ua)
        elif e.truth["bot_kind"] == "crawler":
            assert ua in crawler_uas and sim.reference._is_crawler_ua(ua)
            assert any(t in asn.upper() for t in CLOUD_TOKENS)
        elif e.truth["bot_kind"] == "scraper":
            assert not sim.reference._is_crawler_ua(ua) and ua.startswith("Mozilla/5.0")
            assert any(t in asn.upper() for t in CLOUD_TOKENS)
        checked[e.truth["actor"]] += 1
    assert len(checked) == 3


def test_skewed_clocks_are_visible_and_correctable(default_events: list[sim.SimEvent]) -> None:
    sc = small(users=60, clock_skew_rate=0.5)
    skewed = [e for e in sim.generate(sc) if e.truth["clock_skew_s"]]
    assert skewed
    for e in skewed[:50]:
        ts = datetime.fromisoformat(e.payload["timestamp"].replace("Z", "+00:00"))
        assert abs((ts - e.send_at).total_seconds()) > 60  # the device clock is visibly off
        record = from_segment(e.payload, source_id="sim", received_at=e.send_at)
        corrected = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        assert timedelta(0) <= e.send_at - corrected < timedelta(seconds=1)
        assert abs(record["clock_skew_ms"] / 1000 - e.truth["clock_skew_s"]) < 1
        # restamped for a live send, the corrected timestamp is still the simulated event time
        now = datetime.now(UTC)
        live = from_segment(sim.restamp(e, now), source_id="sim", received_at=now)
        assert abs(datetime.fromisoformat(live["timestamp"].replace("Z", "+00:00")) - corrected) < \
            timedelta(milliseconds=2)


def test_backfill_emits_old_orders_without_sent_at() -> None:
    sc = sim.load_scenario("backfill", users=20, backfill_orders=50, crawler_bots=0, stealth_bots=0)
    old = [e for e in sim.generate(sc) if e.truth["backfill"]]
    assert len(old) == 50
    start = datetime(sc.start_date.year, sc.start_date.month, sc.start_date.day, tzinfo=UTC)
    for e in old:
        assert e.payload["event"] == "Order Completed" and "sentAt" not in e.payload
        record = from_segment(e.payload, source_id="import", received_at=datetime.now(UTC))
        ts = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        assert start - timedelta(days=366) < ts <= start - timedelta(days=29)


# --- delivery -------------------------------------------------------------------------------------------------------

class _Collector(BaseHTTPRequestHandler):
    received: list[dict] = []
    auth: list[str] = []
    throttle = 1

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).auth.append(self.headers.get("Authorization", ""))
        if type(self).throttle:
            type(self).throttle -= 1
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        type(self).received.extend(json.loads(body)["batch"])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_send_http_batches_authenticates_and_retries() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        events = list(sim.generate(small(users=5, days=1)))
        n = sim.send_http(events, url=f"http://127.0.0.1:{server.server_port}", write_key="wk_test", batch_size=40)
    finally:
        server.shutdown()
    assert n == len(events)
    assert [e["messageId"] for e in _Collector.received] == [e.payload["messageId"] for e in events]
    assert set(_Collector.auth) == {"Basic " + base64.b64encode(b"wk_test:").decode()}
    assert len(_Collector.auth) == -(-len(events) // 40) + 1  # one 429 retried


def test_cli_writes_events_and_truth(tmp_path, capsys) -> None:
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    assert sim.main(["--scenario", "default", "--users", "5", "--set", "stealth_bots=1", "--to", "file",
                     "--out", str(out), "--truth", str(truth), "--no-progress"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(truth.read_text().splitlines()) > 0
    assert json.loads(capsys.readouterr().out)["events"] == len(lines)


@pytest.mark.integration
def test_send_to_kafka_against_the_embedded_broker() -> None:
    from confluent_kafka import Consumer, TopicPartition

    from streaming.broker import EmbeddedBroker, create_topics
    from streaming.settings import RAW, load_settings

    settings = load_settings()
    events = list(sim.generate(small(users=10, days=1)))
    broker = EmbeddedBroker.start()
    try:
        create_topics(broker.address, settings)
        topic = settings.topic(RAW)
        n = sim.send_to_kafka(events, broker_address=broker.address, topic=topic, source_id="sim-test")
        assert n == len(events)
        consumer = Consumer({"bootstrap.servers": broker.address, "group.id": "sim-test-reader",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        seen: dict[str, bytes] = {}
        idle = 0
        while len(seen) < n and idle < 20:
            msgs = consumer.consume(500, timeout=0.5)
            idle = 0 if msgs else idle + 1
            for msg in msgs:
                assert msg.error() is None
                event = parse_raw(msg.value())
                seen[event.event_id] = msg.key()
                assert event.source_id == "sim-test"
        consumer.close()
    finally:
        broker.stop()
    assert set(seen) == {e.payload["messageId"] for e in events}
    for e in events:  # keyed by the device, else the user
        assert seen[e.payload["messageId"]] == (e.payload.get("anonymousId") or e.payload["userId"]).encode()
