"""The profile API: a raw ASGI app (the collector's reasons: FastAPI's per-request overhead, STACK-FACTS.md).

Status codes: 200; 400 a malformed id, token or parameter; 401 a missing or unknown key; 403 a key outside its
scope (a publishable key reading by profile or user id, or a field outside its allow-list, or from an origin it
does not list); 404 an unknown or erased profile; 405; 414 a query over :data:`MAX_QUERY`; 503 before the store has
caught up (``/readyz``), or a read with ``?after=`` that would wait while ``FIRSTMILE_SERVING_MAX_WAITING_READS``
reads already do (``too_many_waiting_reads``, ``Retry-After: 1``). Never a 5xx for bad input.

A lookup of a profile that the warehouse merged into another one (``control.identity``, read as the workers read
it: :class:`~streaming.control_tables.ControlTables`) answers with the survivor's profile, whichever id it was asked
by.

The request path is kept short on purpose (``make bench-serving`` compares it with a bare handler on the same
server): the answer's JSON was prepared when the view was applied (:class:`~streaming.serving.store.Served`), a
known key's decoded Authorization header is remembered, and CORS origins are one set lookup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from streaming import pii
from streaming.control_tables import ControlTables
from streaming.serving.config import PublishableKey, ServingSettings
from streaming.serving.inspector import render_profile
from streaming.serving.store import META, Changes, ProfileStore, Served, ServingReader

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_QUERY = 2048
MAX_WAIT_MS = 5000
HEARTBEAT_S = 15.0
#: Decoded Authorization headers of known keys remembered per process (an unknown key is never remembered).
AUTH_CACHE = 1024
_ID = re.compile(r"^[^\x00-\x1f/]{1,256}$")
_TOKEN = re.compile(r"^\d{1,6}\.\d{1,19}(,\d{1,6}\.\d{1,19}){0,63}$")
JSON = (b"content-type", b"application/json")
_FRESH, _STALE = b',"stale":false}', b',"stale":true}'


class Answer(Exception):
    """A non-200 answer (raised anywhere in a request)."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or []


