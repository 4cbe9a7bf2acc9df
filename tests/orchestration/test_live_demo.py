"""The live demo's figures from the lake's rows and the simulator's truth (the run itself is `firstmile demo --live`:
it starts the whole platform and plays for minutes, so the suite runs the learning in
tests/ml/test_bot_wave_learning.py and this checks the arithmetic of the timeline)."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestration.live_demo import LiveDemoReport, _per_version, render

T = datetime(2026, 12, 3, 12, tzinfo=UTC)


def test_per_version_recall_counts_wave_events_and_sessions_and_the_humans_each_policy_quarantined():
    truth = {"w1": ("wave", "s1"), "w2": ("wave", "s1"), "w3": ("wave", "s2"), "w4": ("wave", "s3"),
             "h1": ("human", "s9"), "h2": ("human", "s9"), "c1": ("crawler", "s8")}
    decided = [("w1", False, 1, T, False), ("w2", False, 1, T, False), ("h1", False, 1, T, False),
               ("w3", False, 2, T, False), ("w4", True, 2, T, True), ("h2", True, 2, T, True),
               ("c1", True, 2, T, False), ("unknown", True, 2, T, True)]
    v1, v2 = _per_version(decided, truth)
    assert (v1["policy_version"], v1["wave_events"], v1["wave_quarantined"], v1["wave_event_recall"]) == (1, 2, 0, 0.0)
    assert (v1["wave_sessions"], v1["wave_sessions_caught"], v1["human_quarantined_share"]) == (1, 0, 0.0)
    assert (v2["wave_events"], v2["wave_quarantined"], v2["wave_event_recall"]) == (2, 1, 0.5)
    assert (v2["wave_sessions"], v2["wave_sessions_caught"], v2["wave_session_recall"]) == (2, 1, 0.5)
    assert (v2["human_events"], v2["human_quarantined"], v2["human_quarantined_share"]) == (1, 1, 1.0)


def test_the_timeline_says_when_nothing_the_loop_learned_caught_the_wave():
    report = LiveDemoReport(run_id="r", speed=288.0, days=1, users=10, started_at=T.isoformat(),
                            timeline=[(0.0, "wave first seen"), (42.0, "policy v2: bot.mined.0.v2 shadow")])
    text = render(report)
    assert "no wave event was quarantined by what the loop learned" in text and "42.0s  policy v2" in text
    report.first_wave_to_quarantined_s = 300.0
    assert "first wave event quarantined by what the loop learned: 300s" in render(report)
