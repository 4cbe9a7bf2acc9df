"""The profile inspector (``GET /profiles/{id}`` on ``python -m streaming.serving``), rendered by a real headless
Chromium for a profile that went through the real collector and worker (embedded broker, subprocesses: the
``Served`` platform of ``test_serving.py``).

Chromium is driven over the DevTools protocol (``--remote-debugging-port``) rather than ``--dump-dom``: the page
needs the server key as HTTP Basic credentials (sent as a request header, as a back office's browser would after
the Basic prompt), the main document's status and headers are read from the browser's own network events, and
what the test checks is ``innerText`` of laid-out elements with a non-empty box: text a person would see, not only
markup present in the DOM.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.orchestration.test_uis import chromium
from tests.streaming.test_serving import DE_IP, PUBLISHABLE, SERVER, SHOP, Served

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ANON, USER = "insp-dev", "u-inspector"
CONSENT = {"analytics": True, "personalization": True, "marketing": False, "sales": False}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0",
         "--remote-allow-origins=*"]
#: What the page shows, read in the browser: each table's rows as visible text, and whether it has a box.
READ_PAGE = """(() => {
  const table = id => { const el = document.getElementById(id);
    return el ? Array.from(el.rows).map(r => Array.from(r.cells).map(c => c.innerText.trim())) : null; };
  const shown = id => { const el = document.getElementById(id); if (!el) return false;
    const box = el.getBoundingClientRect(), style = getComputedStyle(el);
    return box.width > 0 && box.height > 0 && style.visibility !== 'hidden' && style.display !== 'none'; };
  return {title: document.title, text: document.body ? document.body.innerText : '',
          state: table('state'), consent: table('consent'), events: table('events'),
          shown: {state: shown('state'), consent: shown('consent'), events: shown('events')}};
})()"""


class Browser:
    """One headless Chromium and one page, over the DevTools protocol (``websockets``' sync client)."""

    def __init__(self, profile_dir: Path) -> None:
        from websockets.sync.client import connect

        profile_dir.mkdir(parents=True)
        self.log = (profile_dir.parent / f"{profile_dir.name}-chromium.log").open("wb")
        self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Chromium did not open its DevTools port (exit {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.loads(response.read()) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = 0
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Network.enable")

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self.ids:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def open(self, url: str, *, key: str | None, timeout: float = 30) -> tuple[dict[str, Any], dict[str, Any]]:
        """Navigate (with ``key`` as HTTP Basic credentials, or none) until loaded; returns the main document's
        response as the browser received it, and what :data:`READ_PAGE` reads from the page."""
        headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()} if key else {}
        self.call("Network.setExtraHTTPHeaders", headers=headers)
        self.events.clear()
        frame = self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not load within {timeout:.0f}s")
            self.events.append(json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
        document = next(e["params"]["response"] for e in self.events
                        if e.get("method") == "Network.responseReceived" and e["params"].get("type") == "Document"
                        and e["params"].get("frameId") == frame.get("frameId"))
        page = self.call("Runtime.evaluate", expression=READ_PAGE, returnByValue=True)["result"]["value"]
        return document, page

    def close(self) -> None:
        self.ws.close()
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


def _rows(table: list[list[str]] | None) -> dict[str, str]:
    return {row[0]: row[1] for row in table or [] if len(row) == 2}


@pytest.fixture(scope="module")
def inspected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, list[str]]]:
    """A platform, and one profile that went through the collector and worker: an EU visitor who identifies,
    grants analytics and personalization but not marketing or sales, views two products and adds one to the
    cart. Yields the platform and the event ids it sent, oldest first."""
    chromium()  # skip before starting anything when there is no browser
    platform = Served(tmp_path_factory.mktemp("inspector"))
    try:
        sent: list[str] = []

        def track(**kw: Any) -> str:
            token = platform.track(ANON, ip=DE_IP, **kw)
            sent.append(f"s-{ANON}-{platform.seq}")  # Served.track's messageId, the event id downstream
            return token

        track(user=USER, type_="identify")
        track(type_="consent", consent=CONSENT)
        track(event="Product Viewed")
        track(event="Product Viewed")
        token = track(event="Product Added")
        for _ in range(12):  # the worker joins its group first (a few seconds on Tansu)
            answer = platform.get(f"/v1/profiles?anonymousId={ANON}&after={token}&wait_ms=5000")
            if answer.status_code == 200 and not answer.json()["stale"]:
                break
        assert answer.status_code == 200 and not answer.json()["stale"], answer.text
        assert answer.json()["profile_id"] == USER
        yield platform, sent
    finally:
        platform.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


def test_the_inspector_shows_live_state_consent_and_each_recent_event_with_its_ledger(inspected, browser) -> None:
    platform, sent = inspected
    document, page = browser.open(f"http://127.0.0.1:{platform.port}/profiles/{USER}", key=SERVER)
    assert document["status"] == 200 and document["mimeType"] == "text/html", document
    assert page["shown"] == {"state": True, "consent": True, "events": True}, page["text"][:2000]
    assert USER in page["title"]

    state = _rows(page["state"])
    assert state["profile id"] == USER and ANON in state["devices"]
    assert state["segment"] == "cart_builder" and state["action"] == "show_checkout_reminder"
    assert state["policy version"] == "1" and state["last event at"] not in ("", "—")

    assert _rows(page["consent"]) == {p: "granted" if g else "denied" for p, g in CONSENT.items()}

    header, *events = page["events"]
    assert header == ["event id", "event time", "event", "went to", "ledger"]
    assert [row[0] for row in events] == sent[::-1], "every decided event of the profile, newest first"
    assert all(row[4].startswith("{") for row in events), "every event shows its ledger"
    newest = events[0]
    assert newest[2] == "track Product Added" and newest[3] == "dest.warehouse"  # analytics only: no marketing
    ledger = json.loads(newest[4])  # the ledger, as visible text, is the JSON the worker wrote
    assert ledger["decision"] == {"segment": "cart_builder", "action": "show_checkout_reminder"}
    assert ledger["destinations"]["dest.warehouse"] == "sent"
    assert ledger["destinations"]["dest.marketing"] != "sent"
    assert ledger["purposes"] == CONSENT
    consent_event = json.loads(events[-2][4])
    assert consent_event["consent_changed"], "the consent event's ledger says what it changed"
    for row in events:
        assert json.loads(row[4])["policy_version"] == 1


def test_without_a_server_key_the_inspector_answers_401_with_a_basic_challenge(inspected, browser) -> None:
    platform, _ = inspected
    url = f"http://127.0.0.1:{platform.port}/profiles/{USER}"
    document, page = browser.open(url, key=None)
    assert document["status"] == 401, document
    challenge = {k.lower(): v for k, v in document["headers"].items()}.get("www-authenticate", "")
    assert challenge.startswith("Basic realm="), document["headers"]
    assert page["state"] is None and page["events"] is None and "cart_builder" not in page["text"]

    document, page = browser.open(url, key="not-a-key")
    assert document["status"] == 401 and page["state"] is None
    # a publishable key (a browser's) cannot open the inspector
    answer = httpx.get(url, auth=(PUBLISHABLE, ""), headers={"origin": SHOP}, timeout=10)
    assert answer.status_code == 403 and "cart_builder" not in answer.text
    bare = httpx.get(url, timeout=10)
    assert bare.status_code == 401 and bare.headers["www-authenticate"].startswith("Basic realm=")
