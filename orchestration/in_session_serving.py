"""In-session serving, for the latency-impact report: what the simulator's live mode recorded when its website read
the profile API mid-session (``<data_dir>/live/<run>/``, :mod:`streaming.simulator.live`), and what a batch-only
platform would have shown the same sessions.

The first-mile column is what happened: the reads' answers, and the visitors' conversions after them. The
batch-only column is computed from the same record: the batch's profile store is rebuilt at each simulated UTC
midnight with the same segment rules over the same events, so a session is shown the action its person last held
before that midnight (the last action the first mile served them then); the visitor's response is the same model
(:func:`streaming.simulator.response.respond`) with the same baseline and draw. Nothing here contacts the platform.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from pathlib import Path

from orchestration.latency_impact import LIVE_NOT_RUN, InSessionServing
from streaming.simulator.live_records import (
    LiveRun,
    PlayedSession,
    latest_run_dir,
    live_dir,
    percentiles,
    read_run,
)
from streaming.simulator.response import respond


def in_session_serving(data_dir: Path) -> tuple[InSessionServing | None, str]:
    """The newest live run under ``data_dir/live`` summarized, or ``(None, why not)`` when there is none.
    An unreadable run raises :class:`streaming.simulator.SimulatorError` naming its directory."""
    run_dir = latest_run_dir(data_dir)
    if run_dir is None:
        return None, LIVE_NOT_RUN.format(where=live_dir(data_dir))
    return summarize_run(read_run(run_dir), run_dir), ""


class _ServedBefore:
    """The action each person was last answered with (``None``: nothing shown, e.g. withheld), by simulated time."""

    def __init__(self, run: LiveRun) -> None:
        by_actor: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        for r in run.reads:
            if r.status == 200:
                by_actor[r.actor_id].append((r.sim_at, r.action))
        self.times = {a: [t for t, _ in sorted(v, key=lambda x: x[0])] for a, v in by_actor.items()}
        self.actions = {a: [x for _, x in sorted(v, key=lambda x: x[0])] for a, v in by_actor.items()}

    def action(self, actor_id: str, before: str) -> str | None:
        times = self.times.get(actor_id, [])
        i = bisect.bisect_left(times, before)
        return self.actions[actor_id][i - 1] if i else None


def _midnight(iso: str) -> str:
    """The simulated UTC midnight on or before ``iso`` (the live record's times are ``_iso``: sortable as text)."""
    return iso[:10] + "T00:00:00.000Z"


def _batch_converted(s: PlayedSession, action: str | None) -> bool:
    assert s.p_baseline is not None and s.draw is not None and s.intent is not None
    return respond(s.p_baseline, s.draw, [action], intent=s.intent, offer_uplift=s.offer_uplift).converted


def summarize_run(run: LiveRun, run_dir: Path) -> InSessionServing:
    """The report's in-session rows from one recorded run."""
    served = _ServedBefore(run)
    humans = [s for s in run.sessions if s.actor == "human"]
    batch_action = {s.session: served.action(s.actor_id, _midnight(s.sim_start)) for s in humans}
    before_session = {s.session: served.action(s.actor_id, s.sim_start) for s in humans}
    human_reads = [r for r in run.reads if r.actor == "human"]
    bot_reads = [r for r in run.reads if r.actor not in ("human", "import")]
    answered = [r for r in human_reads if r.status == 200]
    fresh = [r for r in answered if r.stale is False]
    bots_answered = [r for r in bot_reads if r.status == 200]
    checkout = [s for s in humans if s.decision]
    shown = [s for s in checkout if s.response_action]
    metrics: dict[str, dict[str, int | None]] = {
        "reads_with_action": {"first_mile": sum(1 for r in answered if r.action),
                              "batch_only": sum(1 for r in human_reads if batch_action.get(r.session))},
        "sessions_shown_action": {"first_mile": sum(1 for s in humans if s.shown),
                                  "batch_only": sum(1 for s in humans if batch_action[s.session])},
        # by construction the nightly run cannot decide within a session: 0, not a measurement
        "sessions_shown_same_session_decision": {
            "first_mile": sum(1 for s in humans if any(a != before_session[s.session] for a in s.shown)),
            "batch_only": 0},
        "conversions_shown": {"first_mile": sum(1 for s in shown if s.converted),
                              "batch_only": sum(_batch_converted(s, batch_action[s.session]) for s in shown)},
        "conversions_all": {"first_mile": sum(1 for s in checkout if s.converted),
                            "batch_only": sum(_batch_converted(s, batch_action[s.session]) for s in checkout)},
    }
    return InSessionServing(
        run_dir=str(run_dir), run_id=run.run_id, status=run.status, scenario=run.scenario, pace=run.pace,
        metrics=metrics,
        denominators={"human_sessions": len(humans), "checkout_sessions": len(checkout),
                      "checkout_sessions_shown": len(shown),
                      "conversions_nothing_shown": sum(1 for s in checkout if s.baseline_converted),
                      "conversions_shown_nothing_shown": sum(1 for s in shown if s.baseline_converted)},
        reads={"human": len(human_reads), "bot": len(bot_reads), "answered": len(answered) + len(bots_answered),
               "stale": sum(1 for r in answered + bots_answered if r.stale),
               "not_found": sum(1 for r in run.reads if r.status == 404),
               "unreachable": sum(1 for r in run.reads if r.status == 0)},
        freshness_ms=percentiles([r.freshness_ms for r in fresh]),
        staleness_ms=percentiles([r.staleness_ms for r in fresh if r.staleness_ms is not None]),
        collect_ms=percentiles([r.collect_ms for r in human_reads]),
        stale_share=round(1 - len(fresh) / len(answered), 4) if answered else None,
        bot_stale_share=(round(sum(1 for r in bots_answered if r.stale) / len(bots_answered), 4)
                         if bots_answered else None))
