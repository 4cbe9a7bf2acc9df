"""``/v1/regulations``: erasure requests (Segment's Regulations API shape), server keys only.

* ``POST /v1/regulations`` ``{"regulationType": "SUPPRESS" | "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID" |
  "ANONYMOUS_ID", "subjectIds": [...]}`` → 200 ``{"data": {"regulateId": "reg_..."}}`` once the subject ids are on
  ``control.erasure`` (acknowledged by the broker): every worker drops the subject's next event. The same request
  posted again answers the same id and publishes nothing new (idempotent).
* ``GET /v1/regulations/{id}`` → 200 ``{"data": {"regulation": {..., "overallStatus", "states": [{"state", "at",
  "detail"}]}}}``, 404 for an unknown id. States: :mod:`streaming.regulations`.

Authentication: HTTP Basic, the user name one of ``FIRSTMILE_SERVER_KEYS`` (a write key, which browsers carry,
cannot erase anyone: 401). Errors: 400 naming the field, 401, 404, 405, 413, 503 (broker).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from streaming import pii
from streaming import settings as topics
from streaming.collector.config import CollectorSettings
from streaming.collector.responses import respond_json
from streaming.errors import BrokerError
from streaming.regulations import (
    InvalidRegulation,
    RegulationStore,
    new_regulation,
    parse_request,
    regulation_id,
    suppress_at_edge,
)

if TYPE_CHECKING:
    from streaming.collector.app import Reject

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PREFIX = "/v1/regulations"
MAX_BODY = 1024 * 1024


class RegulationsApi:
    """The endpoints and their reader of ``control.regulations`` (started with the collector)."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.server_keys = settings.server_key_set
        self.store: RegulationStore | None = None
        self._lock = asyncio.Lock()

    def startup(self) -> None:
        address = self.settings.kafka_broker_address
        if address and self.server_keys:
            self.store = RegulationStore(address, self.settings.topic(topics.CONTROL_REGULATIONS))
            self.store.start()
        elif not self.server_keys:
            logger.info("FIRSTMILE_SERVER_KEYS is empty: /v1/regulations answers 401 to every request")

    def shutdown(self) -> None:
        if self.store is not None:
            self.store.stop()

    async def handle(self, scope: Scope, receive: Receive, send: Send, reject: type[Reject],
                     read_body: Callable[[Receive, int], Awaitable[bytes]]) -> None:
        path: str = scope["path"].rstrip("/")
        method: str = scope["method"]
        self._authorize(scope, reject)
        if path == PREFIX:
            if method != "POST":
                raise reject(405, "method_not_allowed", f"{method} is not allowed on {PREFIX}: use POST",
                             headers=[(b"allow", b"POST")])
            try:
                body = orjson.loads(await read_body(receive, MAX_BODY))
            except orjson.JSONDecodeError:
                raise reject(400, "invalid_json", "the body is not valid JSON") from None
            reg_id = await self._create(body, reject)
            await respond_json(send, 200, orjson.dumps({"data": {"regulateId": reg_id}}))
            return
        reg_id = path.removeprefix(PREFIX + "/")
        if method not in ("GET", "HEAD"):
            raise reject(405, "method_not_allowed", f"{method} is not allowed on {path}: use GET",
                         headers=[(b"allow", b"GET")])
        store = self._store(reject)
        reg = store.get(reg_id)
        if reg is None:
            raise reject(404, "not_found", f"no regulation {reg_id!r}")
        await respond_json(send, 200, orjson.dumps({"data": {"regulation": reg.public()}}))

    def _authorize(self, scope: Scope, reject: type[Reject]) -> None:
        header = dict(scope.get("headers") or []).get(b"authorization")
        if not header:
            raise reject(401, "unauthorized", "missing server key: send it as the HTTP Basic user name")
        scheme, _, token = header.strip().partition(b" ")
        try:
            user = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            user = ""
        if scheme.lower() != b"basic" or not any(hmac.compare_digest(user, k) for k in self.server_keys):
            raise reject(401, "unauthorized", "unknown server key (write keys cannot file regulations)")

    def _store(self, reject: type[Reject]) -> RegulationStore:
        if self.store is None:
            raise reject(503, "broker_unavailable", "no broker configured for control.regulations")
        try:
            self.store.wait_caught_up(10.0)
        except BrokerError:
            raise reject(503, "broker_unavailable", "control.regulations is not readable yet: retry",
                         headers=[(b"retry-after", b"1")]) from None
        return self.store

    async def _create(self, body: Any, reject: type[Reject]) -> str:
        secret = self.settings.pii_secret.encode("utf-8")
        try:
            rtype, stype, ids = parse_request(body, lambda i: pii.pseudonymous_id(i, secret))
        except InvalidRegulation as exc:
            raise reject(400, "invalid_regulation", str(exc), field=exc.field) from None
        store = self._store(reject)
        async with self._lock:  # one request at a time: the same body posted twice publishes once
            known = store.get(regulation_id(rtype, stype, ids))
            if known is not None:
                return known.id
            reg = new_regulation(rtype, stype, ids)
            s = self.settings
            try:
                reg = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: suppress_at_edge(s.kafka_broker_address, s.topic(topics.CONTROL_ERASURE),
                                                   s.topic(topics.CONTROL_REGULATIONS), reg))
            except BrokerError as exc:
                raise reject(503, "broker_unavailable", f"erasure not acknowledged by the broker ({exc}): retry",
                             headers=[(b"retry-after", b"1")]) from None
            store.put(reg)
            logger.info("regulation %s (%s, %d subjects) suppressed at the edge", reg.id, rtype, len(ids))
            return reg.id
