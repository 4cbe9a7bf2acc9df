"""A real HTTP destination on loopback for the delivery tests: a threaded server whose answer per path is scripted
(a list of behaviours consumed in order, the last one repeating), recording every request it received."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Script:
    """Behaviours: an int status, ``("status", code, headers)``, ``"hang"`` (never answers in time),
    ``"big"`` (a 10 MB answer with status 500), ``"loop"`` (a redirect to itself), or a function of the request
    returning one of those."""

    steps: list[Any]
    served: int = 0

    def next(self) -> Any:
        step = self.steps[min(self.served, len(self.steps) - 1)]
        self.served += 1
        return step


@dataclass
class Destination:
    scripts: dict[str, Script] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    hang_s: float = 5.0

    def script(self, path: str, *steps: Any) -> None:
        self.scripts[path] = Script(list(steps))

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


def start(dest: Destination) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
            dest.received.append(got)
            step = dest.scripts.get(self.path, Script([200])).next()
            self._answer(step(got) if callable(step) else step)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(dest.scripts.get(self.path, Script([404])).next())

        def _answer(self, step: Any) -> None:
            if step == "hang":
                time.sleep(dest.hang_s)
                step = 200
            if step == "loop":
                self.send_response(302)
                self.send_header("location", self.path)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if step == "big":
                self.send_response(500)
                self.send_header("content-length", str(10 * 1024 * 1024))
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    for _ in range(160):
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            status, headers = (step[1], step[2]) if isinstance(step, tuple) else (step, {})
            body = b'{"ok":true}' if status < 300 else b'{"error":"scripted"}'
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def signature_ok(received: Received, secret: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret, received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.headers.get("x-firstmile-signature", ""), expected)
