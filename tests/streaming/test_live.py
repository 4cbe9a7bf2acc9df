"""The simulator's live mode: visitors played now through the real collector, the simulated website reading the
real profile API mid-session (``after=`` the collector's token), visitors responding to what they are shown.

Unit tests of the response model and of the scripts (the generator's sessions, cut at the checkout decision); then
one small run against real processes (embedded Tansu, the worker, the collector, the serving process) whose record
the later tests read.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming.policy import bootstrap_policy
from streaming.simulator import generate, load_scenario
from streaming.simulator.live import LiveTarget, Pace, play
from streaming.simulator.live_records import LiveRun, percentiles, read_run
from streaming.simulator.live_sessions import session_scripts
from streaming.simulator.response import (
    ACTION_RELEVANCE,
    INTENT_RESPONSE,
    conversion_probability,
    lift,
    respond,
)

# --- the response model (pure) --------------------------------------------------------------------------------------


def test_without_an_action_the_visitor_converts_at_the_generators_baseline() -> None:
    for intent in INTENT_RESPONSE:
        assert conversion_probability(0.3, None, intent=intent, offer_uplift=0.5) == 0.3
        assert respond(0.3, 0.29, [], intent=intent, offer_uplift=0.5).converted is True
        assert respond(0.3, 0.31, [None, None], intent=intent, offer_uplift=0.5).converted is False


def test_a_relevant_action_moves_a_high_intent_visitor_much_more_than_a_low_intent_one() -> None:
    high = conversion_probability(0.2, "show_checkout_reminder", intent="high", offer_uplift=0.5)
    medium = conversion_probability(0.2, "show_checkout_reminder", intent="medium", offer_uplift=0.5)
    low = conversion_probability(0.2, "show_checkout_reminder", intent="low", offer_uplift=0.5)
    assert high == pytest.approx(0.2 + 0.8 * 0.5)
    assert high > medium > low > 0.2
    assert low - 0.2 == pytest.approx((high - 0.2) / 10)  # a low-intent visitor rarely responds
    # a weaker action moves less; an action never lowers the chance; uplift 0 ignores every action
    assert conversion_probability(0.2, "show_recommendations", intent="high", offer_uplift=0.5) < high
    assert conversion_probability(0.2, "some_learned_action", intent="high", offer_uplift=0.5) > 0.2
    assert conversion_probability(0.2, "show_checkout_reminder", intent="high", offer_uplift=0.0) == 0.2


def test_the_strongest_action_shown_counts_and_the_same_draw_decides_both_worlds() -> None:
    shown = [None, "show_recommendations", "show_checkout_reminder", "show_recommendations"]
    response = respond(0.1, 0.5, shown, intent="high", offer_uplift=0.6)
    assert response.action == "show_checkout_reminder" and response.probability == pytest.approx(0.1 + 0.9 * 0.6)
    assert response.converted is True  # 0.5 < 0.64, while the baseline (0.1) would not have converted
    assert respond(0.1, 0.5, ["show_recommendations"], intent="high", offer_uplift=0.6).converted is False
    # monotone in the draw: a visitor who converts at the baseline converts with any action
    for draw in (0.0, 0.05, 0.099):
        assert all(respond(0.1, draw, [a], intent="low", offer_uplift=0.3).converted for a in ACTION_RELEVANCE)


def test_every_action_the_bootstrap_policy_can_choose_has_a_relevance() -> None:
    actions = {segment["action"] for segment in bootstrap_policy()["segments"]}
    assert actions <= set(ACTION_RELEVANCE), actions - set(ACTION_RELEVANCE)
    assert all(lift(a, intent="high", offer_uplift=1.0) > 0 for a in actions)


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    assert percentiles([float(v) for v in range(1, 101)]) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([3.0, 1.0, 2.0]) == {"p50": 2.0, "p95": 3.0, "p99": 3.0}


def test_the_live_cli_asks_for_the_keys_it_needs(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from streaming.simulator import main

    monkeypatch.delenv("FIRSTMILE_SIM_WRITE_KEY", raising=False)
    monkeypatch.delenv("FIRSTMILE_SIM_READ_KEY", raising=False)
    with pytest.raises(SystemExit):
        main(["--live", "--users", "3"])
    assert "--write-key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--live", "--users", "3", "--write-key", "k"])
    assert "--read-key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--live", "--users", "3", "--write-key", "k", "--read-key", "r", "--speed", "0"])
    assert "speed" in capsys.readouterr().err


def test_a_stopped_run_plays_nothing_and_says_it_was_interrupted() -> None:
    import threading

    stop = threading.Event()
    stop.set()
    run = play(load_scenario("default", users=3), LiveTarget(collector_url="http://127.0.0.1:9", write_key="k"),
               stop=stop)
    assert run.status == "interrupted" and run.sessions == [] and run.reads == []


# --- the scripts: the generator's sessions ----------------------------------------------------------------------------

def test_live_sessions_are_the_generators_cut_at_the_checkout_decision() -> None:
    scenario = load_scenario("default", users=80)
    scripts = session_scripts(scenario, 0)
    generated = list(generate(scenario, day=0))
    played_at_baseline = []
    for script in scripts:
        played_at_baseline += script.events
        if script.p_baseline is not None and script.draw is not None:
            assert script.actor == "human" and script.checkout and 0 < script.p_baseline < 1
            if script.draw < script.p_baseline:  # what the generator decided with the same draw
                played_at_baseline += script.checkout
        else:
            assert not script.checkout
    key = [(e.payload["messageId"], e.send_at) for e in generated]
    assert sorted((e.payload["messageId"], e.send_at) for e in played_at_baseline) == sorted(key)
    assert {s.actor for s in scripts} == {"human", "crawler", "stealth_bot"}
    assert all(e.payload.get("event") != "Order Completed" for s in scripts for e in s.events)
    assert all(any(e.payload.get("event") == "Order Completed" for e in s.checkout) for s in scripts if s.checkout)


# --- against real processes -------------------------------------------------------------------------------------------

#: All US visitors (personalization granted by default) and mostly high intent, so that a few dozen sessions give
#: enough checkout decisions; offer_uplift 1: a high-intent visitor shown a cart action always converts.
LIVE_OVERRIDES = {"users": 30, "eu_share": 0.0, "us_share": 1.0, "intent_high_share": 0.6, "intent_low_share": 0.1,
                  "crawler_bots": 1, "stealth_bots": 1, "crawler_sessions_per_day": 2.0,
                  "stealth_sessions_per_day": 2.0, "offer_uplift": 1.0, "seed": 7}
#: A simulated day in ~15 s; sessions at 6x with gaps of at most 15 simulated seconds (under the rate rules).
LIVE_PACE = Pace(speed=86_400 / 15, session_speed=6.0, max_gap_s=15.0, concurrency=48)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRun, Path, object]]:
    from tests.streaming.test_collector import KEY
    from tests.streaming.test_serving import PUBLISHABLE, SHOP, Served

    platform = Served(tmp_path_factory.mktemp("live"))
    try:
        token = platform.track("warm-up")
        for _ in range(12):  # the worker joins its group first (a few seconds on Tansu)
            answer = platform.get(f"/v1/profiles?anonymousId=warm-up&after={token}&wait_ms=5000")
            if answer.status_code == 200 and not answer.json()["stale"]:
                break
        assert answer.status_code == 200 and not answer.json()["stale"], answer.text
        scenario = load_scenario("default", **LIVE_OVERRIDES)
        target = LiveTarget(collector_url=f"http://127.0.0.1:{platform.collector_port}", write_key=KEY,
                            serving_url=f"http://127.0.0.1:{platform.port}", read_key=PUBLISHABLE, origin=SHOP)
        run = play(scenario, target, pace=LIVE_PACE)
        run_dir = run.write(platform.data_dir / "live" / run.run_id)
        yield run, run_dir, platform
    finally:
        platform.close()


@pytest.mark.integration
def test_live_visitors_are_served_actions_from_the_api_in_session(live_run: tuple[LiveRun, Path, object]) -> None:
    run, _, _ = live_run
    assert run.status == "complete"
    humans = [s for s in run.sessions if s.actor == "human"]
    bots = [s for s in run.sessions if s.actor != "human"]
    assert len(humans) >= 20 and bots and all(s.events_sent > 0 for s in run.sessions)
    answered = [r for r in run.reads if r.status == 200]
    fresh = [r for r in answered if r.stale is False]
    assert len(fresh) > 0 and any(r.action for r in fresh), Counter((r.status, r.stale) for r in run.reads)
    # the read reflected the event it followed (read-your-writes), and its freshness was measured from the 200
    assert all(r.freshness_ms >= r.read_ms > 0 and r.token.count(".") >= 1 for r in run.reads)
    assert all(r.staleness_ms is not None and r.staleness_ms >= 0 for r in answered)
    # a publishable key: only its allow-list (segment, action, consent) and the meta fields came back
    assert {r.segment for r in fresh if r.action} <= {s["id"] for s in bootstrap_policy()["segments"]}
    # an action decided in the session reached the page: a cart add turned into the checkout reminder
    reminded = [s for s in humans if "show_checkout_reminder" in s.shown]
    assert reminded, [s.shown for s in humans]
    # bots are in the traffic and never respond
    assert all(s.decision is False and s.converted is None for s in bots)


@pytest.mark.integration
def test_live_conversions_respond_to_the_action_shown(live_run: tuple[LiveRun, Path, object]) -> None:
    """With offer_uplift 1 a high-intent visitor shown a cart action converts whatever the draw; without an action
    the generator's baseline decides. A visitor who ignored what was shown would convert at the baseline only."""
    run, _, platform = live_run
    decided = [s for s in run.sessions if s.decision]
    assert len(decided) >= 5
    for s in decided:
        assert s.p_baseline is not None and s.draw is not None and s.intent is not None
        expected = conversion_probability(s.p_baseline, s.response_action, intent=s.intent, offer_uplift=1.0)
        assert s.p_response == pytest.approx(expected, abs=1e-6)
        assert s.converted is (s.draw < expected)
        if not s.shown:
            assert s.converted is s.baseline_converted
    nudged = [s for s in decided if s.intent == "high" and s.response_action == "show_checkout_reminder"]
    assert nudged and all(s.converted for s in nudged)
    flipped = [s for s in decided if s.converted and not s.baseline_converted]
    assert flipped, [(s.intent, s.shown, s.p_baseline, s.draw) for s in decided]
    assert sum(bool(s.converted) for s in decided) > sum(bool(s.baseline_converted) for s in decided)
    # the conversions went through the collector: one Order Completed on events.raw per converted session
    from tests.streaming.test_collector import consume

    orders = {r.anonymous_id for r in run.reads if r.converted_after}
    seen = consume(platform.broker.address, set(), timeout=20)  # type: ignore[attr-defined]
    completed = Counter(v.get("anonymous_id") for values in seen.values() for _, v in values
                        if v.get("event") == "Order Completed")
    assert sum(completed.values()) == sum(1 for s in decided if s.converted)
    assert orders <= set(completed)


