"""The latency-impact report's in-session rows (orchestration/in_session_serving.py), on a hand-built live record
whose answers are known by construction, and its "n/a with the reason" when no live run was recorded.

The rows from a real recorded run (real broker, worker, collector and serving process) are checked in
tests/streaming/test_live.py, against a recount in DuckDB SQL over the files.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from orchestration.in_session_serving import in_session_serving, summarize_run
from orchestration.latency_impact import LIVE_METRICS, METRICS, LatencyImpact
from orchestration.report_html import in_session_html
from streaming.simulator.live_records import LiveRun, PlayedSession, ServedRead

REMINDER, RECS = "show_checkout_reminder", "show_recommendations"


def _session(session: str, actor_id: str, sim_start: str, *, intent: str | None = "high", shown: list[str],
             p: float | None = None, draw: float | None = None, converted: bool | None = None,
             actor: str = "human") -> PlayedSession:
    decision = p is not None
    return PlayedSession(
        run_id="r", session=session, actor_id=actor_id, actor=actor, bot_kind=None if actor == "human" else "scraper",
        intent=intent, anonymous_id=f"dev-{actor_id}", day=0 if sim_start.startswith("2026-11-02") else 1,
        sim_start=sim_start, wall_start=sim_start, start_lag_ms=0.0, duration_ms=1000.0, events_sent=5, reads=1,
        shown=shown,
        decision=decision, p_baseline=p, draw=draw, offer_uplift=0.5, response_action=shown[-1] if shown and decision
        else None, p_response=None, converted=converted, baseline_converted=(draw < p) if p and draw else None)


def _read(session: PlayedSession, sim_at: str, action: str | None, *, fresh_ms: float = 100.0,
          stale: bool = False) -> ServedRead:
    return ServedRead(
        run_id="r", session=session.session, actor_id=session.actor_id, actor=session.actor,
        bot_kind=session.bot_kind, intent=session.intent, anonymous_id=session.anonymous_id, day=session.day,
        sim_at=sim_at, sent_at=sim_at, event="Product Viewed", event_id=f"e-{sim_at}", token="0.1", status=200,
        stale=stale, segment=None, action=action, withheld=[], staleness_ms=2.0, freshness_ms=fresh_ms,
        read_ms=fresh_ms - 1, collect_ms=5.0, policy_version=1)


def hand_built_run() -> LiveRun:
    """Alice (high intent) is shown the checkout reminder decided in her day-0 session and converts where the
    baseline would not; the batch shows it to her only in her day-1 session. Bob (low intent) barely responds to
    recommendations decided in his session (0.12 < 0.1 + 0.9 × 0.5 × 0.1 × 0.5). Carol builds no cart. A scraper's
    reads wait out the bound (its events are quarantined)."""
    a0 = _session("alice:0:0", "alice", "2026-11-02T10:00:00.000Z", shown=[REMINDER], p=0.2, draw=0.5, converted=True)
    a1 = _session("alice:1:0", "alice", "2026-11-03T09:00:00.000Z", shown=[REMINDER], p=0.3, draw=0.5, converted=True)
    b1 = _session("bob:1:0", "bob", "2026-11-03T12:00:00.000Z", intent="low", shown=[RECS], p=0.1, draw=0.12,
                  converted=True)
    c1 = _session("carol:1:0", "carol", "2026-11-03T13:00:00.000Z", intent="medium", shown=[])
    bot = _session("s000:1:0", "s000", "2026-11-03T14:00:00.000Z", intent=None, shown=[], actor="stealth_bot")
    reads = [_read(a0, "2026-11-02T10:00:01.000Z", None, fresh_ms=80.0),
             _read(a0, "2026-11-02T10:01:00.000Z", REMINDER, fresh_ms=120.0),
             _read(a1, "2026-11-03T09:00:01.000Z", REMINDER, fresh_ms=150.0),
             _read(b1, "2026-11-03T12:00:01.000Z", RECS, fresh_ms=200.0),
             _read(c1, "2026-11-03T13:00:01.000Z", None, fresh_ms=90.0),
             _read(bot, "2026-11-03T14:00:01.000Z", RECS, fresh_ms=500.0, stale=True),
             _read(bot, "2026-11-03T14:00:02.000Z", RECS, fresh_ms=501.0, stale=True)]
    return LiveRun(run_id="r", scenario="hand-built", seed=1, days=[0, 1], started_at="2026-12-03T10:00:00.000Z",
                   status="complete", pace={"speed": 288.0, "session_speed": 4.0},
                   sessions=[a0, a1, b1, c1, bot], reads=reads)


def test_in_session_rows_count_what_each_world_could_show_on_a_hand_built_run(tmp_path: Path) -> None:
    live = summarize_run(hand_built_run(), tmp_path)
    assert live.metrics == {
        "reads_with_action": {"first_mile": 3, "batch_only": 1},  # the batch answers alice's day-1 read only
        "sessions_shown_action": {"first_mile": 3, "batch_only": 1},
        # alice's day-1 reminder was decided the day before: only alice:0:0 and bob's count
        "sessions_shown_same_session_decision": {"first_mile": 2, "batch_only": 0},
        # with the batch's action alice converts on day 1 (0.5 < 0.3 + 0.7 × 0.5), not on day 0 (nothing shown)
        "conversions_shown": {"first_mile": 3, "batch_only": 1},
        "conversions_all": {"first_mile": 3, "batch_only": 1},
    }
    assert live.denominators == {"human_sessions": 4, "checkout_sessions": 3, "checkout_sessions_shown": 3,
                                 "conversions_nothing_shown": 0, "conversions_shown_nothing_shown": 0}
    # freshness over the humans' fresh reads only: 80, 90, 120, 150, 200
    assert live.freshness_ms == {"p50": 120.0, "p95": 200.0, "p99": 200.0}
    assert live.stale_share == 0.0 and live.bot_stale_share == 1.0
    assert live.reads == {"human": 5, "bot": 2, "answered": 7, "stale": 2, "not_found": 0, "unreachable": 0}


def test_the_newest_written_run_is_the_one_the_report_reads(tmp_path: Path) -> None:
    older = hand_built_run()
    newer = hand_built_run()
    newer.run_id, newer.started_at = "newer", "2026-12-03T11:00:00.000Z"
    newer.sessions = newer.sessions[:1]
    older.write(tmp_path / "live" / "older")
    newer.write(tmp_path / "live" / "newer")
    (tmp_path / "live" / "half-written").mkdir()  # no run.json yet: not a run
    live, why = in_session_serving(tmp_path)
    assert live is not None and why == "" and live.run_id == "newer"
    assert live.denominators["human_sessions"] == 1


def test_without_a_live_run_the_rows_say_not_available_and_why(tmp_path: Path) -> None:
    live, why = in_session_serving(tmp_path)
    assert live is None and str(tmp_path / "live") in why and "--live" in why
    report = LatencyImpact(metrics={k: {"first_mile": 0, "batch_only": 1} for k in METRICS}, live_unavailable=why)
    text = report.to_text()
    for label in LIVE_METRICS.values():
        line = next(line for line in text.splitlines() if line.startswith(label))
        assert line.split()[-2:] == ["n/a", "n/a"]
    assert "no live run recorded" in text
    page = in_session_html(report)
    assert page.count("<td>n/a</td>") == 2 * len(LIVE_METRICS) and "no live run recorded" in page


def test_the_existing_rows_are_unchanged_by_the_in_session_section(tmp_path: Path) -> None:
    report = LatencyImpact(metrics={k: {"first_mile": 0, "batch_only": 1} for k in METRICS},
                           live_unavailable="none")
    with_live = LatencyImpact(metrics=report.metrics, live=summarize_run(hand_built_run(), tmp_path))
    head = report.to_text().split("\nin-session serving")[0]
    assert with_live.to_text().startswith(head)
    assert "show_checkout_reminder" not in head
    live_text = with_live.to_text()[len(head):]
    assert "live run r (complete" in live_text and "next session" in live_text
    assert "read-your-writes round trip" in live_text


@pytest.mark.integration
def test_the_report_carries_the_newest_live_run_beside_its_existing_rows(tmp_path: Path) -> None:
    """Through compute() and write() on a warehouse the real dbt built: the in-session rows are the live run's, the
    existing rows are what the same data directory gives without a live run."""
    from orchestration.report import compute, write
    from tests.orchestration.test_report import DAY0, traffic, write_data_dir

    write_data_dir(tmp_path, traffic(DAY0 + timedelta(days=2, hours=6)))
    without = compute(tmp_path)
    assert without.live is None and "no live run recorded" in without.live_unavailable
    hand_built_run().write(tmp_path / "live" / "r")
    report = compute(tmp_path)
    assert report.metrics == without.metrics and report.enforcement_s == without.enforcement_s
    assert report.live is not None and report.live.metrics == summarize_run(hand_built_run(), tmp_path).metrics
    html_path = write(report, tmp_path)
    numbers = json.loads((tmp_path / "reports" / "latency_impact.json").read_text())
    assert numbers["in_session"]["metrics"]["sessions_shown_same_session_decision"] == {"first_mile": 2,
                                                                                         "batch_only": 0}
    assert 'id="in-session-freshness"' in html_path.read_text()
