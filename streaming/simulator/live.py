"""Live mode: the scenario's visitors play their sessions now, through the real collector, and the simulated website
asks the profile API mid-session what to show; visitors respond to what they are shown.

The ahead-of-time generator (:func:`streaming.simulator.generate`) writes whole days before anything is sent, so no
visitor can react to a decision. Here the same sessions (the same people, pages, products and draws as the
generator's, for a given seed) are played in compressed real time:

* **Pace.** The day's clock runs ``speed`` times faster than the wall clock (default 288: a simulated day in five
  minutes), so a session starts when its simulated start time comes up. Inside a session the visitor's gaps run
  ``session_speed`` times faster (default 4) and no gap is longer than ``max_gap_s`` simulated seconds (default 120):
  a session's rhythm is not compressed as hard as the day, because the hot path judges rhythm (events per minute,
  regularity) and a person at 288x is a bot. Every event is stamped with the wall-clock time it is sent
  (``timestamp`` = ``sentAt`` = now, plus the device's clock skew), one event per request, as analytics.js sends.
  With a compressed day one device's sessions are minutes apart on the wall clock, so the hot path (sessions split
  on 30 minutes of event time) sees them as one session.
  One person plays one session at a time (a session starts late, ``start_lag_ms``, while the same person's
  previous one is still playing).
* **Reads.** After each ``Product Viewed`` and ``Product Added`` the website asks ``GET /v1/profiles?anonymousId=
  <its id>&after=<the collector's token>`` with a publishable key (or a server key) and shows the action it gets
  (stale or not: a page shows what it has). Reads run beside the session (a page does not stop the visitor while
  it asks); the visitor's checkout decision waits for them. Every read is recorded (:class:`ServedRead`).
* **Response.** At the checkout decision the hidden-intent model (:mod:`streaming.simulator.response`) decides with
  the generator's own baseline and draw whether the strongest action shown converts the visitor; the checkout
  events are played only if it does. Bots are played as generated and ignore what they are shown.
* **Records.** :func:`play` returns a :class:`LiveRun`; :meth:`LiveRun.write` writes ``run.json``,
  ``sessions.jsonl`` and ``reads.jsonl`` into a run directory (default ``<data_dir>/live/<run id>``), which the
  latency-impact report reads (:mod:`streaming.simulator.live_records`); the sessions played are
  :mod:`streaming.simulator.live_sessions`.

Each run derives fresh message ids (a uuid5 of the run id and the generator's id), so playing a scenario again
against the same platform is new traffic, not retries; device and user ids are the generator's (people come back).

Part of :mod:`streaming.simulator`.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson

from streaming.simulator.delivery import KeepAliveHttp, basic_auth, batch_url
from streaming.simulator.events import SimEvent, _iso
from streaming.simulator.live_records import LiveRun, PlayedSession, ServedRead
from streaming.simulator.live_sessions import SessionScript, session_scripts
from streaming.simulator.response import respond
from streaming.simulator.scenario import SITE, Scenario, SimulatorError

logger = logging.getLogger(__name__)

#: After these events the website asks the profile API what to show (a product page, an add to cart).
READ_AFTER = ("Product Viewed", "Product Added")



# --- where and how fast -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LiveTarget:
    """The platform to play against. ``read_key``: a publishable key (sent with ``origin``) or a server key;
    ``serving_url=None`` plays without reads (traffic only)."""

    collector_url: str
    write_key: str
    serving_url: str | None = None
    read_key: str | None = None
    origin: str = SITE

    def __post_init__(self) -> None:
        if self.serving_url and not self.read_key:
            raise ValueError("reads need a read key (a publishable or server key of the serving process)")


@dataclass(frozen=True)
class Pace:
    """How fast to play. ``speed``: simulated seconds per wall second for the day's clock (when sessions start);
    ``session_speed``: the same inside a session; ``max_gap_s``: the longest simulated gap inside a session;
    ``concurrency``: sessions played at once (later ones wait and start late: ``start_lag_ms``); ``wait_ms``: the
    read's bounded wait (None: the serving process's default, 500 ms)."""

    speed: float = 288.0
    session_speed: float = 4.0
    max_gap_s: float = 120.0
    concurrency: int = 64
    read_concurrency: int = 32
    wait_ms: int | None = None

    def __post_init__(self) -> None:
        if not (self.speed > 0 and self.session_speed > 0 and self.max_gap_s > 0):
            raise ValueError("speed, session_speed and max_gap_s must be > 0")
        if self.concurrency < 1 or self.read_concurrency < 1:
            raise ValueError("concurrency and read_concurrency must be >= 1")



# --- the player -------------------------------------------------------------------------------------------------------

class _Player:
    """Plays sessions (one thread each, from the session pool) and their reads (the read pool)."""

    def __init__(self, scenario: Scenario, target: LiveTarget, pace: Pace, run_id: str, stop: threading.Event,
                 reads_pool: ThreadPoolExecutor) -> None:
        self.scenario, self.target, self.pace, self.run_id, self.stop = scenario, target, pace, run_id, stop
        self.reads_pool = reads_pool
        self.http = KeepAliveHttp(timeout=30.0 + (pace.wait_ms or 500) / 1000)
        self.namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"firstmile-live:{run_id}")
        self.batch_url = batch_url(target.collector_url)
        self.collect_headers = {"Content-Type": "application/json", "Authorization": basic_auth(target.write_key),
                                "User-Agent": "firstmile-simulator-live/1"}
        self.read_headers = {"Authorization": basic_auth(target.read_key or ""), "Origin": target.origin}

    # one event through the collector ------------------------------------------------------------------------------
    def send(self, ev: SimEvent) -> tuple[dict[str, Any], str, float, float]:
        """POST one event stamped now; returns (payload sent, token, monotonic time of the 200, round trip ms)."""
        payload = dict(ev.payload)
        payload["messageId"] = str(uuid.uuid5(self.namespace, payload["messageId"]))
        if "sentAt" in payload:  # a browser event: it happens now (an import keeps its historical timestamp)
            skew = datetime.fromisoformat(payload["sentAt"].replace("Z", "+00:00")) - ev.send_at
            now = _iso(datetime.now(UTC) + skew)
            payload["timestamp"] = payload["sentAt"] = now
        body = orjson.dumps({"batch": [payload]})
        for attempt in range(11):
            started = time.monotonic()
            try:
                status, headers, data = self.http.request("POST", self.batch_url, body, self.collect_headers)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == 10:
                    raise SimulatorError(f"collector unreachable: {exc}") from exc
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
                continue
            done = time.monotonic()
            if 200 <= status < 300:
                token = str(orjson.loads(data).get("token") or "") if data else ""
                return payload, token, done, (done - started) * 1000
            if status in (429, 503) and attempt < 10:
                try:
                    wait = float(headers.get("retry-after", ""))
                except ValueError:
                    wait = min(5.0, 0.2 * 2 ** attempt)
                time.sleep(max(0.0, min(wait, 60.0)))
                continue
            raise SimulatorError(f"collector answered {status}: {data[:300].decode(errors='replace')}")
        raise SimulatorError("unreachable")

    # one read of the profile API ----------------------------------------------------------------------------------
    def read(self, script: SessionScript, ev: SimEvent, payload: dict[str, Any], token: str, acked: float,
             collect_ms: float) -> ServedRead:
        assert self.target.serving_url is not None
        anon = payload.get("anonymousId") or ""
        url = (f"{self.target.serving_url.rstrip('/')}/v1/profiles?anonymousId={quote(anon, safe='')}"
               f"&after={quote(token, safe=',.')}" + (f"&wait_ms={self.pace.wait_ms}" if self.pace.wait_ms is not None
                                                       else ""))
        started = time.monotonic()
        try:
            status, _, data = self.http.request("GET", url, None, self.read_headers)
        except (OSError, http.client.HTTPException):
            status, data = 0, b""
        done = time.monotonic()
        if status in (400, 401, 403):
            self.stop.set()
            raise SimulatorError(f"the profile API answered {status} ({data[:200].decode(errors='replace')}): check "
                                 "the read key, its origins (the website sends Origin: " + self.target.origin + ")")
        doc = orjson.loads(data) if status == 200 and data else {}
        return ServedRead(
            run_id=self.run_id, session=script.session, actor_id=script.actor_id, actor=script.actor,
            bot_kind=script.bot_kind, intent=script.intent, anonymous_id=anon or None, day=script.day,
            sim_at=_iso(ev.send_at), sent_at=payload.get("timestamp", ""), event=str(payload.get("event")),
            event_id=payload["messageId"], token=token, status=status,
            stale=doc.get("stale") if status == 200 else None, segment=doc.get("segment"), action=doc.get("action"),
            withheld=sorted(doc.get("withheld") or {}), staleness_ms=doc.get("staleness_ms"),
            freshness_ms=round((done - acked) * 1000, 2), read_ms=round((done - started) * 1000, 2),
            collect_ms=round(collect_ms, 2), policy_version=doc.get("policy_version"))

    # one session --------------------------------------------------------------------------------------------------
    def _play_events(self, script: SessionScript, events: list[SimEvent], start: float, offset_s: float,
                     reads: list[Future[ServedRead]]) -> tuple[int, float, str | None]:
        """Send ``events`` at the session's pace from ``offset_s`` (simulated seconds after ``start``); returns
        (events sent, the offset reached, the device id)."""
        sent, anon = 0, None
        prev = events[0].send_at if events else None
        for ev in events:
            assert prev is not None
            offset_s += min(max(0.0, (ev.send_at - prev).total_seconds()), self.pace.max_gap_s)
            prev = ev.send_at
            ahead = start + offset_s / self.pace.session_speed - time.monotonic()
            if ahead > 0 and self.stop.wait(ahead):
                break
            if self.stop.is_set():
                break
            payload, token, acked, collect_ms = self.send(ev)
            sent += 1
            anon = payload.get("anonymousId") or anon
            if self.target.serving_url and token and payload.get("event") in READ_AFTER:
                reads.append(self.reads_pool.submit(self.read, script, ev, payload, token, acked, collect_ms))
        return sent, offset_s, anon

    def play_session(self, script: SessionScript, due: float,
                     after: Future[tuple[PlayedSession, list[ServedRead]]] | None = None,
                     ) -> tuple[PlayedSession, list[ServedRead]]:
        """Play one session (after the same person's previous one, ``after``, has ended); ``due``: when it was
        scheduled to start (monotonic), for its recorded start lag."""
        if after is not None:
            wait((after,))  # submitted earlier, so already running or done: no deadlock in a FIFO pool
        start = time.monotonic()
        wall_start = datetime.now(UTC)
        futures: list[Future[ServedRead]] = []
        sent, offset_s, anon = self._play_events(script, script.events, start, 0.0, futures)
        reads = [f.result() for f in futures]
        shown: list[str] = []
        for r in reads:
            if r.status == 200 and r.action and r.action not in shown:
                shown.append(r.action)
        decision = script.p_baseline is not None and script.draw is not None and not self.stop.is_set()
        response = None
        if decision:
            assert script.p_baseline is not None and script.draw is not None and script.intent is not None
            response = respond(script.p_baseline, script.draw, [r.action for r in reads if r.status == 200],
                               intent=script.intent, offer_uplift=self.scenario.offer_uplift)
            if response.converted and script.checkout:
                gap = (script.checkout[0].send_at - script.events[-1].send_at).total_seconds()
                more, _, _ = self._play_events(script, script.checkout, start,
                                               offset_s + min(max(0.0, gap), self.pace.max_gap_s), [])
                sent += more
            for r in reads:
                r.converted_after = response.converted
        played = PlayedSession(
            run_id=self.run_id, session=script.session, actor_id=script.actor_id, actor=script.actor,
            bot_kind=script.bot_kind, intent=script.intent, anonymous_id=anon, day=script.day,
            sim_start=_iso(script.sim_start), wall_start=_iso(wall_start),
            start_lag_ms=round(max(0.0, start - due) * 1000, 1),
            duration_ms=round((time.monotonic() - start) * 1000, 1), events_sent=sent, reads=len(reads), shown=shown,
            decision=decision, p_baseline=script.p_baseline, draw=script.draw,
            offer_uplift=self.scenario.offer_uplift, response_action=response.action if response else None,
            p_response=round(response.probability, 6) if response else None,
            converted=response.converted if response else None,
            baseline_converted=(script.draw < script.p_baseline) if decision and script.draw is not None
            and script.p_baseline is not None else None)
        return played, reads


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def play(scenario: Scenario, target: LiveTarget, *, pace: Pace | None = None, days: Iterable[int] | None = None,
         select: Callable[[SessionScript], bool] | None = None, run_id: str | None = None,
         stop: threading.Event | None = None,
         progress: Callable[[int, int], None] | None = None) -> LiveRun:
    """Play the scenario's sessions of ``days`` (default: all) against ``target`` at ``pace``; return the run.

    ``select`` keeps only some sessions (e.g. a bot wave's); ``stop`` ends the run early (sessions stop between
    events; the run is ``interrupted``); ``progress(sessions done, sessions total)`` is called as sessions finish.
    Raises :class:`SimulatorError` when the collector fails after retries or the API refuses the read key.
    """
    pace = pace or Pace()
    stop = stop or threading.Event()
    day_list = list(range(scenario.days)) if days is None else list(days)
    for d in day_list:
        if not 0 <= d < scenario.days:
            raise ValueError(f"day must be in 0..{scenario.days - 1}, got {d}")
    scripts = [s for d in day_list for s in session_scripts(scenario, d) if select is None or select(s)]
    scripts.sort(key=lambda s: (s.sim_start, s.session))
    run = LiveRun(run_id=run_id or new_run_id(), scenario=scenario.name, seed=scenario.seed, days=day_list,
                  started_at=_iso(datetime.now(UTC)),
                  pace=asdict(pace), target={"collector_url": target.collector_url, "serving_url": target.serving_url,
                                             "origin": target.origin})
    if not scripts:
        run.status, run.finished_at = "complete", _iso(datetime.now(UTC))
        return run
    first = min(day_list)
    sim0 = datetime(scenario.start_date.year, scenario.start_date.month, scenario.start_date.day,
                    tzinfo=UTC) + timedelta(days=first)
    wall0 = time.monotonic() + 0.2
    done = 0
    lock = threading.Lock()
    with ThreadPoolExecutor(pace.read_concurrency, thread_name_prefix="live-read") as reads_pool, \
            ThreadPoolExecutor(pace.concurrency, thread_name_prefix="live-session") as sessions_pool:
        player = _Player(scenario, target, pace, run.run_id, stop, reads_pool)

        def finished(future: Future[tuple[PlayedSession, list[ServedRead]]]) -> None:
            nonlocal done
            if future.exception() is not None:
                stop.set()  # fail the run, not only the session: the collector or the key is at fault
            with lock:
                done += 1
                count = done
            if progress is not None:
                progress(count, len(scripts))

        futures: list[Future[tuple[PlayedSession, list[ServedRead]]]] = []
        previous: dict[str, Future[tuple[PlayedSession, list[ServedRead]]]] = {}
        try:
            for script in scripts:
                due = wall0 + (script.sim_start - sim0).total_seconds() / pace.speed
                ahead = due - time.monotonic()
                if (ahead > 0 and stop.wait(ahead)) or stop.is_set():
                    break
                # one person plays one session at a time: a compressed day would otherwise overlap a person's
                # sessions on one device, and the hot path would rightly see a machine's rate
                before = previous.get(script.actor_id) if script.actor == "human" else None
                future = sessions_pool.submit(player.play_session, script, due, before)
                future.add_done_callback(finished)
                futures.append(future)
                if script.actor == "human":
                    previous[script.actor_id] = future
        except BaseException:
            stop.set()
            raise
        finally:
            failures = [exc for f in futures if (exc := f.exception()) is not None]
    if failures:
        raise failures[0]
    for future in futures:
        played, reads = future.result()
        run.sessions.append(played)
        run.reads.extend(reads)
    run.sessions.sort(key=lambda s: (s.sim_start, s.session))
    run.reads.sort(key=lambda r: (r.sim_at, r.session))
    run.status = "interrupted" if stop.is_set() else "complete"
    run.finished_at = _iso(datetime.now(UTC))
    return run
