"""Serving benchmark (``make bench-serving``): the profile API of ``python -m streaming.serving`` (issue 17,
"Benchmark"), in one printed report. Every server is a real process; each part gets a fresh embedded Tansu.

1. ``lookups`` – ``GET /v1/profiles/{id}`` (server key, random ids) with ``--profiles`` profiles loaded (default
   100,000): their views published straight to ``profiles`` (and one device each to ``profiles.devices``) by a
   producer, shaped like what stage 2 writes (templates are real views from ``decide_device`` + ``decide_profile``
   on simulated events with the full policy, each given its own profile, device and event ids), then read by a
   serving process started on them (its catch-up is reported; the lookups start once it is idle: RocksDB compacts
   after a catch-up). Next to it, in the same run: a **bare** raw-ASGI handler returning a constant (the serving
   process's own answer for one profile, so the bytes on the wire are the same) on uvicorn with the serving
   process's options (the ``--_bare`` role). Per server, the order alternating: open loop at ``--rate`` req/s
   (latency from each request's *scheduled* time: no coordinated omission; also from when it was written), a ladder
   of fixed rates (the highest with p99 within the 10 ms target, and the highest kept up: p99 ≤ 100 ms, no queue
   building over a step), and a closed loop (64 connections) for the peak; one more run by ``?anonymousId=`` (the
   device index). The load generator is a process of its own (``--_load lookup``: raw sockets on asyncio/uvloop,
   precomputed requests, keep-alive connections; a pacer thread sleeps to each scheduled time because the loop's
   timers have 1 ms resolution): its CPU share, CPU per request and dispatch lag (written − scheduled) are reported
   with every run, and the server's CPU per request, the figure the shared cores disturb least. After the run, the
   store's read calls are timed in this process on the same store.
2. ``freshness`` – the real path at ``--fresh-rate`` ev/s (default 500, ``--fresh-devices`` devices): ``POST
   /v1/track`` to ``python -m streaming.collector``, ``python -m streaming.worker``, the serving process. A bare
   consumer of ``profiles`` in the load process sees when each event's view reaches the topic (the view's ``offsets``
   reflect the collector's token); every ``--read-every``-th event is read back at its 200 with ``GET
   /v1/profiles?anonymousId=…&after=<token>&wait_ms=5000``, which answers once the profile reflects the event.
   Rows: collector 200 → view on the topic (the worker's part), → visible in serving (freshness), view on topic →
   visible (the serving process's part), track sent → answer (read-your-writes). Next to a bare produce → consume
   hop on the same broker (the collector's producer settings, the serving reader's fetch wait), before and after.
   Then ``--new-rate`` ev/s, each from a device never seen (a new visitor's first event: its device entry and its
   view travel on two topics).
3. ``catchup`` – ``--catchup-profiles`` views (default 1,000,000, plus a device each) published to a fresh broker;
   a serving process started on an empty store: time to listening and to ``/readyz`` 200, records applied when
   ready vs published (Tansu's watermarks under-report: an early "ready" shows as INCOMPLETE), a sample of ids
   looked up, a lookup run at ``--rate`` on that store; where the time goes (a bare consumer reading the same
   records; ``ProfileStore.apply`` without a broker over ``--apply-profiles``; the store's read calls); then a
   restart on the filled store. Memory per 100k profiles: (RSS with N profiles − RSS of a serving process on empty
   topics) per 100k, with the store's size on disk beside it.

Prints the report and writes JSON (``--json``, default ``data/benchmarks/serving.json``). ``--quick``: small sizes,
a smoke test of the script (~1.5 min).

    .venv/bin/python tests/benchmarks/bench_serving.py [--quick] [--parts lookups,freshness,catchup]
        [--profiles 100000] [--catchup-profiles 1000000] [--rate 1000] [--duration 15] [--rounds 2]
        [--ladder 2000,3000,...] [--step-duration 4] [--ladder-rounds 2] [--closed-duration 5]
        [--fresh-rate 500] [--fresh-duration 30] [--read-every 5] [--new-rate 1] [--apply-profiles 100000]
        [--keep-logs DIR] [--json data/benchmarks/serving.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import hashlib
import http.client
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SCRIPT = Path(__file__).resolve()

SERVER_KEY = "bench-server-key-0123456789"
PUBLISHABLE_KEY = "bench-pk"
ORIGIN = "https://shop.example"
WRITE_KEY = "bench-write-key"
PARTITIONS = 3
SECRET = "bench-secret-0123456789"
TARGET = {"p50_ms": 2.0, "p99_ms": 10.0, "rate": 5000, "ratio": 0.6}
ANCHORS = "Segment Profile API p95 < 200 ms; Tecton SLO 99 % <= 100 ms; Feast p99 1.5-5 ms"
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0 Safari/537.36")
DEFAULT_LADDER = "2000,3000,4000,5000,6000,7000,8000,10000,12000,14000,17000,20000"
CL_RE = re.compile(rb"(?i)\r\ncontent-length:[ \t]*(\d+)")


# --- helpers ----------------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in seconds)
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": round(pct(ms, 0.5), 3), "p90": round(pct(ms, 0.9), 3),
            "p99": round(pct(ms, 0.99), 3), "p999": round(pct(ms, 0.999), 3), "max": round(ms[-1], 3)}


def fmt(v: Any, spec: str = ".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def log(t0: float, msg: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def uuidish(tag: bytes, i: int) -> str:
    h = hashlib.blake2b(tag + i.to_bytes(8, "little"), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


def profile_id(i: int) -> str:
    return uuidish(b"p", i)


def http_get(port: int, path: str, *, key: str | None = SERVER_KEY, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"authorization": basic(key)} if key else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --- processes --------------------------------------------------------------------------------------------------------


def start_process(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def fresh_broker(tmp: Path, name: str) -> Iterator[Any]:
    """A fresh Tansu (it never trims its memory) with the platform's topics (explicit configs)."""
    from streaming.broker import EmbeddedBroker, create_topics
    from streaming.settings import StreamingSettings

    broker = EmbeddedBroker.start(log_path=tmp / f"tansu-{name}.log")
    try:
        create_topics(broker.address, StreamingSettings(data_dir=tmp / name, partitions=PARTITIONS,
                                                        kafka_broker_address=broker.address))
        yield broker
    finally:
        broker.stop()


def base_env(address: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTMILE_")}
    return {**env, "KAFKA_BROKER_ADDRESS": address, "FIRSTMILE_DATA_DIR": str(data_dir),
            "FIRSTMILE_PII_SECRET": SECRET, "FIRSTMILE_PARTITIONS": str(PARTITIONS)}


class Serving:
    """One ``python -m streaming.serving`` process: start-up timed to listening and to ``/readyz`` 200."""

    def __init__(self, address: str, data_dir: Path, store: Path, port: int, log_path: Path) -> None:
        self.port = port
        env = {**base_env(address, data_dir), "FIRSTMILE_SERVING_PORT": str(port),
               "FIRSTMILE_SERVER_KEYS": SERVER_KEY, "FIRSTMILE_PUBLISHABLE_KEYS": f"{PUBLISHABLE_KEY}:{ORIGIN}",
               "FIRSTMILE_SERVING_STORE_DIR": str(store)}
        self.store = store
        self.t0 = time.monotonic()
        self.proc = start_process([sys.executable, "-m", "streaming.serving"], env, log_path)
        self.log_path = log_path
        self.listening_s: float | None = None
        self.ready_s: float | None = None
        self.ready_doc: dict[str, Any] = {}
        self.rss_peak = 0

    def wait_ready(self, timeout: float) -> float:
        deadline = self.t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serving exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            self.rss_peak = max(self.rss_peak, rss_bytes(self.proc.pid))
            try:
                status, body = http_get(self.port, "/readyz", key=None, timeout=2)
            except OSError:
                time.sleep(0.02)
                continue
            if self.listening_s is None:
                self.listening_s = time.monotonic() - self.t0
            if status == 200:
                self.ready_s = time.monotonic() - self.t0
                self.ready_doc = json.loads(body)
                return self.ready_s
            time.sleep(0.02)
        raise RuntimeError(f"serving not ready within {timeout:.0f} s")

    def applied(self) -> int:
        return int(json.loads(http_get(self.port, "/readyz", key=None)[1]).get("applied", 0))

    def wait_applied(self, want: int, timeout: float) -> float | None:
        """Seconds until the reader applied ``want`` records (None: it did not within ``timeout``)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.applied() >= want:
                return time.monotonic() - t0
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        stop_process(self.proc)


# --- profile views, shaped like stage 2's -----------------------------------------------------------------------------


def view_templates(events: int = 3000) -> tuple[list[bytes], dict[str, Any]]:
    """Real views: the last view stage 2 published for each profile of ``events`` simulated events (full policy,
    models on), with placeholders for the profile, device and event ids. Returns the templates and one example."""
    import orjson

    from streaming import settings as topics
    from streaming.pipeline import DictState, Origin, decide_device, decide_profile
    from tests.benchmarks.bench_hotpath import SECRET as HOTPATH_SECRET
    from tests.benchmarks.bench_hotpath import holder_for, make_events

    records, _ = make_events(events)
    policy = holder_for("full").current
    devices: dict[bytes, DictState] = {}
    profiles: dict[str, DictState] = {}
    last: dict[str, dict[str, Any]] = {}
    for i, (key, value) in enumerate(records):
        out = decide_device(value, devices.setdefault(key, DictState()), policy, secret=HOTPATH_SECRET.encode(),
                            origin=Origin(i % PARTITIONS, i), key=key)
        if out.topic != "profile" or not out.key or out.value is None:
            continue
        for o in decide_profile(out.value, profiles.setdefault(out.key, DictState()), policy):
            if o.topic == topics.PROFILES and o.value and o.value.get("last_event"):
                last[str(o.key)] = o.value
    templates = []
    for view in last.values():
        v = copy.deepcopy(view)
        v["profile_id"] = "@@P@@"
        v["user_id"] = "@@P@@" if v.get("user_id") else None
        v["devices"] = ["@@D@@"]
        le = v["last_event"]
        le["event_id"], le["device_id"], le["session_id"] = "@@E@@", "@@D@@", "@@D@@:1793647979622"
        if isinstance(le.get("ledger", {}).get("identity"), dict):
            le["ledger"]["identity"]["profile_id"] = "@@P@@"
        templates.append(orjson.dumps(v))
    example = next(iter(last.values()))
    return templates, example


def publish_profiles(address: str, n: int, templates: list[bytes]) -> dict[str, Any]:
    """``n`` profile views to ``profiles`` and one device each to ``profiles.devices``; waits for every ack."""
    from confluent_kafka import Producer

    from streaming import settings as topics

    producer = Producer({"bootstrap.servers": address, "acks": "all", "linger.ms": 50, "batch.size": 1_000_000,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 500_000,
                         "queue.buffering.max.kbytes": 1_048_576, "client.id": "bench-serving-publish"})
    errors: list[str] = []
    acked = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked[0] += 1

    def produce(topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.05)

    t0 = time.monotonic()
    view_bytes = 0
    for i in range(n):
        pid, did, eid = profile_id(i).encode(), uuidish(b"d", i).encode(), uuidish(b"e", i).encode()
        value = templates[i % len(templates)].replace(b"@@P@@", pid).replace(b"@@D@@", did).replace(b"@@E@@", eid)
        view_bytes += len(value)
        produce(topics.PROFILES, pid, value)
        produce(topics.PROFILE_DEVICES, did, b'{"profile_id":"' + pid + b'","at":"2026-11-02T19:33:24.933000Z"}')
        if i % 2000 == 0:
            producer.poll(0)
    producer.flush(300)
    seconds = time.monotonic() - t0
    if errors or acked[0] != 2 * n:
        raise RuntimeError(f"publishing failed: {acked[0]} of {2 * n} acked, errors {errors[:3]}")
    return {"profiles": n, "records": 2 * n, "seconds": round(seconds, 2), "records_per_s": round(2 * n / seconds),
            "mean_view_bytes": round(view_bytes / max(n, 1)), "view_mib": round(view_bytes / 2**20, 1)}


# --- the bare handler (a process of its own: `--_bare`) -----------------------------------------------------------


def run_bare(port: int, body_file: Path) -> None:
    """A raw ASGI app that answers every request with the same constant body, on uvicorn with the serving
    process's options (``streaming/serving/__main__.py``)."""
    import uvicorn

    body = body_file.read_bytes()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    answer = {"type": "http.response.body", "body": body}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await send(start)
        await send(answer)

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="on", access_log=False,
                log_level="warning", server_header=False, date_header=False, timeout_keep_alive=75,
                timeout_graceful_shutdown=5)