@pytest.mark.integration
def test_a_written_run_reads_back_whole(live_run: tuple[LiveRun, Path, object]) -> None:
    run, run_dir, _ = live_run
    again = read_run(run_dir)
    assert again.summary() == run.summary()
    assert again.sessions == run.sessions and again.reads == run.reads
    summary = run.summary()
    assert summary["reads_fresh"] > 0 and not math.isnan(summary["freshness_ms"]["p50"])


@pytest.mark.integration
def test_the_report_computes_its_in_session_rows_from_the_recorded_run(
        live_run: tuple[LiveRun, Path, object]) -> None:
    """The report's rows against a recount in DuckDB SQL over the JSONL files the run wrote."""
    import duckdb

    from orchestration.in_session_serving import in_session_serving
    from orchestration.latency_impact import LatencyImpact
    from orchestration.report_html import in_session_html

    run, run_dir, platform = live_run
    live, why = in_session_serving(platform.data_dir)  # type: ignore[attr-defined]
    assert live is not None and why == "" and live.run_id == run.run_id
    con = duckdb.connect()
    reads, sessions = (f"read_json_auto('{run_dir / name}')" for name in ("reads.jsonl", "sessions.jsonl"))
    with_action, answered, fresh, p50, p99 = con.execute(f"""
        with h as (select * from {reads} where actor = 'human' and status = 200),
             f as (select list_sort(list(freshness_ms)) as ms from h where not stale)
        select (select count(*) from h where action is not null), (select count(*) from h),
               (select count(*) from h where not stale),
               ms[cast(ceil(0.5 * len(ms)) as int)], ms[cast(ceil(0.99 * len(ms)) as int)] from f""").fetchone()
    converted, baseline, decided = con.execute(f"""
        select count(*) filter (where converted), count(*) filter (where baseline_converted), count(*)
        from {sessions} where actor = 'human' and decision""").fetchone()
    assert live.metrics["reads_with_action"]["first_mile"] == with_action > 0
    assert live.freshness_ms["p50"] == round(p50, 1) and live.freshness_ms["p99"] == round(p99, 1)
    assert live.stale_share == round(1 - fresh / answered, 4)
    assert live.metrics["conversions_all"]["first_mile"] == converted
    assert live.denominators["checkout_sessions"] == decided
    # one simulated day: no nightly run has happened before any session, so the batch shows nothing and its
    # visitors convert at the baseline; the first mile's in-session actions converted more of them
    assert live.metrics["sessions_shown_action"]["batch_only"] == 0
    assert live.metrics["conversions_all"]["batch_only"] == baseline < converted
    assert live.metrics["sessions_shown_same_session_decision"]["first_mile"] > 0
    text = LatencyImpact(live=live).to_text()
    assert f"live run {run.run_id}" in text and "n/a" not in text.split("in-session serving")[1].split("(")[0]
    assert 'id="in-session"' in in_session_html(LatencyImpact(live=live))
