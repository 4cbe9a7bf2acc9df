"""The collector: a raw ASGI app speaking the Segment HTTP tracking API, producing to ``events.raw``.

Raw ASGI + orjson on uvicorn (httptools, uvloop) because FastAPI's per-request overhead costs 5× on small
requests (STACK-FACTS.md). Status codes (the OpenAPI document in :mod:`streaming.collector.openapi` lists them):

* 200 ``{"success": true}`` – every event of the request was acknowledged by the broker (acks=all, idempotent);
* 400 malformed JSON, not an object, nesting too deep, a contract error (a batch is rejected whole, naming the
  index and the field);
* 401 missing or unknown write key (HTTP Basic user, password ignored, or ``writeKey`` in the body), decided before
  any other answer: an unauthenticated caller learns nothing about its body (no 413/415/400);
* 413 body over 512 KB (batch) / 32 KB (single call), or one event over 32 KB;
* 415 a ``Content-Encoding`` other than identity or gzip;
* 429 the write key's token bucket is empty (``Retry-After`` in seconds);
* 503 the broker did not acknowledge in time or is down (retry: ``messageId`` makes retries safe downstream).

Bad input never yields a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson

from streaming.collector.config import CollectorSettings, WriteKey
from streaming.collector.lifecycle import SinkLifecycle
from streaming.collector.openapi import openapi_document
from streaming.collector.ratelimit import TokenBucket
from streaming.collector.regulations_api import PREFIX as REGULATIONS
from streaming.collector.regulations_api import RegulationsApi
from streaming.collector.responses import CORS, ok_body, ok_headers, respond, respond_error, respond_json
from streaming.collector.sink import BrokerUnavailable, KafkaSink
from streaming.contract import MAX_EVENT_BYTES, InvalidEvent, from_segment, parse_raw
from streaming.settings import RAW

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

__all__ = ["MAX_BATCH_BYTES", "MAX_SINGLE_BYTES", "Collector", "Reject", "TokenBucket", "create_app", "decode_body"]

MAX_BATCH_BYTES = 512 * 1024
#: a single call (track, page, ...) is one event: Segment's 32 KB.
MAX_SINGLE_BYTES = MAX_EVENT_BYTES

#: path → the event type the endpoint implies (None: a batch, each event carries its own ``type``).
SINGLE_ROUTES: dict[str, str] = {
    "/v1/track": "track", "/v1/page": "page", "/v1/screen": "screen", "/v1/identify": "identify",
    "/v1/alias": "alias", "/v1/group": "group", "/v1/consent": "consent",
}
BATCH_ROUTES = frozenset({"/v1/batch", "/v1/import"})

_INTERNAL_TO_WIRE = (("event_id", "messageId"), ("anonymous_id", "anonymousId"), ("user_id", "userId"),
                     ("user_agent", "userAgent"), ("previous_id", "previousId"), ("sent_at", "sentAt"))
_PATH_RE = re.compile(r"at `\$\.([^`]+)`")
_FIELD_RE = re.compile(r"`([A-Za-z_][\w.]*)`")


class Reject(Exception):
    """An answer other than 200, with a machine-readable code (``APIError.code`` in Segment's libraries)."""

    def __init__(self, status: int, code: str, message: str, *, index: int | None = None,
                 field: str | None = None, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.field = field
        self.headers = headers or []

    def body(self) -> bytes:
        doc: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.index is not None:
            doc["index"] = self.index
        if self.field is not None:
            doc["field"] = self.field
        return orjson.dumps(doc)


def _field_of(detail: str) -> str | None:
    """The wire name of the field an :class:`InvalidEvent` detail points at."""
    match = _PATH_RE.search(detail) or _FIELD_RE.search(detail)
    if not match:
        return None
    field = match.group(1)
    for internal, wire in _INTERNAL_TO_WIRE:
        field = field.replace(internal, wire)
    return field


class Collector:
    """The ASGI application. One instance per process; the lifespan starts and warms the producer."""

    def __init__(self, settings: CollectorSettings, *, sink: KafkaSink | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic(RAW)
        self.keys: dict[str, WriteKey] = settings.keys
        if not self.keys:
            logger.warning("FIRSTMILE_WRITE_KEYS is empty: every request will be answered 401")
        # Precomputed Authorization header values of each key (the fast path; others are decoded).
        self._basic: dict[bytes, WriteKey] = {}
        for wk in self.keys.values():
            token = base64.b64encode(f"{wk.key}:".encode()).decode()
            self._basic[f"Basic {token}".encode()] = wk
        self._buckets: dict[str, TokenBucket] = {}
        self.lifecycle = SinkLifecycle(settings, self.topic, sink)
        self.regulations = RegulationsApi(settings)
        self._openapi = orjson.dumps(openapi_document())

    # -- ASGI ------------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to uvicorn, which exits
                    logger.exception("collector start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        await self.lifecycle.startup()
        self.regulations.startup()

    async def shutdown(self) -> None:
        self.regulations.shutdown()
        await self.lifecycle.shutdown()

    @property
    def sink(self) -> KafkaSink | None:
        return self.lifecycle.sink

    # -- HTTP ------------------------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            kind = SINGLE_ROUTES.get(path)
            if kind is not None or path in BATCH_ROUTES:
                if method == "POST":
                    body = ok_body(await self._collect(scope, receive, kind))
                    await send({"type": "http.response.start", "status": 200, "headers": ok_headers(body)})
                    await send({"type": "http.response.body", "body": body})
                    return
                if method == "OPTIONS":
                    await respond(send, 204, b"", [(b"content-length", b"0"), *CORS])
                    return
                raise Reject(405, "method_not_allowed", f"{method} is not allowed on {path}: use POST",
                             headers=[(b"allow", b"POST, OPTIONS")])
            if path.startswith(REGULATIONS):
                await self.regulations.handle(scope, receive, send, Reject, _read_body)
                return
            if method not in ("GET", "HEAD") and path in ("/healthz", "/readyz", "/openapi.json"):
                raise Reject(405, "method_not_allowed", f"{method} is not allowed on {path}: use GET",
                             headers=[(b"allow", b"GET, HEAD")])
            if path == "/healthz":
                await respond_json(send, 200, b'{"status":"ok"}')
            elif path == "/readyz":
                sink = self.sink
                if sink is not None and sink.ready:
                    age = time.monotonic() - max(sink.last_probe_ok, sink.last_ack)
                    await respond_json(send, 200, orjson.dumps({"status": "ready", "topic": self.topic,
                                                         "last_broker_ok_s": round(age, 3)}))
                else:
                    await respond_json(send, 503, orjson.dumps({"status": "not_ready", "topic": self.topic,
                                                         "reason": "the broker does not accept writes"}))
            elif path == "/openapi.json":
                await respond_json(send, 200, self._openapi)
            else:
                raise Reject(404, "not_found", f"no such endpoint: {path}")
        except Reject as rej:
            await respond_error(send, rej)
        except BrokerUnavailable as exc:
            await respond_error(send, Reject(503, "broker_unavailable",
                                      f"events not acknowledged by the broker ({exc}): retry later",
                                      headers=[(b"retry-after", b"1")]))
        except _ClientGone:
            return

    async def _collect(self, scope: Scope, receive: Receive, kind: str | None) -> str:
        """Accept the request's events; returns their write token (read-your-writes, ``streaming.serving``)."""
        limit = MAX_BATCH_BYTES if kind is None else MAX_SINGLE_BYTES
        authorization = None
        encoding = None
        declared = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                declared = value
            elif name == b"content-encoding":
                encoding = value.strip().lower()
        # Authentication comes first. A header key is decided before the body is read (a bad one is a 401 whatever
        # the body). Without one the key can only be in the body, and a caller we cannot authenticate must learn
        # nothing about its body: whatever stops us from reading a body key (over the limit, an unsupported or
        # broken encoding, malformed JSON, not an object) is a 401 too, never a 413/415/400. (Scenario 11 found
        # unauthenticated callers answered 413/415/400 before 401.)
        wk: WriteKey | None = None
        if authorization is not None:
            wk = self._basic.get(authorization) or self._decode_basic(authorization)
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise Reject(413, "payload_too_large", f"body of {int(declared)} bytes exceeds {limit} bytes")
            doc = decode_body(await _read_body(receive, limit), encoding, limit)
        except Reject:
            if wk is None:
                raise _unauthorized(missing=True) from None
            raise
        body_key = doc.get("writeKey")
        if wk is None:
            wk = self.keys.get(body_key) if isinstance(body_key, str) and body_key else None
            if wk is None:
                raise _unauthorized(missing=body_key is None)
        elif body_key is not None and not isinstance(body_key, str):
            raise Reject(400, "schema", "`writeKey` must be a string", field="writeKey")

        if kind is None:
            events = doc.get("batch")
            if not isinstance(events, list) or not events:
                raise Reject(400, "schema", "`batch` must be a non-empty array of events", field="batch")
        else:
            events = [doc]
        self._rate_limit(wk, len(events))

        received_at = datetime.now(UTC)
        messages = self._validate(events, doc, kind, wk.source_id, received_at)
        sink = self.sink
        if sink is None:
            raise BrokerUnavailable("collector is starting")
        return await sink.send(messages)

    def _validate(self, events: list[Any], doc: dict[str, Any], kind: str | None, source_id: str,
                  received_at: datetime) -> list[tuple[bytes, bytes]]:
        """Every event → internal schema → bytes, checked with the same parser the worker uses; all or none."""
        batch = kind is None
        batch_sent_at = doc.get("sentAt") if batch else None
        batch_context = doc.get("context") if batch else None
        if batch_context is not None and not isinstance(batch_context, dict):
            raise Reject(400, "schema", "the batch's `context` must be an object", field="context")
        messages: list[tuple[bytes, bytes]] = []
        for index, payload in enumerate(events):
            try:
                if not isinstance(payload, dict):
                    raise InvalidEvent("schema", "an event must be a JSON object")
                if batch:
                    if len(orjson.dumps(payload)) > MAX_EVENT_BYTES:
                        raise Reject(413, "payload_too_large", f"batch[{index}] exceeds {MAX_EVENT_BYTES} bytes",
                                     index=index)
                    if batch_context:
                        ctx = payload.get("context")
                        if ctx is None or isinstance(ctx, dict):
                            payload["context"] = {**batch_context, **(ctx or {})}
                else:
                    payload["type"] = kind
                event = from_segment(payload, source_id=source_id, received_at=received_at,
                                     batch_sent_at=batch_sent_at)
                value = orjson.dumps(event)
                parse_raw(value)  # the worker's own check: what we accept, the worker accepts
            except InvalidEvent as exc:
                where = f"batch[{index}]: " if batch else ""
                if exc.reason == "too_large":
                    # Over the limit once in the internal schema (the stamped fields, a batch's merged context): a
                    # 413 like every other size limit, not a 400 (scenario 11 found a 400 `too_large`).
                    raise Reject(413, "payload_too_large", f"{where}the event exceeds {MAX_EVENT_BYTES} bytes "
                                 "in the internal schema", index=index if batch else None) from None
                raise Reject(400, exc.reason, f"{where}{exc.detail or exc.reason}"[:500],
                             index=index if batch else None, field=_field_of(exc.detail)) from None
            except (OverflowError, ValueError, TypeError, orjson.JSONEncodeError) as exc:
                # e.g. a timestamp whose skew correction leaves the datetime range, a lone surrogate
                where = f"batch[{index}]: " if batch else ""
                raise Reject(400, "schema", f"{where}{exc}"[:500], index=index if batch else None) from None
            key = event.get("anonymous_id") or event["user_id"]
            messages.append((key.encode(), value))
        return messages

    def _rate_limit(self, wk: WriteKey, cost: int) -> None:
        rate = wk.rate_per_s if wk.rate_per_s is not None else self.settings.rate_limit_per_s
        if rate <= 0:
            return
        bucket = self._buckets.get(wk.key)
        if bucket is None:
            bucket = self._buckets[wk.key] = TokenBucket(rate, max(1.0, rate * self.settings.rate_limit_burst_s))
        wait = bucket.take(cost, time.monotonic())
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise Reject(429, "rate_limited", f"write key over {rate:g} events/s: retry in {seconds} s",
                         headers=[(b"retry-after", str(seconds).encode())])

    def _decode_basic(self, header: bytes) -> WriteKey:
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"basic" or not token:
            raise Reject(401, "unauthorized", "the Authorization header must be HTTP Basic with the write key "
                                              "as user name")
        try:
            user = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            raise Reject(401, "unauthorized", "the Authorization header is not valid base64") from None
        wk = self.keys.get(user)
        if wk is None:
            raise Reject(401, "unauthorized", "unknown write key")
        return wk


class _ClientGone(Exception):
    pass


def _unauthorized(*, missing: bool) -> Reject:
    if missing:
        return Reject(401, "unauthorized", "missing write key: send it as the HTTP Basic user name or as `writeKey` "
                                           "in the body")
    return Reject(401, "unauthorized", "unknown write key")


def decode_body(body: bytes, encoding: bytes | None, limit: int) -> dict[str, Any]:
    """A request body → its JSON object: gzip or identity, at most ``limit`` bytes once decompressed.
    Raises :class:`Reject` (400, 413, 415) and nothing else (the fuzz harness holds it to that)."""
    if encoding not in (None, b"", b"identity"):
        if encoding not in (b"gzip", b"x-gzip"):
            raise Reject(415, "unsupported_encoding", "Content-Encoding must be gzip or identity")
        body = _gunzip(body, limit)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise Reject(400, "too_deep", "the JSON nests too deeply") from None
        raise Reject(400, "invalid_json", f"malformed JSON: {exc}"[:300]) from None
    if not isinstance(doc, dict):
        raise Reject(400, "invalid_json", "the body must be a JSON object")
    return doc


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise Reject(413, "payload_too_large", f"body exceeds {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Reject(413, "payload_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes (a gzip bomb is a 413, not an out-of-memory)."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error:
        raise Reject(400, "invalid_encoding", "the body is not valid gzip") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise Reject(413, "payload_too_large", f"decompressed body exceeds {limit} bytes")
    if not decompressor.eof:
        raise Reject(400, "invalid_encoding", "the gzip body is truncated")
    return out


def create_app(settings: CollectorSettings | None = None) -> Collector:
    """The app factory (``uvicorn --factory streaming.collector:create_app``); settings from the environment."""
    from streaming.collector.config import load_collector_settings

    return Collector(settings or load_collector_settings())
