"""How a batch reaches a destination, and what the answer means: delivered, retry (408, 429, 5xx, connection
errors and timeouts; ``Retry-After`` honoured) or final (every other 4xx, a redirect loop). A batch succeeds or
fails whole. The event id travels as the idempotency key: ``Idempotency-Key`` (one event; for a batch, a digest of its
set of event ids, :func:`batch_idempotency_key`) and the ids in the body (webhook), ``messageId`` (segment), the
primary key (postgres)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import httpx
import orjson

from streaming.delivery.config import Destination

#: A destination's answer is kept (in a dead letter) up to this many bytes; the rest is never read.
MAX_BODY = 2048
RETRYABLE = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Literal["delivered", "retry", "final"]
    http_status: int | None = None
    body: str = ""
    retry_after_s: float | None = None
    error: str | None = None


class Sender(Protocol):
    def send(self, events: list[dict[str, Any]]) -> SendResult: ...

    def close(self) -> None: ...


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def classify(status: int, body: str, retry_after: str | None) -> SendResult:
    if 200 <= status < 300:
        return SendResult("delivered", status)
    retry = status in RETRYABLE or status >= 500
    return SendResult("retry" if retry else "final", status, body, _retry_after(retry_after) if retry else None)


class HttpSender:
    """POSTs JSON; shared by the webhook and segment types (their bodies and headers differ)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.client = httpx.Client(timeout=destination.timeout_s, follow_redirects=True, max_redirects=5,
                                   headers={"user-agent": "firstmile-delivery/1", **destination.headers})

    def request(self, events: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
        raise NotImplementedError

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        url, body, headers = self.request(events)
        try:
            with self.client.stream("POST", url, content=body, headers=headers) as response:
                kept = b""
                for chunk in response.iter_bytes():
                    kept += chunk
                    if len(kept) >= MAX_BODY:
                        break  # a 10 MB answer is not read: the connection is dropped
                return classify(response.status_code, kept[:MAX_BODY].decode("utf-8", "replace"),
                                response.headers.get("retry-after"))
        except httpx.TooManyRedirects as exc:
            return SendResult("final", None, error=f"redirect loop: {exc}")
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            return SendResult("retry", None, error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.client.close()


class WebhookSender(HttpSender):
    """One event as the JSON body (``max_events: 1``), else ``{"batch": [...]}``; HMAC-SHA256 signature."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(destination)
        secret = destination.secret(destination.secret_env)
        self.key = secret.encode() if secret else None

    def request(self, events: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
        single = self.destination.batching.max_events == 1
        body = orjson.dumps(events[0] if single else {"batch": events, "sent_at": _now()})
        headers = {"content-type": "application/json", "x-firstmile-destination": self.destination.id,
                   "idempotency-key": str(events[0].get("event_id")) if single
                   else batch_idempotency_key(self.destination.id, events)}
        if self.key:
            headers["x-firstmile-signature"] = "sha256=" + hmac.new(self.key, body, hashlib.sha256).hexdigest()
        return str(self.destination.url), body, headers


def batch_idempotency_key(destination_id: str, events: list[dict[str, Any]]) -> str:
    """A webhook batch's ``Idempotency-Key``: a digest of the destination and the *set* of its event ids, so the
    same events sent again (a lane killed mid-batch, a retry, a replay) carry the same key whatever their order,
    and a receiver can drop a whole batch it already has. A batch holding other events (a restarted lane may cut
    its batches elsewhere) gets another key: the event ids in the body stay the per-event dedupe key."""
    ids = sorted({str(e.get("event_id")) for e in events})
    digest = hashlib.blake2b(orjson.dumps([destination_id, ids]), digest_size=16).hexdigest()
    return f"batch-{digest}"


class SegmentSender(HttpSender):
    """Segment's ``/v1/batch`` (any compatible API: Segment, RudderStack, firstmile's own collector)."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(destination)
        key = destination.secret(destination.write_key_env) or ""
        self.authorization = "Basic " + base64.b64encode(f"{key}:".encode()).decode()

    def request(self, events: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
        body = orjson.dumps({"batch": [to_segment(e) for e in events], "sentAt": _now()})
        return (str(self.destination.url).rstrip("/") + "/v1/batch", body,
                {"content-type": "application/json", "authorization": self.authorization})


def to_segment(record: dict[str, Any]) -> dict[str, Any]:
    """A decided record as a Segment event: the event id as ``messageId`` (the receiver's dedupe key)."""
    kind = record.get("type") or "track"
    event: dict[str, Any] = {
        "type": kind, "messageId": record["event_id"], "timestamp": record.get("event_ts"),
        "anonymousId": record.get("anonymous_id"), "userId": record.get("user_id"),
        "properties": record.get("properties") or {}, "context": {"firstmile": {
            "profile_id": record.get("profile_id"), "consent": record.get("consent"),
            "policy_version": record.get("policy_version")}},
    }
    if kind == "track":
        event["event"] = record.get("event_name") or "event"
    elif kind in ("page", "screen"):
        event["name"] = record.get("event_name")
    if record.get("traits"):
        event["traits"] = record["traits"]
    return {k: v for k, v in event.items() if v is not None}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_sender(destination: Destination) -> Sender:
    if destination.type == "webhook":
        return WebhookSender(destination)
    if destination.type == "segment":
        return SegmentSender(destination)
    from streaming.delivery.postgres import PostgresSender

    return PostgresSender(destination)


class RateLimiter:
    """At most ``rate`` events per second (0: unlimited): blocks the delivery thread, never another destination."""

    def __init__(self, rate: float) -> None:
        self.rate, self.next_at = rate, 0.0

    def wait(self, events: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        if self.next_at > now:
            time.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + events / self.rate
