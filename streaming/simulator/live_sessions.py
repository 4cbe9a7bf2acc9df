"""What a live run plays: the generator's own sessions for a scenario and day, one :class:`SessionScript` each,
cut at a human's checkout decision (the checkout is played only if the visitor converts).

Part of :mod:`streaming.simulator` (the live mode: :mod:`streaming.simulator.live`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from streaming.simulator.bot_traffic import _backfill_day, _crawler_day, _stealth_day, _wave_day
from streaming.simulator.day import _Day
from streaming.simulator.events import SimEvent
from streaming.simulator.generation import _human_session, _world
from streaming.simulator.population import _plan, _state_at
from streaming.simulator.scenario import Scenario


@dataclass
class SessionScript:
    """One session as the generator wrote it, cut at its checkout decision (humans with a cart)."""

    session: str
    actor: str  # human | crawler | stealth_bot | import
    bot_kind: str | None
    actor_id: str
    intent: str | None
    day: int
    events: list[SimEvent]
    #: the checkout's events, played only if the visitor converts
    checkout: list[SimEvent] = field(default_factory=list)
    #: the generator's baseline conversion probability and draw (None: no cart, no decision)
    p_baseline: float | None = None
    draw: float | None = None

    @property
    def sim_start(self) -> datetime:
        return self.events[0].send_at


def session_scripts(scenario: Scenario, day: int) -> list[SessionScript]:
    """Every session of day ``day`` (humans, bots, the day's import), in simulated start order.

    The browsing is the generator's, event for event; a human session with a cart also carries its checkout (what
    the generator emits when the visitor converts) and the decision's baseline and draw."""
    world = _world(scenario)
    scripts: list[SessionScript] = []
    for h in world.humans:
        state = _state_at(scenario, h, day)
        for plan in _plan(scenario, h, day):
            d = _Day(scenario, day)
            decision: dict[str, float] = {}

            def hook(p_baseline: float, draw: float, d: _Day = d, decision: dict[str, float] = decision) -> None:
                decision.update(p=p_baseline, draw=draw, at=len(d.items))

            _human_session(scenario, d, world.catalog, h, plan, state, checkout_hook=hook)
            cut = int(decision.get("at", len(d.items)))
            checkout_ids = {id(e) for _, _, e in d.items[cut:]}
            ordered = d.sorted()
            browse = [e for e in ordered if id(e) not in checkout_ids]
            if not browse:
                continue
            scripts.append(SessionScript(
                session=browse[0].truth["session"], actor="human", bot_kind=None, actor_id=h.actor_id,
                intent=h.intent, day=day, events=browse, checkout=[e for e in ordered if id(e) in checkout_ids],
                p_baseline=decision.get("p"), draw=decision.get("draw")))
    for bot in world.bots:
        d = _Day(scenario, day)
        if bot.bot_kind == "crawler":
            _crawler_day(scenario, d, world.catalog, bot)
        elif bot.bot_kind == "scraper":
            _stealth_day(scenario, d, world.catalog, bot)
        elif scenario.bot_wave_day is not None and day >= scenario.bot_wave_day:
            _wave_day(scenario, d, world.catalog, bot)
        by_session: dict[str, list[SimEvent]] = {}
        for ev in d.sorted():
            by_session.setdefault(ev.truth["session"], []).append(ev)
        scripts += [SessionScript(session=s, actor=bot.actor, bot_kind=bot.bot_kind, actor_id=bot.actor_id,
                                  intent=None, day=day, events=evs) for s, evs in by_session.items()]
    if scenario.backfill_orders and day == scenario.backfill_day:
        d = _Day(scenario, day)
        _backfill_day(scenario, d, world.catalog, world.humans)
        if d.items:
            scripts.append(SessionScript(session=f"import:{day}", actor="import", bot_kind=None, actor_id="import",
                                         intent=None, day=day, events=d.sorted()))
    scripts.sort(key=lambda s: (s.sim_start, s.session))
    return scripts