class ServingApp:
    """One per process: the store, its reader, the merges, the waiters of read-your-writes reads and event streams."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.secret = settings.pii_secret.encode()
        self.server_keys = settings.server_key_set
        self.publishable: dict[str, PublishableKey] = settings.publishable
        #: what a publishable key's answer may hold: its allow-list and the answer's own fields
        self.publishable_fields = settings.publishable_field_set | frozenset(META)
        self.any_origin = any("*" in pk.origins for pk in self.publishable.values())
        self.origins = frozenset(o for pk in self.publishable.values() for o in pk.origins)
        self.store: ProfileStore | None = None
        self.reader: ServingReader | None = None
        self.merges = ControlTables()
        self.changes = Changes()
        self.waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.waiting_reads = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._auth: dict[bytes, tuple[str, str]] = {}
        self._ready = False  # latched: a reader that caught up stays caught up

    # ---- lifecycle ------------------------------------------------------------------------------------------
    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.store = ProfileStore(self.settings.store_dir, block_cache_mb=self.settings.serving_block_cache_mb)
        loop = self.loop

        def changed(profile_ids: list[str]) -> None:  # on a reader thread, once per batch
            loop.call_soon_threadsafe(self._wake, profile_ids)

        self.changes.listeners.append(changed)
        snapshot = self.settings.store_dir.with_name(f"{self.settings.store_dir.name}.identity")
        self.merges = ControlTables.load(snapshot)
        self.reader = ServingReader(self.settings.kafka_broker_address, self.settings, self.store, self.changes,
                                    merges=self.merges, merges_snapshot=snapshot)
        self.reader.start()
        # what start-up built lives as long as the process: out of the collector's way, so a full collection
        # does not walk it again and again under load
        gc.freeze()

    async def shutdown(self) -> None:
        if self.reader is not None:
            self.reader.stop()
            await asyncio.get_running_loop().run_in_executor(None, self.reader.join, 5.0)
        if self.store is not None:
            self.store.close()

    @property
    def ready(self) -> bool:
        if not self._ready:
            self._ready = self.reader is not None and self.reader.caught_up
        return self._ready

    def _wake(self, profile_ids: list[str]) -> None:
        if not self.waiters:
            return
        for key in (*profile_ids, "*"):
            for future in self.waiters.pop(key, ()):
                if not future.done():
                    future.set_result(None)

    async def _changed(self, key: str, timeout: float) -> bool:
        """True once ``key``'s profile changed (``"*"``: any profile), False after ``timeout`` seconds."""
        future = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, []).append(future)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False

    # ---- ASGI -----------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = dict(scope.get("headers") or ())
        origin = headers.get(b"origin", b"").decode("latin-1")
        cors: list[tuple[bytes, bytes]] = []
        try:
            path, method, query_string = scope["path"], scope["method"], scope.get("query_string", b"")
            if len(query_string) > MAX_QUERY or len(path) > MAX_QUERY:
                raise Answer(414, "uri_too_long", f"the query is over {MAX_QUERY} bytes")
            if path in ("/healthz", "/readyz"):
                await self._health(path, send)
                return
            if method == "OPTIONS":  # a browser's preflight: only for an origin some publishable key lists
                await _respond(send, 204, b"", self._cors(origin, preflight=True))
                return
            if method not in ("GET", "HEAD"):
                raise Answer(405, "method_not_allowed", f"{method} is not allowed: use GET", [(b"allow", b"GET")])
            scope_, key = self._authorize(headers.get(b"authorization"), origin, html=path.startswith("/profiles/"))
            cors = self._cors(origin) if scope_ == "publishable" else []
            query = {k: v[-1] for k, v in parse_qs(query_string.decode("latin-1")).items()} if query_string else {}
            await self._route(path, query, scope_, key, send, receive, cors)
        except Answer as answer:
            body = orjson.dumps({"success": False, "code": answer.code, "message": answer.message})
            await _respond(send, answer.status, body, [JSON, *cors, *answer.headers])

    async def _health(self, path: str, send: Send) -> None:
        if path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}', [JSON])
            return
        ready = self.ready
        body = orjson.dumps({"status": "ready" if ready else "catching_up",
                             "applied": self.reader.applied if self.reader else 0,
                             "merges": len(self.merges)})
        await _respond(send, 200 if ready else 503, body, [JSON])

    def _authorize(self, header: bytes | None, origin: str, *, html: bool) -> tuple[str, str]:
        known = self._auth.get(header) if header else None
        if known is None:
            known = self._authenticate(header, html=html)
            if len(self._auth) >= AUTH_CACHE:
                del self._auth[next(iter(self._auth))]  # the oldest: keys are few, headers per key fewer
            self._auth[header] = known  # type: ignore[index]  # _authenticate raised without a header
        if known[0] == "publishable" and origin:
            origins = self.publishable[known[1]].origins
            if "*" not in origins and origin.rstrip("/") not in origins:
                raise Answer(403, "forbidden", "this publishable key is not for this origin")
        return known

    def _authenticate(self, header: bytes | None, *, html: bool) -> tuple[str, str]:
        """(scope, key) of an HTTP Basic header whose user name is a known key; a 401 otherwise."""
        challenge = [(b"www-authenticate", b'Basic realm="firstmile"')] if html else []
        if not header:
            raise Answer(401, "unauthorized", "missing key: send it as the HTTP Basic user name", challenge)
        scheme, _, token = header.strip().partition(b" ")
        try:
            user = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            user = ""
        if scheme.lower() == b"basic" and any(hmac.compare_digest(user, k) for k in self.server_keys):
            return "server", user
        if scheme.lower() != b"basic" or user not in self.publishable:
            raise Answer(401, "unauthorized", "unknown key", challenge)
        return "publishable", user

    def _cors(self, origin: str, *, preflight: bool = False) -> list[tuple[bytes, bytes]]:
        if not origin or not (self.any_origin or origin.rstrip("/") in self.origins):
            return []
        out = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]
        if preflight:
            out += [(b"access-control-allow-methods", b"GET, OPTIONS"),
                    (b"access-control-allow-headers", b"authorization"), (b"access-control-max-age", b"86400")]
        return out

    # ---- routes ---------------------------------------------------------------------------------------------
    async def _route(self, path: str, query: dict[str, str], scope_: str, key: str, send: Send, receive: Receive,
                     cors: list[tuple[bytes, bytes]]) -> None:
        store = self._store()
        if path.startswith("/profiles/"):
            if scope_ != "server":
                raise Answer(403, "forbidden", "the profile inspector needs a server key")
            profile_id = self._resolve(store, ("profile", _id(unquote(path.removeprefix("/profiles/")))))
            found = store.served(profile_id) if profile_id else None
            if found is None or profile_id is None:
                raise Answer(404, "not_found", "no such profile (or it was erased)")
            html = render_profile(found.view(), store.recent(profile_id), applied_at=found.applied_at)
            await _respond(send, 200, html.encode(), [(b"content-type", b"text/html; charset=utf-8")])
            return
        if path.rstrip("/") == "/v1/profiles" or path == "/v1/profiles/stream":
            lookup = self._lookup_from_query(query, scope_)
        elif path.startswith("/v1/profiles/"):
            rest = path.removeprefix("/v1/profiles/")
            stream = rest.endswith("/stream")
            if scope_ != "server":
                raise Answer(403, "forbidden", "a publishable key reads only by the anonymousId it presents")
            lookup = ("profile", _id(unquote(rest.removesuffix("/stream"))))
            if stream:
                path = "/v1/profiles/stream"
        else:
            raise Answer(404, "not_found", f"no such endpoint: {path}")
        allowed = self.publishable_fields if scope_ == "publishable" else None
        if path == "/v1/profiles/stream":
            await self._stream(store, lookup, allowed, send, receive, cors)
            return
        after = query.get("after")
        if after is not None and not _TOKEN.match(after):
            raise Answer(400, "invalid_token", "after must be a token the collector returned (<partition>.<offset>)")
        wait_ms = _int(query.get("wait_ms"), self.settings.read_wait_ms, MAX_WAIT_MS, "wait_ms")
        served, stale = await self._read(store, lookup, after, wait_ms / 1000)
        staleness_ms = round((time.time() - served.applied_at) * 1000, 1)
        body = served.body(allowed) + b',"staleness_ms":' + orjson.dumps(staleness_ms) + (_STALE if stale else _FRESH)
        await _respond(send, 200, body, [JSON, *cors])

    def _lookup_from_query(self, query: dict[str, str], scope_: str) -> tuple[str, str]:
        if "anonymousId" in query:
            return "device", pii.pseudonymous_id(_id(query["anonymousId"]), self.secret) or ""
        if "userId" in query:
            if scope_ != "server":
                raise Answer(403, "forbidden", "a publishable key cannot read by userId")
            return "profile", pii.pseudonymous_id(_id(query["userId"]), self.secret) or ""
        raise Answer(400, "missing_lookup", "give anonymousId or userId (or use /v1/profiles/{profile_id})")

    def _store(self) -> ProfileStore:
        if self.store is None or not self.ready:
            raise Answer(503, "catching_up", "the serving store is catching up with the topics: retry",
                         [(b"retry-after", b"1")])
        return self.store

    def _resolve(self, store: ProfileStore, lookup: tuple[str, str]) -> str | None:
        """The profile a lookup reads now: a device's profile, and the survivor of a merged profile — unless the
        id asked for was erased (an erasure deletes that id's own entries; its survivor's stay)."""
        kind, value = lookup
        profile_id = store.profile_of_device(value) if kind == "device" else value
        if not profile_id:
            return None
        survivor = self.merges.survivor(profile_id)
        if survivor != profile_id and store.is_erased(profile_id):
            return None
        return survivor

    async def _read(self, store: ProfileStore, lookup: tuple[str, str], after: str | None,
                    wait_s: float) -> tuple[Served, bool]:
        """The profile's prepared answer and whether it is stale; with ``after``, waits (bounded) until it
        reflects the token's events."""
        wanted = [tuple(map(int, part.split("."))) for part in after.split(",")] if after else []
        profile_id = self._resolve(store, lookup)
        found = store.served(profile_id) if profile_id else None
        if not wanted:
            if found is None:
                raise Answer(404, "not_found", "no such profile (or it was erased)")
            return found, False
        fresh = _reflects(found, wanted)
        if not fresh and wait_s > 0:
            if self.waiting_reads >= self.settings.serving_max_waiting_reads:
                raise Answer(503, "too_many_waiting_reads",
                             f"{self.waiting_reads} reads are waiting for their events already: retry",
                             [(b"retry-after", b"1")])
            deadline = time.monotonic() + wait_s
            self.waiting_reads += 1
            try:
                while not fresh and (left := deadline - time.monotonic()) > 0:
                    await self._changed(profile_id if found is not None and profile_id else "*", left)
                    profile_id = self._resolve(store, lookup)
                    found = store.served(profile_id) if profile_id else None
                    fresh = _reflects(found, wanted)
            finally:
                self.waiting_reads -= 1
        if found is None:
            raise Answer(404, "not_found", "no such profile (or it was erased)")
        return found, not fresh

    async def _stream(self, store: ProfileStore, lookup: tuple[str, str], allowed: frozenset[str] | None,
                      send: Send, receive: Receive, cors: list[tuple[bytes, bytes]]) -> None:
        """Server-sent events: the profile's segment and action now, then each change (personalization granted)."""
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *cors]})
        last: Any = object()
        try:
            while not disconnected.done():
                profile_id = self._resolve(store, lookup)
                found = store.served(profile_id) if profile_id else None
                if found is not None:
                    shaped = orjson.loads(found.body(allowed) + b"}")
                    current = (shaped.get("segment"), shaped.get("action"))
                    if current != last:
                        last = current
                        data = orjson.dumps({"profile_id": profile_id, "segment": current[0], "action": current[1],
                                             "as_of": shaped.get("as_of"), "withheld": shaped["withheld"]})
                        await send({"type": "http.response.body", "body": b"event: decision\ndata: " + data + b"\n\n",
                                    "more_body": True})
                waiter = asyncio.ensure_future(self._changed(profile_id or "*", HEARTBEAT_S))
                await asyncio.wait([waiter, disconnected], return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                elif not waiter.result() and not disconnected.done():
                    await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
        finally:
            disconnected.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _reflects(found: Served | None, wanted: list[tuple[int, ...]]) -> bool:
    """Whether the answer reflects every ``(partition, offset)`` of a read-your-writes token."""
    return found is not None and all(found.offsets.get(str(p), -1) >= o for p, o in wanted)


def _id(value: str) -> str:
    if not _ID.match(value):
        raise Answer(400, "invalid_id", "an id is 1-256 characters without control characters or '/'")
    return value


def _int(value: str | None, default: int, maximum: int, name: str) -> int:
    if value is None:
        return default
    if not value.isdigit() or int(value) > maximum:
        raise Answer(400, "invalid_parameter", f"{name} must be an integer from 0 to {maximum}")
    return int(value)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
