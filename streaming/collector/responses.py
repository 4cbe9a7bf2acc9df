"""The collector's HTTP answers, written straight to ASGI: JSON bodies with their length, CORS for browsers (the
tracking API is called cross-origin by analytics.js)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streaming.collector.app import Reject

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON_HEADER = (b"content-type", b"application/json")
CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"authorization, content-type, content-encoding"),
    (b"access-control-max-age", b"86400"),
]
OK_BODY = b'{"success":true}'
OK_HEADERS = [JSON_HEADER, (b"content-length", str(len(OK_BODY)).encode()), CORS[0]]


def ok_body(token: str) -> bytes:
    """``{"success": true, "token": "<partition>.<offset>,..."}``: the token names what was written, for a
    read-your-writes profile read (``GET /v1/profiles/...?after=<token>`` on the serving process)."""
    return b'{"success":true,"token":"' + token.encode() + b'"}' if token else OK_BODY


def ok_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return OK_HEADERS if body is OK_BODY else [JSON_HEADER, (b"content-length", str(len(body)).encode()), CORS[0]]


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, body: bytes) -> None:
    await respond(send, status, body, [JSON_HEADER, (b"content-length", str(len(body)).encode())])


async def respond_error(send: Send, rej: Reject) -> None:
    body = rej.body()
    headers = [JSON_HEADER, (b"content-length", str(len(body)).encode()), CORS[0], *rej.headers]
    await respond(send, rej.status, body, headers)