# --- the lookup load generator (a process of its own: `--_load lookup`) -------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection, one request in flight; responses parsed by Content-Length."""

    def __init__(self, load: _Lookups) -> None:
        self.load = load
        self.buf = b""
        self.need = -1
        self.status = 0
        self.sched = 0.0
        self.sent = 0.0
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost += 1

    def send(self, sched: float, data: bytes) -> None:
        self.sched = sched
        self.sent = time.perf_counter()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = buf
                    return
                m = CL_RE.search(buf, 0, end + 2)
                self.status = int(buf[9:12])
                self.need = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) < self.need:
                self.buf = buf
                return
            buf = buf[self.need:]
            self.need = -1
            self.load.done(self, self.status)
            if not buf:
                self.buf = b""
                return


class _Lookups:
    def __init__(self, requests: list[bytes], *, closed: bool) -> None:
        self.requests = requests
        self.i = 0
        self.closed = closed
        self.idle: list[_Conn] = []
        self.queue: collections.deque[float] = collections.deque()
        self.lost = 0
        self.stop_at = float("inf")
        self.reset()

    def reset(self) -> None:
        self.sched_lat: list[float] = []
        self.send_lat: list[float] = []
        self.lag: list[float] = []
        self.statuses: dict[int, int] = {}
        self.completed = 0
        self.last_done = 0.0

    def next_request(self) -> bytes:
        data = self.requests[self.i % len(self.requests)]
        self.i += 1
        return data

    def dispatch(self, sched: float) -> None:
        if self.idle:
            self.idle.pop().send(sched, self.next_request())
        else:
            self.queue.append(sched)

    def done(self, conn: _Conn, status: int) -> None:
        now = time.perf_counter()
        self.sched_lat.append(now - conn.sched)
        self.send_lat.append(now - conn.sent)
        self.lag.append(conn.sent - conn.sched)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.completed += 1
        self.last_done = now
        if self.closed:
            if now < self.stop_at:
                conn.send(now, self.next_request())
            else:
                self.idle.append(conn)
        elif self.queue:
            conn.send(self.queue.popleft(), self.next_request())
        else:
            self.idle.append(conn)


async def _open_loop(load: _Lookups, rate: float, duration: float) -> tuple[float, int]:
    """Requests scheduled at ``rate`` for ``duration`` s; waits for them all. The event loop's timers have 1 ms
    resolution (uvloop's clock, epoll's timeout), which alone put ~0.5 ms of lag on every request: a pacer thread
    sleeps until each scheduled time (``time.sleep``: ~0.1 ms slack) and hands the due requests to the loop."""
    loop = asyncio.get_running_loop()
    total = max(1, int(rate * duration))
    start = time.perf_counter() + 0.005

    def dispatch(first: int, last: int) -> None:
        for i in range(first, last):
            load.dispatch(start + i / rate)

    def pace() -> None:
        i = 0
        while i < total:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            loop.call_soon_threadsafe(dispatch, i, due)
            i = due

    pacer = threading.Thread(target=pace, name="pacer", daemon=True)
    pacer.start()
    while pacer.is_alive():
        await asyncio.sleep(0.01)
    deadline = time.perf_counter() + 15
    while load.completed < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.002)
    return start, total


async def lookup_load(port: int, paths: list[str], auth: str, *, mode: str, rate: float, duration: float,
                      conns: int, server_pid: int, warmup: float) -> dict[str, Any]:
    requests = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n\r\n".encode()
                for p in paths]
    load = _Lookups(requests, closed=mode == "closed")
    sys.setswitchinterval(0.0005)  # the pacer thread gets the GIL within 0.5 ms of waking, not 5 ms
    loop = asyncio.get_running_loop()
    conn_list = []
    for _ in range(conns):
        _, conn = await loop.create_connection(lambda: _Conn(load), "127.0.0.1", port)
        conn_list.append(conn)
        load.idle.append(conn)
    if warmup > 0:  # unmeasured: connections, the server's caches and this process's code paths warm
        warm = _Lookups(requests, closed=False)
        for c in conn_list:
            c.load = warm
        warm.idle, load.idle = load.idle, []
        await _open_loop(warm, min(rate, 2000.0) if rate > 0 else 1000.0, warmup)
        for c in conn_list:
            c.load = load
        load.idle, warm.idle = warm.idle, []
        load.i = warm.i
    cpu0, server0 = time.process_time(), cpu_seconds(server_pid)
    wall0 = time.perf_counter()
    if mode == "closed":
        load.stop_at = wall0 + duration
        for c in list(load.idle):
            load.idle.remove(c)
            c.send(time.perf_counter(), load.next_request())
        while time.perf_counter() < load.stop_at:
            await asyncio.sleep(0.01)
        while len(load.idle) < conns and time.perf_counter() < load.stop_at + 10:
            await asyncio.sleep(0.002)
        start, total = wall0, load.completed
        elapsed = load.stop_at - wall0
    else:
        start, total = await _open_loop(load, rate, duration)
        elapsed = max(load.last_done - start, 1e-9)
    wall = time.perf_counter() - wall0
    client_cpu = time.process_time() - cpu0
    server_cpu = cpu_seconds(server_pid) - server0
    for c in conn_list:
        if c.transport is not None:
            c.transport.close()
    ok = load.statuses.get(200, 0)
    return {"mode": mode, "rate": rate if mode == "open" else None, "duration_s": duration, "connections": conns,
            "scheduled": total, "completed": load.completed, "statuses": {str(k): v for k, v in load.statuses.items()},
            "connections_lost": load.lost, "achieved_rate": round(load.completed / elapsed, 1),
            "latency_from_scheduled_ms": summary_ms(load.sched_lat), "latency_from_sent_ms": summary_ms(load.send_lat),
            "dispatch_lag_ms": summary_ms(load.lag), "client_cpu_share": round(client_cpu / wall, 3),
            "client_cpu_us_per_request": round(client_cpu / max(load.completed, 1) * 1e6, 1),
            "server_cpu_share": round(server_cpu / wall, 3),
            "server_cpu_us_per_request": round(server_cpu / max(ok, 1) * 1e6, 1)}


