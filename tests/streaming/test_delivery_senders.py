"""What each answer of a real HTTP destination means (streaming/delivery/senders.py), and the destinations file's
errors. Every status class: 200, 400, 408, 429 with Retry-After, 500, a timeout, connection refused, a redirect
loop, a 10 MB answer."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest

from streaming.broker import free_port
from streaming.delivery.config import DestinationConfigError, parse_destinations
from streaming.delivery.senders import SegmentSender, WebhookSender, to_segment
from streaming.delivery.sink import backoff_s
from tests.streaming import http_destination as http

EVENTS = [{"event_id": f"e-{i}", "profile_id": "p-1", "type": "track", "event_name": "Product Viewed",
           "event_ts": "2026-11-02T12:00:00Z", "anonymous_id": "a-1", "properties": {"price": 10}} for i in range(3)]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[http.Destination, str]]:
    dest = http.Destination(hang_s=3.0)
    srv, url = http.start(dest)
    yield dest, url
    srv.shutdown()


def webhook(url: str, *, max_events: int = 100, timeout_s: float = 10.0, **extra: object) -> WebhookSender:
    doc = {"destinations": [{"id": "hook", "type": "webhook", "topic": "dest.sales", "url": url,
                             "timeout_s": timeout_s, "batching": {"max_events": max_events}, **extra}]}
    return WebhookSender(parse_destinations(doc).destinations[0])


@pytest.mark.parametrize(("steps", "outcome", "status"), [
    ([200], "delivered", 200), ([204], "delivered", 204), ([400], "final", 400), ([404], "final", 404),
    ([408], "retry", 408), ([500], "retry", 500), ([503], "retry", 503),
])
def test_each_status_class_means_what_it_should(server, steps, outcome, status) -> None:
    dest, url = server
    path = f"/status-{status}"
    dest.script(path, *steps)
    result = webhook(url + path).send(EVENTS)
    assert (result.outcome, result.http_status) == (outcome, status)
    if outcome != "delivered":
        assert "scripted" in result.body


def test_a_429_is_retried_no_sooner_than_its_retry_after(server) -> None:
    dest, url = server
    dest.script("/busy", ("status", 429, {"Retry-After": "7"}))
    result = webhook(url + "/busy").send(EVENTS)
    assert (result.outcome, result.retry_after_s) == ("retry", 7.0)
    assert backoff_s(1, result.retry_after_s, random.Random(0)) >= 7.0  # never sooner than the answer asked


def test_timeouts_refusals_redirect_loops_and_huge_answers(server) -> None:
    dest, url = server
    dest.script("/hang", "hang")
    started = time.monotonic()
    hung = webhook(url + "/hang", timeout_s=0.5).send(EVENTS)
    assert hung.outcome == "retry" and "Timeout" in (hung.error or "") and time.monotonic() - started < 2.5
    refused = webhook(f"http://127.0.0.1:{free_port()}/x").send(EVENTS)
    assert refused.outcome == "retry" and "Connect" in (refused.error or "")
    dest.script("/loop", "loop")
    looped = webhook(url + "/loop").send(EVENTS)
    assert looped.outcome == "final" and "redirect" in (looped.error or "")
    dest.script("/big", "big")
    big = webhook(url + "/big").send(EVENTS)
    assert big.outcome == "retry" and big.http_status == 500 and len(big.body) <= 2048


def test_a_webhook_batch_is_signed_and_carries_its_idempotency_key(server, monkeypatch) -> None:
    dest, url = server
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    assert webhook(url + "/signed", secret_env="HOOK_SECRET").send(EVENTS).outcome == "delivered"
    got = dest.on("/signed")[-1]
    assert http.signature_ok(got, b"s3cret") and not http.signature_ok(got, b"other")
    assert [e["event_id"] for e in got.json()["batch"]] == ["e-0", "e-1", "e-2"]
    assert got.headers["idempotency-key"].startswith("batch-")
    assert webhook(url + "/single", max_events=1).send(EVENTS[:1]).outcome == "delivered"
    single = dest.on("/single")[-1]
    assert single.json()["event_id"] == "e-0" and single.headers["idempotency-key"] == "e-0"


def test_a_webhook_batch_sent_again_carries_the_same_idempotency_key_whatever_its_order(server) -> None:
    """A batch re-sent after a crash (or a retry of the same events) must be recognisable by its header alone."""
    dest, url = server
    hook = webhook(url + "/again")
    for events in (EVENTS, EVENTS, list(reversed(EVENTS)), EVENTS[:2], EVENTS + EVENTS[:1]):
        assert hook.send(events).outcome == "delivered"
        time.sleep(0.01)  # a later sent_at: the body differs, the key must not
    first, again, reordered, fewer, repeated = (r.headers["idempotency-key"] for r in dest.on("/again")[-5:])
    assert first == again == reordered == repeated  # the same set of event ids, sent later, in another order
    assert fewer != first  # another set of events is another batch
    bodies = [r.body for r in dest.on("/again")[-5:]]
    assert bodies[0] != bodies[1]  # it is the key that is stable, not just the bytes
    # the same events for another destination on the same receiver are not its duplicates
    other = WebhookSender(parse_destinations({"destinations": [{"id": "hook-2", "type": "webhook",
                                                                "topic": "dest.sales", "url": url + "/again"}]}
                                             ).destinations[0])
    assert other.send(EVENTS).outcome == "delivered"
    assert dest.on("/again")[-1].headers["idempotency-key"] != first


def test_a_segment_destination_posts_a_batch_with_message_ids(server, monkeypatch) -> None:
    dest, url = server
    monkeypatch.setenv("SEG_KEY", "wk-1")
    doc = {"destinations": [{"id": "seg", "type": "segment", "topic": "dest.marketing", "url": url,
                             "write_key_env": "SEG_KEY"}]}
    assert SegmentSender(parse_destinations(doc).destinations[0]).send(EVENTS).outcome == "delivered"
    got = dest.on("/v1/batch")[-1]
    assert [e["messageId"] for e in got.json()["batch"]] == ["e-0", "e-1", "e-2"]
    assert got.headers["authorization"] == "Basic d2stMTo="
    assert to_segment(EVENTS[0])["event"] == "Product Viewed"


@pytest.mark.parametrize(("doc", "field"), [
    ({"destinations": [{"id": "a", "type": "webhook", "topic": "dest.sales"}]}, "url"),
    ({"destinations": [{"id": "a", "type": "ftp", "topic": "dest.sales", "url": "http://x"}]},
     "destinations[0].type"),
    ({"destinations": [{"id": "a", "type": "webhook", "topic": "events.raw", "url": "http://x"}]}, "topic"),
    ({"destinations": [{"id": "a", "type": "webhook", "topic": "dest.sales", "url": "http://x",
                        "batching": {"max_events": 0}}]}, "destinations[0].batching.max_events"),
    ({"destinations": [{"id": "a", "type": "postgres", "topic": "dest.sales"}]}, "dsn_env"),
    ({"destinations": [{"id": "a", "type": "webhook", "topic": "dest.sales", "url": "http://x"},
                       {"id": "a", "type": "webhook", "topic": "dest.sales", "url": "http://x"}]}, "unique"),
    ({"destinations": [{"id": "a", "type": "webhook", "topic": "dest.sales", "url": "http://x", "urll": 1}]},
     "destinations[0].urll"),
])
def test_a_config_error_names_the_field(doc, field) -> None:
    with pytest.raises(DestinationConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_destinations(doc)
