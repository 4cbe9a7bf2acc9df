"""One simulated day in the making: its output buffer and the emitter that writes one actor's wire events into it.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from streaming.simulator.events import SimEvent, _iso, _uuid
from streaming.simulator.scenario import SITE, Scenario

# --- the generator --------------------------------------------------------------------------------------------------

class _Day:
    """Collects one day's events; ``order`` keeps sorting deterministic."""

    def __init__(self, sc: Scenario, day: int) -> None:
        self.sc = sc
        self.day = day
        self.day_start = datetime(sc.start_date.year, sc.start_date.month, sc.start_date.day, tzinfo=UTC) + \
            timedelta(days=day)
        self.day_end = self.day_start + timedelta(days=1)
        self.items: list[tuple[datetime, int, SimEvent]] = []

    def add(self, payload: dict[str, Any], truth: dict[str, Any], send_at: datetime) -> None:
        truth["event_id"] = payload["messageId"]
        truth["day"] = self.day
        self.items.append((send_at, len(self.items), SimEvent(payload, truth, send_at)))

    def sorted(self) -> list[SimEvent]:
        self.items.sort(key=lambda x: (x[0], x[1]))
        return [e for _, _, e in self.items]


class _Emitter:
    """Builds the wire events of one device session: clock skew, sentAt, context, identity carried forward."""

    def __init__(self, day: _Day, rng: random.Random, *, anonymous_id: str | None, user_id: str | None, ip: str | None,
                 user_agent: str | None, locale: str | None, timezone: str | None, skew_s: float,
                 truth: dict[str, Any], library: str = "analytics.js") -> None:
        self.day, self.rng = day, rng
        self.anonymous_id, self.user_id = anonymous_id, user_id
        self.ip, self.user_agent, self.locale, self.timezone = ip, user_agent, locale, timezone
        self.skew = timedelta(seconds=skew_s)
        self.truth = truth
        self.library = library
        self.page: dict[str, str] | None = None
        self.tcf: str | None = None
        self.last_send: datetime | None = None
        self.count = 0

    def open_page(self, path: str, title: str, referrer: str = "") -> None:
        self.page = {"url": SITE + path, "path": path, "referrer": referrer, "title": title}

    def emit(self, t: datetime, type_: str, **body: Any) -> bool:
        """Emit one event at true time ``t``. Returns False (and emits nothing) past the day's end."""
        t = t.replace(microsecond=t.microsecond // 1000 * 1000)
        if t >= self.day.day_end:
            return False
        send_at = t + timedelta(milliseconds=self.rng.randint(15, 250))
        if self.last_send is not None and send_at <= self.last_send:
            send_at = self.last_send + timedelta(milliseconds=1)
        if send_at >= self.day.day_end:
            return False
        self.last_send = send_at
        context: dict[str, Any] = {"library": {"name": self.library, "version": "3.5.1" if self.library ==
                                               "analytics.js" else "2.3.3"}}
        if self.ip:
            context["ip"] = self.ip
        if self.user_agent:
            context["userAgent"] = self.user_agent
        if self.locale:
            context["locale"] = self.locale
        if self.timezone:
            context["timezone"] = self.timezone
        if self.page:
            context["page"] = dict(self.page)
        if self.tcf:
            context["consent"] = {"tcString": self.tcf}
        payload: dict[str, Any] = {"type": type_, "messageId": _uuid(self.rng)}
        if self.anonymous_id:
            payload["anonymousId"] = self.anonymous_id
        if self.user_id:
            payload["userId"] = self.user_id
        payload["timestamp"] = _iso(t + self.skew)
        if self.library == "analytics.js":
            payload["sentAt"] = _iso(send_at + self.skew)
        payload["context"] = context
        payload.update(body)
        self.day.add(payload, dict(self.truth), send_at)
        self.count += 1
        return True

    def page_view(self, t: datetime, name: str, category: str | None = None) -> bool:
        props = dict(self.page or {})
        if category:
            props["category"] = category
        return self.emit(t, "page", name=name, properties=props)

    def track(self, t: datetime, event: str, properties: dict[str, Any]) -> bool:
        return self.emit(t, "track", event=event, properties=properties)