def run_lookup_load(port: int, paths_file: Path, server: str, server_pid: int, *, mode: str, rate: float,
                    duration: float, conns: int, warmup: float = 1.0) -> dict[str, Any]:
    cmd = [sys.executable, str(SCRIPT), "--_load", "lookup", "--port", str(port), "--paths-json", str(paths_file),
           "--mode", mode, "--rate", str(rate), "--duration", str(duration), "--conns", str(conns),
           "--server-pid", str(server_pid), "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["server"] = server
    result["loadavg"] = loadavg()
    return result


#: p99 above this at a fixed rate means requests queue up over a step: the server does not keep up with the rate.
KEPT_UP_P99_MS = 100.0


def kept_up(run: dict[str, Any], p99_ms: float = KEPT_UP_P99_MS) -> bool:
    """Every request answered 200 and p99 (from the scheduled time) within ``p99_ms``."""
    return (run["completed"] == run["scheduled"] and run["statuses"].get("200", 0) == run["scheduled"]
            and run["latency_from_scheduled_ms"]["p99"] <= p99_ms)


def settle(pid: int, *, below: float = 0.03, timeout: float = 120.0) -> float:
    """Seconds until the process uses less than ``below`` of a core over a second (RocksDB compacts after a
    catch-up: timing lookups during it would charge the compaction to them)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        c0 = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - c0 < below:
            break
    return round(time.monotonic() - t0, 1)


# --- part 1: lookups --------------------------------------------------------------------------------------------------


def part_lookups(args: argparse.Namespace, tmp: Path, t0: float, templates: list[bytes]) -> dict[str, Any]:
    from streaming.broker import free_port

    res: dict[str, Any] = {"profiles": args.profiles}
    with fresh_broker(tmp, "lookups") as broker:
        # a serving process on empty topics: the fixed start-up cost and the baseline RSS
        empty = Serving(broker.address, tmp / "lookups", tmp / "store-empty", free_port(), tmp / "serving-empty.log")
        empty.wait_ready(60)
        time.sleep(1.0)
        cpu_s, cpu_b = cpu_seconds(empty.proc.pid), cpu_seconds(broker.process.pid)
        time.sleep(3.0)
        res["empty"] = {"listening_s": round(empty.listening_s or 0, 2), "ready_s": round(empty.ready_s or 0, 2),
                        "rss": rss_bytes(empty.proc.pid),
                        "idle_cpu_share": round((cpu_seconds(empty.proc.pid) - cpu_s) / 3, 3),
                        "broker_cpu_share_with_idle_reader": round((cpu_seconds(broker.process.pid) - cpu_b) / 3, 3)}
        empty.stop()
        log(t0, f"lookups: empty serving ready in {res['empty']['ready_s']} s, RSS {mib(res['empty']['rss'])}")

        res["publish"] = publish_profiles(broker.address, args.profiles, templates)
        log(t0, f"lookups: published {args.profiles:,} views + devices in {res['publish']['seconds']} s")
        serving = Serving(broker.address, tmp / "lookups", tmp / "store-lookups", free_port(),
                          tmp / "serving-lookups.log")
        bare = None
        try:
            serving.wait_ready(600)
            applied_at_ready = int(serving.ready_doc.get("applied", 0))
            complete_after = serving.wait_applied(2 * args.profiles, 60)
            res["catchup"] = {"listening_s": round(serving.listening_s or 0, 2),
                              "ready_s": round(serving.ready_s or 0, 2),
                              "applied_at_ready": applied_at_ready, "published": 2 * args.profiles,
                              "complete_s_after_ready": None if complete_after is None else round(complete_after, 2),
                              "rss_at_ready": rss_bytes(serving.proc.pid), "rss_peak_catchup": serving.rss_peak}
            log(t0, f"lookups: serving caught up in {res['catchup']['ready_s']} s "
                    f"({applied_at_ready:,} of {2 * args.profiles:,} applied at ready)")
            res["catchup"]["settle_s"] = settle(serving.proc.pid)
            res["catchup"]["rss_settled"] = rss_bytes(serving.proc.pid)
            log(t0, f"lookups: serving idle {res['catchup']['settle_s']} s after ready")
            rng = random.Random(3)
            ids = [profile_id(rng.randrange(args.profiles)) for _ in range(args.paths)]
            sample_status, sample = http_get(serving.port, f"/v1/profiles/{ids[0]}")
            if sample_status != 200:
                raise RuntimeError(f"a loaded profile answered {sample_status}: {sample[:300]!r}")
            res["answer_bytes"] = len(sample)
            res["answer_example"] = json.loads(sample)
            body_file = tmp / "bare-body.json"
            body_file.write_bytes(sample)
            paths_file = tmp / "paths-id.json"
            paths_file.write_text(json.dumps([f"/v1/profiles/{i}" for i in ids]))
            anon_file = tmp / "paths-anon.json"
            anon_file.write_text(json.dumps([f"/v1/profiles?anonymousId={uuidish(b'd', rng.randrange(args.profiles))}"
                                             for _ in range(args.paths)]))
            bare_port = free_port()
            bare = start_process([sys.executable, str(SCRIPT), "--_bare", "--port", str(bare_port), "--body",
                                  str(body_file)], os.environ.copy(), tmp / "bare.log")
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http_get(bare_port, "/", key=None)[0] == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            targets = {"serving": (serving.port, serving.proc.pid), "bare": (bare_port, bare.pid)}

            def run(server: str, **kw: Any) -> dict[str, Any]:
                port, pid = targets[server]
                return run_lookup_load(port, paths_file, server, pid, **kw)

            # a) fixed rate, alternating order
            res["fixed"] = []
            for r in range(args.rounds):
                for server in (("bare", "serving") if r % 2 == 0 else ("serving", "bare")):
                    out = run(server, mode="open", rate=args.rate, duration=args.duration, conns=32)
                    res["fixed"].append(out)
                    log(t0, f"lookups @ {args.rate:g}/s [{server}] p50 {out['latency_from_scheduled_ms']['p50']} "
                            f"p99 {out['latency_from_scheduled_ms']['p99']} ms")
            anon = run_lookup_load(serving.port, anon_file, "serving", serving.proc.pid, mode="open",
                                   rate=args.rate, duration=args.duration, conns=32)
            anon["lookup"] = "anonymousId"
            res["fixed_by_anonymous_id"] = anon
            log(t0, f"lookups by anonymousId @ {args.rate:g}/s p50 {anon['latency_from_scheduled_ms']['p50']} "
                    f"p99 {anon['latency_from_scheduled_ms']['p99']} ms")
            # b) the ladder: the highest fixed rate with p99 within the target
            rates = [float(x) for x in args.ladder.split(",") if x]
            res["ladder"] = []
            for r in range(args.ladder_rounds):
                for server in (("serving", "bare") if r % 2 == 0 else ("bare", "serving")):
                    steps, fails = [], 0
                    for rate in rates:
                        out = run(server, mode="open", rate=rate, duration=args.step_duration, conns=64, warmup=0.5)
                        out["meets"], out["kept_up"] = kept_up(out, TARGET["p99_ms"]), kept_up(out)
                        steps.append(out)
                        fails = 0 if out["kept_up"] else fails + 1
                        if fails >= 2:
                            break
                    best = max((s["rate"] for s in steps if s["meets"]), default=0.0)
                    most = max((s["rate"] for s in steps if s["kept_up"]), default=0.0)
                    res["ladder"].append({"server": server, "round": r, "max_sustainable": best, "max_kept_up": most,
                                          "steps": steps})
                    log(t0, f"ladder [{server}] round {r}: max rate with p99 <= {TARGET['p99_ms']:g} ms {best:,.0f}/s,"
                            f" kept up (p99 <= {KEPT_UP_P99_MS:g} ms) {most:,.0f}/s")
            # c) closed loop: the peak
            res["closed"] = []
            for r in range(args.rounds):
                for server in (("serving", "bare") if r % 2 == 0 else ("bare", "serving")):
                    out = run(server, mode="closed", rate=0, duration=args.closed_duration, conns=64)
                    res["closed"].append(out)
                    log(t0, f"closed loop [{server}]: {out['achieved_rate']:,.0f} req/s, client CPU "
                            f"{out['client_cpu_share']:.2f}, server CPU {out['server_cpu_share']:.2f}")
            res["rss_after_lookups"] = rss_bytes(serving.proc.pid)
            res["store_bytes"] = dir_bytes(serving.store)
        finally:
            if bare is not None:
                stop_process(bare)
            serving.stop()
    if (tmp / "store-lookups").exists():
        res["store_reads"] = store_reads(tmp / "store-lookups", args.profiles)
    res["summary"] = summarize_lookups(res)
    return res


def _best(runs: list[dict[str, Any]], server: str, key: str = "p99") -> dict[str, Any] | None:
    mine = [r for r in runs if r["server"] == server]
    return min(mine, key=lambda r: r["latency_from_scheduled_ms"][key]) if mine else None


def summarize_lookups(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fixed = {s: _best(res.get("fixed", []), s) for s in ("serving", "bare")}
    if fixed["serving"] and fixed["bare"]:
        s, b = fixed["serving"]["latency_from_scheduled_ms"], fixed["bare"]["latency_from_scheduled_ms"]
        out["fixed_p50_ms"], out["fixed_p99_ms"] = s["p50"], s["p99"]
        out["bare_p50_ms"], out["bare_p99_ms"] = b["p50"], b["p99"]
        out["p50_added_ms"], out["p99_added_ms"] = round(s["p50"] - b["p50"], 3), round(s["p99"] - b["p99"], 3)
        out["cpu_us_per_request"] = {k: min(r["server_cpu_us_per_request"] for r in res["fixed"] if r["server"] == k)
                                     for k in ("serving", "bare")}
    ladder = res.get("ladder", [])
    maxes = {s: max((x["max_sustainable"] for x in ladder if x["server"] == s), default=None)
             for s in ("serving", "bare")}
    out["max_sustainable"] = maxes
    if maxes["serving"] and maxes["bare"]:
        out["max_sustainable_ratio"] = round(maxes["serving"] / maxes["bare"], 3)
    kept = {s: max((x["max_kept_up"] for x in ladder if x["server"] == s), default=None) for s in ("serving", "bare")}
    out["max_kept_up"] = kept
    if kept["serving"] and kept["bare"]:
        out["max_kept_up_ratio"] = round(kept["serving"] / kept["bare"], 3)
    closed = res.get("closed", [])
    peaks = {s: max((r["achieved_rate"] for r in closed if r["server"] == s), default=None)
             for s in ("serving", "bare")}
    out["closed_peak"] = peaks
    if peaks["serving"] and peaks["bare"]:
        out["closed_peak_ratio"] = round(peaks["serving"] / peaks["bare"], 3)
    cpu = {s: min((r["server_cpu_us_per_request"] for r in closed if r["server"] == s), default=None)
           for s in ("serving", "bare")}
    out["closed_cpu_us_per_request"] = cpu
    if cpu["serving"] and cpu["bare"]:
        out["cpu_capacity_ratio"] = round(cpu["bare"] / cpu["serving"], 3)
        out["serving_capacity_one_core"] = round(1e6 / cpu["serving"])
    client = [r for r in closed if r["server"] == "bare"]
    if client:
        top = max(client, key=lambda r: r["achieved_rate"])
        out["client"] = {"cpu_share_at_bare_peak": top["client_cpu_share"],
                         "cpu_us_per_request": top["client_cpu_us_per_request"],
                         "ceiling_one_core": round(1e6 / max(top["client_cpu_us_per_request"], 1e-9))}
    if res.get("empty") and res.get("catchup"):
        grown = res["catchup"]["rss_at_ready"] - res["empty"]["rss"]
        out["rss_growth"] = grown
        out["rss_per_100k"] = grown / res["profiles"] * 100_000
        if res.get("rss_after_lookups"):
            out["rss_per_100k_after_lookups"] = (res["rss_after_lookups"] - res["empty"]["rss"]) / res["profiles"] \
                * 100_000
    if fixed["serving"]:
        out["meets"] = {"p50": out.get("fixed_p50_ms", 99) <= TARGET["p50_ms"],
                        "p99": out.get("fixed_p99_ms", 99) <= TARGET["p99_ms"],
                        "rate_within_p99_target": (maxes["serving"] or 0) >= TARGET["rate"],
                        "rate_kept_up": (kept["serving"] or 0) >= TARGET["rate"],
                        "ratio_kept_up": (out.get("max_kept_up_ratio") or 0) >= TARGET["ratio"],
                        "ratio_cpu_per_request": (out.get("cpu_capacity_ratio") or 0) >= TARGET["ratio"]}
    return out


# --- part 2: freshness and read-your-writes ---------------------------------------------------------------------------


def bare_hop(address: str, topic: str, rate: float, duration: float, warmup: float) -> dict[str, Any]:
    """Producer (the collector's settings: idempotent, acks=all, linger 1 ms) → consumer (assigned, no group,
    fetch wait 10 ms: the serving reader's) on a fresh 3-partition topic, at ``rate`` msg/s."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": address})
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1,
                                            config={"retention.ms": "3600000", "retention.bytes": "1073741824"})])
    for f in futures.values():
        f.result(30)
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 1, "client.id": "bench-hop"})
    consumer = Consumer({"bootstrap.servers": address, "group.id": f"bench-hop-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    received: dict[int, float] = {}
    stop = threading.Event()

    def poll_producer() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    def consume() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            received.setdefault(int(msg.key()), time.perf_counter())

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            acked[int(msg.key())] = time.perf_counter()

    threads = [threading.Thread(target=poll_producer, daemon=True), threading.Thread(target=consume, daemon=True)]
    for th in threads:
        th.start()
    payload = b"x" * 345
    total = int(rate * (duration + warmup))
    first_measured = int(rate * warmup)
    start = time.perf_counter() + 0.01
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[i] = time.perf_counter()
        producer.produce(topic, key=str(i).encode(), value=payload, on_delivery=delivered)
    deadline = time.perf_counter() + 20
    while len(received) < total and time.perf_counter() < deadline:
        time.sleep(0.05)
    stop.set()
    for th in threads:
        th.join(5)
    producer.flush(10)
    consumer.close()
    measured = [i for i in range(first_measured, total) if i in received]
    return {"rate": rate, "duration_s": duration, "sent": total - first_measured, "received": len(measured),
            "produce_to_consume_ms": summary_ms([received[i] - sent[i] for i in measured]),
            "ack_to_consume_ms": summary_ms([received[i] - acked[i] for i in measured if i in acked]),
            "produce_to_ack_ms": summary_ms([acked[i] - sent[i] for i in measured if i in acked])}


class _ViewObserver(threading.Thread):
    """A bare consumer of ``profiles`` (the serving reader's fetch wait, assigned, no group) in the load process:
    when each profile's views arrive on the topic, and which ``events.raw`` offsets each reflects."""

    def __init__(self, address: str) -> None:
        super().__init__(name="observer", daemon=True)
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from streaming import settings as topics

        self.consumer = Consumer({"bootstrap.servers": address, "group.id": f"bench-obs-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.consumer.assign([TopicPartition(topics.PROFILES, p, OFFSET_END) for p in range(PARTITIONS)])
        self.views: dict[str, list[tuple[float, dict[str, int]]]] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        import orjson

        while not self.halt.is_set():
            msg = self.consumer.poll(0.05)  # poll, not consume(n, t): that waits for n messages or t
            if msg is None or msg.error() or not msg.value() or not msg.key():
                continue
            now = time.perf_counter()
            offsets = orjson.loads(msg.value()).get("offsets") or {}
            self.views.setdefault(msg.key().decode(), []).append((now, offsets))
        self.consumer.close()

    def first_reflecting(self, key: str, token: str) -> float | None:
        wanted = [part.split(".") for part in token.split(",")]
        for seen, offsets in list(self.views.get(key, [])):
            if all(offsets.get(p, -1) >= int(o) for p, o in wanted):
                return seen
        return None


async def fresh_load(cport: int, sport: int, rate: float, duration: float, warmup: float, devices: int,
                     wait_ms: int, *, broker: str, read_every: int, max_reads: int) -> dict[str, Any]:
    """Open loop at ``rate``: each event POSTed to the collector; every ``read_every``-th event, at its 200, read
    back through the serving process with ``after=<token>`` (at most ``max_reads`` reads outstanding: when the
    pipeline falls behind, a read per event opened thousands of connections and overflowed the listen backlog);
    a bare consumer of ``profiles`` sees when each event's view reaches the topic. Events of the first ``warmup`` s
    are not measured. ``devices`` 0: every event from a device never seen before (a new visitor's first event)."""
    import orjson

    observer = _ViewObserver(broker)
    observer.start()
    cpool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    spool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    track_auth, read_auth = basic(WRITE_KEY), basic(SERVER_KEY)
    rows: list[dict[str, Any]] = []
    errors: dict[str, int] = {}
    opened = {"collector": 0, "serving": 0}
    reading = [0, 0]  # outstanding reads, reads skipped at the cap
    prefix = uuid.uuid4().hex[:6]

    async def take(pool: list[Any], port: int, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if pool:
            return pool.pop()  # type: ignore[no-any-return]
        opened[name] += 1
        return await asyncio.open_connection("127.0.0.1", port)

    async def exchange(rw: tuple[asyncio.StreamReader, asyncio.StreamWriter], data: bytes) -> tuple[int, bytes]:
        reader, writer = rw
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        m = CL_RE.search(head)
        return int(head[9:12]), await reader.readexactly(int(m.group(1)) if m else 0)

    def error(name: str) -> None:
        errors[name] = errors.get(name, 0) + 1

    async def one(i: int, sched: float, measured: bool) -> None:
        anon = f"bench-{prefix}-{i % devices}" if devices else f"bench-{prefix}-new-{i}"
        event = "Product Added" if i % 7 == 6 else "Product Viewed"
        body = orjson.dumps({"type": "track", "event": event, "anonymousId": anon, "messageId": f"{prefix}-{i}",
                             "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                             "context": {"ip": "8.8.8.8", "userAgent": CHROME},
                             "properties": {"category": "shoes", "price": 40, "sku": f"SKU-{i % 50}"}})
        post = (f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {track_auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        row: dict[str, Any] = {"sched": sched, "anon": anon, "measured": measured}
        try:
            conn = await take(cpool, cport, "collector")
            row["send"] = time.perf_counter()
            status, answer = await exchange(conn, post)
            row["ok"] = time.perf_counter()
            cpool.append(conn)
        except (OSError, asyncio.IncompleteReadError) as exc:
            error(f"collector {type(exc).__name__}")
            return
        if status != 200:
            error(f"collector {status}")
            return
        row["token"] = orjson.loads(answer)["token"]
        rows.append(row)
        if i % read_every:
            return
        if reading[0] >= max_reads:
            reading[1] += 1
            return
        reading[0] += 1
        get = (f"GET /v1/profiles?anonymousId={anon}&after={row['token']}&wait_ms={wait_ms} HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\nAuthorization: {read_auth}\r\n\r\n").encode()
        try:
            sconn = await take(spool, sport, "serving")
            row["read"] = time.perf_counter()
            status, answer = await exchange(sconn, get)
            row["seen"] = time.perf_counter()
            spool.append(sconn)
        except (OSError, asyncio.IncompleteReadError) as exc:
            error(f"serving {type(exc).__name__}")
            return
        finally:
            reading[0] -= 1
        if status != 200:
            error(f"serving {status}")
            row.pop("seen", None)
            return
        row["stale"] = b'"stale":true' in answer

    total = int(rate * (warmup + duration))
    first = int(rate * warmup)
    tasks = []
    start = time.perf_counter() + 0.01
    cpu0 = time.process_time()
    i = 0
    while i < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1) if now >= start else 0
        while i < due:
            tasks.append(asyncio.ensure_future(one(i, start + i / rate, i >= first)))
            i += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    await asyncio.sleep(0.5)  # the observer's last views
    observer.halt.set()
    observer.join(5)
    measured = [r for r in rows if r["measured"]]
    for r in measured:
        r["topic"] = observer.first_reflecting(r["anon"], r["token"])
    read = [r for r in measured if "seen" in r]
    fresh = [r for r in read if not r["stale"]]
    on_topic = [r for r in measured if r["topic"] is not None]
    half = start + warmup + duration / 2

    def s(a: str, b: str, subset: list[dict[str, Any]]) -> dict[str, float]:
        return summary_ms([r[b] - r[a] for r in subset])

    return {"rate": rate, "duration_s": duration, "warmup_s": warmup, "devices": devices,
            "events": total - first, "tracked": len(measured), "read_every": read_every, "reads": len(read),
            "reads_skipped_at_cap": reading[1], "stale": len(read) - len(fresh), "errors": errors,
            "connections_opened": opened, "client_cpu_share": round((time.process_time() - cpu0) / wall, 3),
            "views_on_topic": len(on_topic),
            "collector_ms": s("send", "ok", measured),
            "to_topic_ms": s("ok", "topic", on_topic),
            "to_topic_first_half_ms": s("ok", "topic", [r for r in on_topic if r["sched"] < half]),
            "to_topic_second_half_ms": s("ok", "topic", [r for r in on_topic if r["sched"] >= half]),
            "freshness_ms": s("ok", "seen", fresh),
            "freshness_first_half_ms": s("ok", "seen", [r for r in fresh if r["sched"] < half]),
            "freshness_second_half_ms": s("ok", "seen", [r for r in fresh if r["sched"] >= half]),
            "serving_after_topic_ms": s("topic", "seen", [r for r in fresh if r["topic"] is not None]),
            "read_wait_ms": s("read", "seen", fresh),
            "ryw_ms": s("send", "seen", fresh), "ryw_from_scheduled_ms": s("sched", "seen", fresh),
            "ryw_including_stale_ms": s("send", "seen", read),
            "serving_after_topic_each_ms": [round((r["seen"] - r["topic"]) * 1000, 1) for r in fresh
                                            if r["topic"] is not None] if not devices else None}


def warm_pipeline(cport: int, sport: int, timeout: float = 120.0) -> float:
    """Until an event through the collector is visible in the serving process (the worker joins its group)."""
    import orjson

    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < timeout:
        n += 1
        body = orjson.dumps({"type": "track", "event": "Product Viewed", "anonymousId": "bench-warm",
                             "messageId": f"warm-{uuid.uuid4().hex}", "context": {"ip": "8.8.8.8",
                                                                                    "userAgent": CHROME}})
        conn = http.client.HTTPConnection("127.0.0.1", cport, timeout=10)
        conn.request("POST", "/v1/track", body=body, headers={"authorization": basic(WRITE_KEY),
                                                               "content-type": "application/json"})
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        conn.close()
        if resp.status != 200:
            time.sleep(0.5)
            continue
        status, answer = http_get(sport, f"/v1/profiles?anonymousId=bench-warm&after={doc['token']}&wait_ms=5000",
                                  timeout=15)
        if status == 200 and not json.loads(answer)["stale"]:
            return time.monotonic() - t0
    raise RuntimeError("the pipeline did not deliver an event to the serving process in time")


def part_freshness(args: argparse.Namespace, tmp: Path, t0: float) -> dict[str, Any]:
    from streaming import settings as topics
    from streaming.broker import free_port
    from streaming.control import publish_policy
    from streaming.policy import bootstrap_policy

    res: dict[str, Any] = {"rate": args.fresh_rate, "duration_s": args.fresh_duration}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    serving = None
    with fresh_broker(tmp, "freshness") as broker:
        try:
            publish_policy(broker.address, topics.CONTROL_POLICY, bootstrap_policy())
            data_dir = tmp / "freshness"
            env = base_env(broker.address, data_dir)
            procs["worker"] = start_process([sys.executable, "-m", "streaming.worker"], env, tmp / "worker.log")
            cport = free_port()
            procs["collector"] = start_process(
                [sys.executable, "-m", "streaming.collector"],
                {**env, "FIRSTMILE_WRITE_KEYS": f"{WRITE_KEY}:bench", "FIRSTMILE_RATE_LIMIT_PER_S": "0",
                 "FIRSTMILE_COLLECTOR_PORT": str(cport)}, tmp / "collector.log")
            serving = Serving(broker.address, data_dir, tmp / "store-fresh", free_port(), tmp / "serving-fresh.log")
            serving.wait_ready(60)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http_get(cport, "/readyz", key=None)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("collector not ready")
                time.sleep(0.05)
            res["hop_before"] = bare_hop(broker.address, "bench.hop.before", args.fresh_rate, args.hop_duration, 2.0)
            log(t0, f"freshness: bare hop before p50 {res['hop_before']['produce_to_consume_ms'].get('p50')} "
                    f"p99 {res['hop_before']['produce_to_consume_ms'].get('p99')} ms")
            res["pipeline_warm_s"] = round(warm_pipeline(cport, serving.port), 2)
            pids = {"worker": procs["worker"].pid, "collector": procs["collector"].pid,
                    "serving": serving.proc.pid, "broker": broker.process.pid}
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            w0 = time.monotonic()
            cmd = [sys.executable, str(SCRIPT), "--_load", "fresh", "--port", str(serving.port), "--collector-port",
                   str(cport), "--rate", str(args.fresh_rate), "--duration", str(args.fresh_duration), "--warmup",
                   str(args.fresh_warmup), "--devices", str(args.fresh_devices), "--broker", broker.address,
                   "--read-every", str(args.read_every)]
            out = subprocess.run(cmd, capture_output=True, text=True,
                                 timeout=args.fresh_duration + args.fresh_warmup + 180)
            if out.returncode != 0:
                raise RuntimeError(f"freshness load failed: {out.stderr[-2000:]}")
            wall = time.monotonic() - w0
            res["pipeline"] = json.loads(out.stdout.strip().splitlines()[-1])
            res["pipeline"]["cpu_share"] = {k: round((cpu_seconds(p) - cpu0[k]) / wall, 3) for k, p in pids.items()}
            res["pipeline"]["loadavg"] = loadavg()
            p = res["pipeline"]
            log(t0, f"freshness: collector 200 -> visible p50 {p['freshness_ms'].get('p50')} p99 "
                    f"{p['freshness_ms'].get('p99')} ms; stale {p['stale']}")
            # a new visitor's first event, alone on a quiet pipeline: its device entry and its view are two topics
            cmd = [sys.executable, str(SCRIPT), "--_load", "fresh", "--port", str(serving.port), "--collector-port",
                   str(cport), "--rate", str(args.new_rate), "--duration", str(args.new_duration), "--warmup", "0",
                   "--devices", "0", "--broker", broker.address, "--read-every", "1"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.new_duration + 180)
            if out.returncode != 0:
                raise RuntimeError(f"new-device load failed: {out.stderr[-2000:]}")
            res["new_devices"] = json.loads(out.stdout.strip().splitlines()[-1])
            nd = res["new_devices"]
            log(t0, f"freshness: new devices at {args.new_rate:g}/s: p50 {nd['freshness_ms'].get('p50')} p99 "
                    f"{nd['freshness_ms'].get('p99')} ms; stale {nd['stale']}, errors {nd['errors']}")
            res["hop_after"] = bare_hop(broker.address, "bench.hop.after", args.fresh_rate, args.hop_duration, 2.0)
            log(t0, f"freshness: bare hop after p50 {res['hop_after']['produce_to_consume_ms'].get('p50')} "
                    f"p99 {res['hop_after']['produce_to_consume_ms'].get('p99')} ms")
        finally:
            if serving is not None:
                serving.stop()
            for proc in procs.values():
                stop_process(proc)
    hops = [res[k]["produce_to_consume_ms"] for k in ("hop_before", "hop_after") if res.get(k)]
    f = res.get("pipeline", {}).get("freshness_ms", {})
    if hops and f.get("n"):
        hop50 = sum(h["p50"] for h in hops) / len(hops)
        hop99 = sum(h["p99"] for h in hops) / len(hops)
        t = res["pipeline"]["to_topic_ms"]
        res["summary"] = {"freshness_p50_ms": f["p50"], "freshness_p99_ms": f["p99"], "to_topic_p50_ms": t.get("p50"),
                          "to_topic_p99_ms": t.get("p99"), "hop_p50_ms": round(hop50, 2),
                          "hop_p99_ms": round(hop99, 2), "p50_in_hops": round(f["p50"] / hop50, 2),
                          "p99_in_hops": round(f["p99"] / hop99, 2),
                          "ryw_p50_ms": res["pipeline"]["ryw_ms"]["p50"],
                          "ryw_p99_ms": res["pipeline"]["ryw_ms"]["p99"]}
    return res


# --- part 3: catch-up from the topic, restart, memory -----------------------------------------------------------------


def part_catchup(args: argparse.Namespace, tmp: Path, t0: float, templates: list[bytes],
                 empty_rss: int | None) -> dict[str, Any]:
    from streaming.broker import free_port

    n = args.catchup_profiles
    res: dict[str, Any] = {"profiles": n}
    with fresh_broker(tmp, "catchup") as broker:
        if empty_rss is None:
            empty = Serving(broker.address, tmp / "catchup", tmp / "store-empty2", free_port(), tmp / "serving-e2.log")
            empty.wait_ready(60)
            time.sleep(1.0)
            empty_rss = rss_bytes(empty.proc.pid)
            empty.stop()
        res["empty_rss"] = empty_rss
        res["publish"] = publish_profiles(broker.address, n, templates)
        res["broker_rss"] = rss_bytes(broker.process.pid)
        log(t0, f"catchup: published {n:,} views + devices in {res['publish']['seconds']} s "
                f"({res['publish']['records_per_s']:,}/s); Tansu RSS {mib(res['broker_rss'])}")
        store = tmp / "store-catchup"
        serving = Serving(broker.address, tmp / "catchup", store, free_port(), tmp / "serving-catchup.log")
        try:
            serving.wait_ready(1800)
            applied = int(serving.ready_doc.get("applied", 0))
            rss_ready = rss_bytes(serving.proc.pid)
            complete_after = serving.wait_applied(2 * n, 120) if applied < 2 * n else 0.0
            cold = {"listening_s": round(serving.listening_s or 0, 2), "ready_s": round(serving.ready_s or 0, 2),
                    "catchup_s": round((serving.ready_s or 0) - (serving.listening_s or 0), 2),
                    "applied_at_ready": applied, "published": 2 * n,
                    "complete_s_after_ready": None if complete_after is None else round(complete_after, 2),
                    "rss_at_ready": rss_ready, "rss_peak": serving.rss_peak}
            cold["records_per_s"] = round(2 * n / max(cold["ready_s"], 1e-9))
            time.sleep(2.0)
            cold["rss_settled"] = rss_bytes(serving.proc.pid)
            cold["store_bytes"] = dir_bytes(store)
            rng = random.Random(9)
            sample = [rng.randrange(n) for _ in range(args.sample)] + list(range(max(0, n - 50), n))
            found = sum(http_get(serving.port, f"/v1/profiles/{profile_id(i)}")[0] == 200 for i in sample)
            cold["sample"], cold["sample_found"] = len(sample), found
            res["cold"] = cold
            log(t0, f"catchup: cold start ready in {cold['ready_s']} s ({applied:,} of {2 * n:,} records applied "
                    f"at ready), sample {found}/{len(sample)} found, RSS {mib(rss_ready)}, "
                    f"store {mib(cold['store_bytes'])}")
            if args.rate > 0:
                res["settle_s"] = settle(serving.proc.pid)
                rng = random.Random(4)
                paths_file = tmp / "paths-1m.json"
                paths_file.write_text(json.dumps([f"/v1/profiles/{profile_id(rng.randrange(n))}"
                                                  for _ in range(args.paths)]))
                res["lookups"] = run_lookup_load(serving.port, paths_file, "serving", serving.proc.pid, mode="open",
                                                 rate=args.rate, duration=args.duration, conns=32)
                lk = res["lookups"]["latency_from_scheduled_ms"]
                log(t0, f"catchup: lookups on {n:,} @ {args.rate:g}/s p50 {lk['p50']} p99 {lk['p99']} ms")
                res["rss_after_lookups"] = rss_bytes(serving.proc.pid)
        finally:
            serving.stop()
        # where the catch-up's time goes: the same records read by a bare consumer, and applied without a broker
        res["bare_read"] = bare_read(broker.address, 2 * n)
        log(t0, f"catchup: a bare consumer reads the {2 * n:,} records in {res['bare_read']['seconds']} s")
        res["store_reads"] = store_reads(store, n)
        res["apply_only"] = apply_only(tmp / "store-apply", templates, min(n, args.apply_profiles))
        log(t0, f"catchup: store.apply without a broker {res['apply_only']['us_per_record']} µs/record")
        serving = Serving(broker.address, tmp / "catchup", store, free_port(), tmp / "serving-restart.log")
        try:
            serving.wait_ready(600)
            res["restart"] = {"listening_s": round(serving.listening_s or 0, 2),
                              "ready_s": round(serving.ready_s or 0, 2),
                              "applied_at_ready": int(serving.ready_doc.get("applied", 0)),
                              "rss_at_ready": rss_bytes(serving.proc.pid)}
            rng = random.Random(9)
            sample = [rng.randrange(n) for _ in range(min(args.sample, 200))]
            res["restart"]["sample_found"] = sum(
                http_get(serving.port, f"/v1/profiles/{profile_id(i)}")[0] == 200 for i in sample)
            res["restart"]["sample"] = len(sample)
            log(t0, f"catchup: restart on the filled store ready in {res['restart']['ready_s']} s")
        finally:
            serving.stop()
    grown = res["cold"]["rss_at_ready"] - empty_rss
    res["summary"] = {"rss_growth": grown, "rss_per_100k": grown / n * 100_000,
                      "store_bytes_per_100k": res["cold"]["store_bytes"] / n * 100_000,
                      "complete_at_ready": res["cold"]["applied_at_ready"] >= 2 * n}
    if res.get("rss_after_lookups"):
        res["summary"]["rss_per_100k_after_lookups"] = (res["rss_after_lookups"] - empty_rss) / n * 100_000
    return res


def bare_read(address: str, expected: int) -> dict[str, Any]:
    """``profiles`` and ``profiles.devices`` from the beginning with a plain consumer (the serving reader's
    settings, nothing applied), until ``expected`` records were read (Tansu's end-of-partition can come early)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from streaming import settings as topics

    consumer = Consumer({"bootstrap.servers": address, "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in (topics.PROFILES, topics.PROFILE_DEVICES)
                     for p in range(PARTITIONS)])
    t0 = time.monotonic()
    count, last = 0, time.monotonic()
    while count < expected and time.monotonic() - last < 20:
        for msg in consumer.consume(1000, 0.2):
            if not msg.error():
                count += 1
                last = time.monotonic()
    seconds = time.monotonic() - t0
    consumer.close()
    return {"records": count, "seconds": round(seconds, 2), "records_per_s": round(count / max(seconds, 1e-9))}


def store_reads(store_dir: Path, n: int, samples: int = 20000) -> dict[str, Any]:
    """The serving store's own read calls, in this process on the filled store (after the serving process
    stopped), µs per call: a lookup's ``served()`` (hit: the prepared answer), ``is_erased()`` (a miss, made by the
    reader for every view it applies), a device resolved, and ``recent()`` (the inspector's)."""
    from streaming.serving.store import ProfileStore

    store = ProfileStore(store_dir)
    rng = random.Random(12)
    ids = [profile_id(rng.randrange(n)) for _ in range(samples)]
    devices = [uuidish(b"d", rng.randrange(n)) for _ in range(samples)]
    unknown = [uuidish(b"x", i) for i in range(samples)]
    out: dict[str, Any] = {}
    try:
        for name, fn, args in (("served", store.served, ids), ("is_erased_miss", store.is_erased, unknown),
                               ("profile_of_device", store.profile_of_device, devices),
                               ("recent", store.recent, ids), ("served_miss", store.served, unknown)):
            for a in args[:1000]:  # warm the block cache a little, as a running process would be
                fn(a)
            timings = []
            for a in args:
                c0 = time.perf_counter_ns()
                fn(a)
                timings.append((time.perf_counter_ns() - c0) / 1000)
            out[name] = {"p50_us": round(pct(timings, 0.5), 1), "p99_us": round(pct(timings, 0.99), 1),
                         "mean_us": round(sum(timings) / len(timings), 1)}
    finally:
        store.close()
    return out


def apply_only(store_dir: Path, templates: list[bytes], n: int) -> dict[str, Any]:
    """``ProfileStore.apply_many`` of ``n`` views and their devices on a fresh store, in the reader's batches, no
    broker: the reader's cost (the records are built before the clock starts)."""
    from streaming import settings as topics
    from streaming.serving.store import BATCH, ProfileStore, Record

    records: list[Record] = []
    for i in range(n):
        pid, did, eid = profile_id(i).encode(), uuidish(b"d", i).encode(), uuidish(b"e", i).encode()
        view = templates[i % len(templates)].replace(b"@@P@@", pid).replace(b"@@D@@", did).replace(b"@@E@@", eid)
        records.append((topics.PROFILES, topics.PROFILES, i % PARTITIONS, i, pid, view))
        records.append((topics.PROFILE_DEVICES, topics.PROFILE_DEVICES, i % PARTITIONS, i, did,
                        b'{"profile_id":"' + pid + b'","at":"2026-11-02T19:33:24.933000Z"}'))
    store = ProfileStore(store_dir)
    try:
        t0 = time.perf_counter()
        for start in range(0, len(records), BATCH):
            store.apply_many(records[start:start + BATCH])
        seconds = time.perf_counter() - t0
    finally:
        store.close()
    return {"profiles": n, "records": 2 * n, "seconds": round(seconds, 2),
            "us_per_record": round(seconds / (2 * n) * 1e6, 1), "records_per_s": round(2 * n / seconds)}


# --- the report -------------------------------------------------------------------------------------------------------


def _lat(run: dict[str, Any]) -> str:
    s, w, lag = run["latency_from_scheduled_ms"], run["latency_from_sent_ms"], run["dispatch_lag_ms"]
    return (f"p50 {s['p50']:>6.2f}  p90 {s['p90']:>6.2f}  p99 {s['p99']:>7.2f}  p99.9 {s['p999']:>7.2f}  max "
            f"{s['max']:>7.1f} | from sent p50 {w['p50']:.2f} p99 {w['p99']:.2f} | lag p99 {lag['p99']:.2f} ms | "
            f"server {run['server_cpu_us_per_request']:>4.0f} µs CPU/req, client CPU {run['client_cpu_share']:.2f} "
            f"| {run['statuses']}")


def report(res: dict[str, Any]) -> str:
    lines = [f"firstmile serving benchmark — {res['machine']}, load average {res['loadavg_start']} at start, "
             f"{res['loadavg_end']} at end{'  (QUICK: smoke sizes)' if res.get('quick') else ''}",
             f"targets (issue 17): p50 <= {TARGET['p50_ms']:g} ms, p99 <= {TARGET['p99_ms']:g} ms at 1,000 req/s; "
             f">= {TARGET['rate']:,} req/s per process; >= {TARGET['ratio']}x the bare handler.  Anchors: {ANCHORS}"]
    lk = res.get("lookups")
    if lk:
        sm = lk["summary"]
        lines += ["", f"1. lookups by profile id, {lk['profiles']:,} profiles loaded (answer {lk['answer_bytes']} B; "
                      f"bare = raw ASGI constant of the same bytes, same uvicorn options)",
                  f"   views published: {lk['publish']['records']:,} records ({lk['publish']['mean_view_bytes']} B "
                  f"per view) in {lk['publish']['seconds']} s; serving caught up (fresh store) in "
                  f"{lk['catchup']['ready_s']} s ({lk['catchup']['applied_at_ready']:,}/{lk['catchup']['published']:,} "
                  f"applied at ready; idle (< 3 % of a core) {lk['catchup'].get('settle_s')} s after ready); "
                  f"an empty serving process is ready in {lk['empty']['ready_s']} s",
                  f"   idle serving process (reader polling, no traffic): {lk['empty']['idle_cpu_share']:.3f} core; "
                  f"broker meanwhile {lk['empty']['broker_cpu_share_with_idle_reader']:.3f} core",
                  "   a) open loop at the fixed rate; latency in ms from each request's scheduled time "
                  "(no coordinated omission); 'from sent': from when the client wrote it; 'lag': written − "
                  "scheduled, the client's own delay"]
        for run in lk.get("fixed", []):
            lines.append(f"      {run['server']:<8} @ {run['rate']:>6,.0f}/s {_lat(run)}")
        anon = lk.get("fixed_by_anonymous_id")
        if anon:
            lines.append(f"      {'anonId':<8} @ {anon['rate']:>6,.0f}/s {_lat(anon)}")
        if "fixed_p50_ms" in sm:
            cpu = sm["cpu_us_per_request"]
            lines.append(f"      best of rounds: serving p50 {sm['fixed_p50_ms']} / p99 {sm['fixed_p99_ms']} ms; "
                         f"bare p50 {sm['bare_p50_ms']} / p99 {sm['bare_p99_ms']} ms; serving adds p50 "
                         f"{sm['p50_added_ms']:+} / p99 {sm['p99_added_ms']:+} ms; CPU per request serving "
                         f"{cpu['serving']:.0f} µs vs bare {cpu['bare']:.0f} µs")
        lines.append(f"   b) rate ladder (open loop, {res['args']['step_duration']:g} s per step, 64 connections), "
                     f"every request 200: highest rate with p99 <= {TARGET['p99_ms']:g} ms (the latency target), "
                     f"and highest rate kept up (p99 <= {KEPT_UP_P99_MS:g} ms: no queue building over the step)")
        lines.append("      steps: rate:p99 ms from scheduled, ✓ within target, ~ kept up, ✗ not kept up "
                     "(client/server CPU share)")
        for lad in lk.get("ladder", []):
            steps = "  ".join(f"{s['rate'] / 1000:g}k:{s['latency_from_scheduled_ms']['p99']:.1f}"
                              f"{'✓' if s['meets'] else '~' if s['kept_up'] else '✗'}"
                              f"({s['client_cpu_share']:.2f}/{s['server_cpu_share']:.2f})" for s in lad["steps"])
            lines.append(f"      {lad['server']:<8} round {lad['round']}: {lad['max_sustainable']:>6,.0f} / "
                         f"{lad['max_kept_up']:>6,.0f}/s | {steps}")
        ms, mk = sm.get("max_sustainable", {}), sm.get("max_kept_up", {})
        lines.append(f"      within p99 target: serving {fmt(ms.get('serving'), ',.0f')}/s, bare "
                     f"{fmt(ms.get('bare'), ',.0f')}/s → {fmt(sm.get('max_sustainable_ratio'), '.2f')}x; kept up: "
                     f"serving {fmt(mk.get('serving'), ',.0f')}/s, bare {fmt(mk.get('bare'), ',.0f')}/s → "
                     f"{fmt(sm.get('max_kept_up_ratio'), '.2f')}x")
        lines.append(f"   c) closed loop, 64 connections, {res['args']['closed_duration']:g} s:")
        for run in lk.get("closed", []):
            lines.append(f"      {run['server']:<8} {run['achieved_rate']:>8,.0f} req/s  server CPU "
                         f"{run['server_cpu_share']:.2f} ({run['server_cpu_us_per_request']:.0f} µs/req)  client CPU "
                         f"{run['client_cpu_share']:.2f} ({run['client_cpu_us_per_request']:.0f} µs/req)  p50 "
                         f"{run['latency_from_sent_ms']['p50']:.2f} p99 {run['latency_from_sent_ms']['p99']:.2f} ms")
        if "closed_peak_ratio" in sm:
            lines.append(f"      peak serving ÷ bare {sm['closed_peak_ratio']:.2f}x; by server CPU per request (a core "
                         f"each) {fmt(sm.get('cpu_capacity_ratio'), '.2f')}x → one serving core ≈ "
                         f"{fmt(sm.get('serving_capacity_one_core'), ',.0f')} req/s")
        if sm.get("client"):
            c = sm["client"]
            lines.append(f"      load generator: {c['cpu_us_per_request']:.0f} µs CPU per request → ceiling ≈ "
                         f"{c['ceiling_one_core']:,} req/s on one core; at the bare peak it used "
                         f"{c['cpu_share_at_bare_peak']:.2f} core (the two cores are shared by client and server)")
        if "rss_per_100k" in sm:
            lines.append(f"   memory: serving RSS {mib(lk['empty']['rss'])} on empty topics → "
                         f"{mib(lk['catchup']['rss_at_ready'])} with {lk['profiles']:,} profiles "
                         f"(peak while catching up {mib(lk['catchup']['rss_peak_catchup'])}) = "
                         f"{mib(sm['rss_per_100k'])} per 100k; after the lookups "
                         f"{mib(lk.get('rss_after_lookups', 0))}; store on disk {mib(lk.get('store_bytes', 0))}")
        if lk.get("store_reads"):
            lines.append("   store calls on this store, in-process after the run (µs p50/p99): " + ", ".join(
                f"{k} {v['p50_us']}/{v['p99_us']}" for k, v in lk["store_reads"].items()))
        if sm.get("meets"):
            lines.append(f"   meets targets: {sm['meets']}")
    fr = res.get("freshness")
    if fr:
        lines += ["", f"2. freshness at {fr['rate']:g} ev/s for {fr['duration_s']:g} s: collector → worker → serving "
                      "(real processes, fresh broker)"]
        for k in ("hop_before", "hop_after"):
            h = fr.get(k)
            if h:
                a, b, c = h["produce_to_consume_ms"], h["ack_to_consume_ms"], h["produce_to_ack_ms"]
                lines.append(f"   bare hop {k[4:]:<6}: produce → consume p50 {a.get('p50')} p99 {a.get('p99')} ms "
                             f"(ack → consume p50 {b.get('p50')} p99 {b.get('p99')}; produce → ack p50 {c.get('p50')} "
                             f"p99 {c.get('p99')}) {h['received']}/{h['sent']} received")
        def row(name: str, s: dict[str, Any]) -> str:
            return (f"   {name:<38} p50 {fmt(s.get('p50'), '.1f'):>7}  p90 {fmt(s.get('p90'), '.1f'):>7}  p99 "
                    f"{fmt(s.get('p99'), '.1f'):>7}  max {fmt(s.get('max'), '.1f'):>7} ms  (n {s.get('n', 0):,})")

        p = fr.get("pipeline")
        if p:
            lines += [row("collector request (200)", p["collector_ms"]),
                      row("collector 200 → view on `profiles`", p["to_topic_ms"]),
                      f"   {'  p99 in the first / second half':<38} {p['to_topic_first_half_ms'].get('p99')} / "
                      f"{p['to_topic_second_half_ms'].get('p99')} ms",
                      row("freshness: 200 → visible in serving", p["freshness_ms"]),
                      f"   {'  p99 in the first / second half':<38} {p['freshness_first_half_ms'].get('p99')} / "
                      f"{p['freshness_second_half_ms'].get('p99')} ms",
                      row("  view on topic → visible (serving)", p["serving_after_topic_ms"]),
                      row("read-your-writes: track + read", p["ryw_ms"]),
                      row("  from the scheduled send", p["ryw_from_scheduled_ms"]),
                      f"   {p['tracked']:,} events tracked ({p['devices']} devices), {p['views_on_topic']:,} seen on "
                      f"the topic, every {p['read_every']}th read back: {p['reads']:,} reads, stale {p['stale']}, "
                      f"skipped at the cap {p['reads_skipped_at_cap']}, errors {p['errors']}, connections "
                      f"{p['connections_opened']}",
                      f"   CPU share {p['cpu_share']}, load client {p['client_cpu_share']}; pipeline warm after "
                      f"{fr.get('pipeline_warm_s')} s"]
        nd = fr.get("new_devices")
        if nd:
            lines.append(row(f"new device's 1st event ({nd['rate']:g} ev/s)", nd["freshness_ms"]))
            lines.append(row("  its view on `profiles`", nd["to_topic_ms"]))
            lines.append(row("  view on topic → visible (serving)", nd["serving_after_topic_ms"]))
            slow = sum(v > 150 for v in nd.get("serving_after_topic_each_ms") or [])
            lines.append(f"   (each event from a device never seen, alone on the pipeline; {slow} of "
                         f"{nd['serving_after_topic_ms'].get('n', 0)} visible > 150 ms after their view was on the "
                         f"topic; stale {nd['stale']}, errors {nd['errors']})")
        if fr.get("summary"):
            s = fr["summary"]
            lines.append(f"   freshness ÷ bare hop: p50 {s['p50_in_hops']}x, p99 {s['p99_in_hops']}x (the path has "
                         f"three broker hops: events.raw, the repartition, profiles)")
    cu = res.get("catchup")
    if cu:
        c = cu["cold"]
        late = f", all after +{c['complete_s_after_ready']} s" if c.get("complete_s_after_ready") else ""
        lines += ["", f"3. catch-up: {cu['profiles']:,} profiles ({cu['publish']['records']:,} records, "
                      f"{cu['publish']['view_mib']:,} MiB of views) published in {cu['publish']['seconds']} s; "
                      f"Tansu RSS {mib(cu['broker_rss'])}",
                  f"   cold start (empty store): listening {c['listening_s']} s, /readyz 200 at {c['ready_s']} s "
                  f"({c['records_per_s']:,} records/s); applied at ready {c['applied_at_ready']:,}/{c['published']:,}"
                  f"{'' if c['applied_at_ready'] >= c['published'] else '  INCOMPLETE'}"
                  f"{late}; sample {c['sample_found']}/{c['sample']} found",
                  f"   RSS: {mib(cu['empty_rss'])} empty → {mib(c['rss_at_ready'])} at ready (peak "
                  f"{mib(c['rss_peak'])}, settled {mib(c['rss_settled'])}) = {mib(cu['summary']['rss_per_100k'])} "
                  f"per 100k; store on disk {mib(c['store_bytes'])} = {mib(cu['summary']['store_bytes_per_100k'])} "
                  f"per 100k"]
        if cu.get("lookups"):
            lines.append(f"   lookups on the {cu['profiles']:,}-profile store @ {cu['lookups']['rate']:,.0f}/s "
                         f"(after the process was idle, {cu.get('settle_s')} s after ready): {_lat(cu['lookups'])}; "
                         f"RSS after {mib(cu.get('rss_after_lookups', 0))}")
        br, ap = cu.get("bare_read"), cu.get("apply_only")
        if br and ap:
            lines.append(f"   where the catch-up goes: a bare consumer reads the {br['records']:,} records in "
                         f"{br['seconds']} s ({br['records_per_s']:,}/s); store.apply without a broker "
                         f"{ap['us_per_record']} µs/record ({ap['records_per_s']:,}/s over {ap['records']:,})")
        if cu.get("store_reads"):
            lines.append("   store calls on the filled store, in-process (µs p50/p99): " + ", ".join(
                f"{k} {v['p50_us']}/{v['p99_us']}" for k, v in cu["store_reads"].items()))
        r = cu.get("restart")
        if r:
            lines.append(f"   restart on the filled store: listening {r['listening_s']} s, ready {r['ready_s']} s, "
                         f"applied {r['applied_at_ready']}, sample {r['sample_found']}/{r['sample']} found, RSS "
                         f"{mib(r['rss_at_ready'])}")
    if res.get("errors"):
        failed = ", ".join(f"{k}: {v.strip().splitlines()[-1]}" for k, v in res["errors"].items())
        lines += ["", f"FAILED parts: {failed}"]
    lines.append(f"\ntotal {res['total_s']:.0f} s; JSON: {res['json']}")
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------------------------------


def main_bench(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    if os.getloadavg()[0] > 1.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f} before the run: other processes share the "
              f"{os.cpu_count()} cores; compare the figures within this run (ratios, CPU per request)", flush=True)
    parts = set(args.parts.split(","))
    res: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": loadavg(),
                           "machine": f"{platform.node()} {os.cpu_count()} cores Python {platform.python_version()}",
                           "quick": args.quick, "parts": sorted(parts), "target": TARGET, "anchors": ANCHORS,
                           "args": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "json": args.json}
    errors: dict[str, str] = {}
    templates, example = view_templates()
    res["view_example"] = example
    log(t0, f"{len(templates)} view templates from the real stages")

    @contextlib.contextmanager
    def part(name: str) -> Iterator[None]:
        try:
            yield
        except Exception:  # noqa: BLE001 - reported, with its traceback in the JSON; the other parts still run
            import traceback

            errors[name] = traceback.format_exc()
            log(t0, f"{name} FAILED: {errors[name].strip().splitlines()[-1]}")

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        if "lookups" in parts:
            with part("lookups"):
                res["lookups"] = part_lookups(args, tmp, t0, templates)
        if "freshness" in parts:
            with part("freshness"):
                res["freshness"] = part_freshness(args, tmp, t0)
        if "catchup" in parts:
            with part("catchup"):
                empty_rss = res.get("lookups", {}).get("empty", {}).get("rss")
                res["catchup"] = part_catchup(args, tmp, t0, templates, empty_rss)
        if args.keep_logs:
            keep = Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for f in tmp.glob("*.log"):
                (keep / f.name).write_bytes(f.read_bytes())
    res["errors"] = errors
    res["loadavg_end"] = loadavg()
    res["total_s"] = time.monotonic() - t0
    text = report(res)
    print()
    print(text)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    res["report"] = text
    out.write_text(json.dumps(res, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the script")
    parser.add_argument("--parts", default="lookups,freshness,catchup")
    parser.add_argument("--profiles", type=int, default=None, help="profiles loaded for the lookups (100,000)")
    parser.add_argument("--catchup-profiles", type=int, default=None, help="profiles for the catch-up (1,000,000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="the fixed lookup rate, req/s")
    parser.add_argument("--duration", type=float, default=None, help="seconds per fixed-rate run (15)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per server (2)")
    parser.add_argument("--ladder", default=None, help=f"rates of the ladder ({DEFAULT_LADDER})")
    parser.add_argument("--step-duration", type=float, default=None, help="seconds per ladder step (4)")
    parser.add_argument("--ladder-rounds", type=int, default=None, help="ladders per server, alternating (2)")
    parser.add_argument("--closed-duration", type=float, default=None, help="seconds of the closed loop (5)")
    parser.add_argument("--paths", type=int, default=20000, help="distinct lookups the load cycles through")
    parser.add_argument("--sample", type=int, default=1000, help="ids looked up after the catch-up")
    parser.add_argument("--apply-profiles", type=int, default=None,
                        help="profiles applied to a store without a broker (the reader's own cost)")
    parser.add_argument("--fresh-rate", type=float, default=500.0, help="events/s through the collector")
    parser.add_argument("--fresh-duration", type=float, default=None, help="measured seconds (30)")
    parser.add_argument("--fresh-warmup", type=float, default=None, help="unmeasured seconds first (5)")
    parser.add_argument("--fresh-devices", type=int, default=1000, help="devices the events cycle through")
    parser.add_argument("--hop-duration", type=float, default=None, help="seconds of each bare hop (15)")
    parser.add_argument("--read-every", type=int, default=5,
                        help="read every n-th event back through the serving process with after= (the rest only "
                             "through the topic observer)")
    parser.add_argument("--new-rate", type=float, default=1.0, help="events/s, each from a new device")
    parser.add_argument("--new-duration", type=float, default=None, help="seconds of new-device events (30)")
    parser.add_argument("--keep-logs", default=None, help="copy the processes' logs to this directory")
    parser.add_argument("--json", default=str(ROOT / "data" / "benchmarks" / "serving.json"))
    # internal roles
    parser.add_argument("--_bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_load", choices=("lookup", "fresh"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--collector-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--paths-json", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--conns", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._bare:
        run_bare(args.port, Path(args.body))
        return
    if args._load:
        import uvloop

        uvloop.install()
        if args._load == "lookup":
            result = asyncio.run(lookup_load(args.port, json.loads(Path(args.paths_json).read_text()),
                                             basic(SERVER_KEY), mode=args.mode, rate=args.rate,
                                             duration=args.duration, conns=args.conns, server_pid=args.server_pid,
                                             warmup=args.warmup))
        else:
            result = asyncio.run(fresh_load(args.collector_port, args.port, args.rate, args.duration, args.warmup,
                                            args.devices, 5000, broker=args.broker, read_every=args.read_every,
                                            max_reads=1000))
        print(json.dumps(result))
        return

    quick = args.quick
    defaults = {"profiles": (100_000, 5_000), "catchup_profiles": (1_000_000, 20_000), "duration": (15.0, 3.0),
                "rounds": (2, 1), "ladder": (DEFAULT_LADDER, "2000,5000,10000"), "step_duration": (4.0, 1.5),
                "ladder_rounds": (2, 1), "closed_duration": (5.0, 2.0), "fresh_duration": (30.0, 5.0),
                "fresh_warmup": (5.0, 2.0), "hop_duration": (15.0, 3.0), "apply_profiles": (100_000, 5_000),
                "new_duration": (30.0, 8.0)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    main_bench(args)


if __name__ == "__main__":
    main()
