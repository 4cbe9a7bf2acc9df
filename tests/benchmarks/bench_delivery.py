"""Delivery benchmark (``make bench-delivery``): the delivery tier (issue 18) against real HTTP servers on loopback,
next to a bare Quix consumer of the same topic, in one printed report.

1. ``throughput`` – ``--events`` routed records pre-produced to ``dest.sales`` on a fresh Tansu per variant, then
   one delivery lane (``python -m streaming.delivery --destination ID --lane fresh``, a fresh consumer group) to a
   local server that answers at once. Variants: ``bare`` (a Quix ``Application`` with the lane's own settings that
   only counts), ``webhook-batch`` (``max_events: 100``), ``webhook-single`` (``max_events: 1``), ``segment``
   (``/v1/batch`` on the loopback server), ``segment-collector`` (the platform's own collector,
   ``python -m streaming.collector``, on the same broker: it acks after the broker did) and ``postgres`` (when
   ``streaming/delivery/postgres.py`` exists and a PostgreSQL server starts as ``tests/streaming/postgres_server.py``
   does; else the row says why it was skipped). Events/s from the first to the last delivered outcome on
   ``delivery.outcomes`` (the bare consumer: first to last record it counted), the ratio to ``bare``, events/s over
   the wall time from the process start, and the lane's CPU per event (from ``/proc``). ``--rounds`` rounds, the
   order reversed every other round; the report shows each round and the best.
2. ``isolation`` – rudder-server issue 4953: three webhook destinations ``a``, ``b``, ``c`` read ``dest.sales``
   (each its own consumer groups, fresh and retry lane: six processes); a steady producer sends ``--rate`` routed
   records/s with its send time in the record. In a ``fault`` run ``c``'s server answers 500 for ``--error-s``
   seconds, then hangs (sleeps ``timeout_s`` + 5 s, past the sender's timeout) for ``--hang-s`` seconds, then
   answers at once again; a ``nofault`` run is the same without the fault. Runs alternate ``nofault, fault, fault,
   nofault, ...`` (``--pairs`` pairs), each on a fresh broker. Per destination: delivery latency (server receive
   time − produce time) p50/p99 over the whole load and over the fault window; ``a`` and ``b`` with the fault ÷
   without (target p99 ≤ 1.1×); ``c``'s ids lost (never accepted) and duplicated (accepted more than once: under the
   same idempotency key, i.e. the same batch re-sent, or under another); the time to drain ``c``'s backlog after the
   fault (every event produced before the recovery accepted; fresh and retry lane apart, from the outcomes);
   ``a`` and ``b``'s p99 per phase of the schedule (before / 500s / hang / after) and per 10 s in the JSON;
   breaker openings and closings from each lane's log; each lane's, the broker's and the server's CPU per phase.

Prints a report and writes JSON (``--json``, default ``data/benchmarks/delivery.json``).

    .venv/bin/python tests/benchmarks/bench_delivery.py [--quick] [--parts throughput,isolation] [--events 20000]
        [--rounds 2] [--rate 500] [--pairs 2] [--before-s 30] [--error-s 15] [--hang-s 60] [--after-s 30]
        [--timeout-s 10] [--rate-limit 0] [--drain-timeout 900]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SCRIPT = Path(__file__).resolve()
PARTITIONS = 3
TOPIC = "dest.sales"
LOAD_LINGER_MS = 50  # STACK-FACTS: the sustainable load-producer linger on Tansu
HOOK_SECRET = "bench-hook-secret-0123"
WRITE_KEY = "bench-delivery-write-key"
PROFILES = 1000
THROUGHPUT_VARIANTS = ("bare", "webhook-batch", "webhook-single", "segment", "segment-collector", "postgres")
ISOLATION_DESTINATIONS = ("a", "b", "c")
LANES = ("fresh", "retry")
LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


# --- small helpers ----------------------------------------------------------------------------------------------------


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def log(t0: float, message: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {message}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 0.5), "p90_ms": pct(values, 0.9), "p99_ms": pct(values, 0.99),
            "p999_ms": pct(values, 0.999), "max_ms": max(values) if values else float("nan")}


def fmt(v: Any, spec: str = ".0f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def iso_to_epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def routed_record(event_id: str, seq: int) -> dict[str, Any]:
    """A record as the hot path routes it to ``dest.*`` (decided, consent attached), ~450 bytes."""
    profile = f"profile-{seq % PROFILES:05d}"
    return {"event_id": event_id, "profile_id": profile, "type": "track", "event_name": "Order Completed",
            "event_ts": "2026-11-02T12:00:00.000Z", "received_at": "2026-11-02T12:00:00.120Z",
            "anonymous_id": f"anon-{seq % PROFILES:05d}", "user_id": None, "source_id": "web",
            "properties": {"order_id": f"o-{seq}", "revenue": 10 + seq % 90, "currency": "EUR",
                           "products": [{"sku": f"sku-{seq % 37}", "qty": 1}]},
            "context": {"country": "DE", "device": "desktop", "browser": "Chrome"},
            "consent": {"analytics": True, "marketing": True}, "policy_version": 2,
            "destinations": [TOPIC]}


def spawn(role: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SCRIPT), role, *args], stdout=subprocess.PIPE, text=True,
                            stdin=subprocess.PIPE if stdin else None, cwd=str(ROOT), start_new_session=True)


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    role = str(proc.args[2]) if isinstance(proc.args, list) else str(proc.args)  # type: ignore[index]
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready = select.select([proc.stdout], [], [], min(1.0, max(0.0, deadline - time.monotonic())))[0]
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"{role} exited ({proc.returncode}) before printing {prefix}")
            continue
        if line.startswith(prefix):
            return line.strip()
    raise TimeoutError(f"{role}: no {prefix} within {timeout}s")


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def fresh_broker(tmp: Path, name: str) -> Any:
    from streaming.broker import EmbeddedBroker

    broker = EmbeddedBroker.start(log_path=tmp / f"tansu-{name}.log")
    try:
        yield broker
    finally:
        broker.stop()


# --- role: the destination server (its own process) -------------------------------------------------------------------


class DestinationServer:
    """Raw ASGI on uvicorn: answers at once (``ok``), 500, or ``hang`` (sleeps past the client's timeout, then 503)
    per path, as set on ``POST /_mode``; records every request (receive time, answer, idempotency key, event ids,
    send times). ``GET /_count?path=`` the distinct accepted ids by id prefix; ``GET /_dump?path=`` the records."""

    def __init__(self) -> None:
        self.modes: dict[str, tuple[str, float]] = {}
        self.records: dict[str, list[list[Any]]] = defaultdict(list)
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.distinct: dict[str, Counter[str]] = defaultdict(Counter)
        self.answers: dict[str, Counter[str]] = defaultdict(Counter)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        import orjson

        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        at = time.time()
        path = scope["path"]
        if path.startswith("/_"):
            await self._control(path, scope, body, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        mode, hang_s = self.modes.get(path, ("ok", 0.0))
        try:
            doc = orjson.loads(body)
            items = doc["batch"] if isinstance(doc, dict) and isinstance(doc.get("batch"), list) else [doc]
            ids = [str(i.get("event_id") or i.get("messageId")) for i in items]
            sent = [i.get("bench_sent_ns") for i in items]
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            ids, sent = [], []
        answer = "200" if mode == "ok" else mode
        self.answers[path][answer] += 1
        self.records[path].append([at, answer, headers.get("idempotency-key", ""), ids, sent])
        if mode == "ok":
            seen, distinct = self.seen[path], self.distinct[path]
            for i in ids:
                if i not in seen:
                    seen.add(i)
                    distinct[i.split("-", 1)[0]] += 1
            await self._answer(send, 200, b'{"ok":true}')
        elif mode == "hang":
            await asyncio.sleep(hang_s)
            await self._answer(send, 503, b'{"error":"hung"}')
        else:
            await self._answer(send, 500, b'{"error":"scripted 500"}')

    async def _control(self, path: str, scope: dict[str, Any], body: bytes, send: Any) -> None:
        from urllib.parse import parse_qs

        import orjson

        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        if path == "/_mode":
            doc = orjson.loads(body)
            self.modes[doc["path"]] = (doc["mode"], float(doc.get("hang_s", 0.0)))
            await self._answer(send, 200, b"{}")
        elif path == "/_count":
            p = query.get("path", "")
            await self._answer(send, 200, orjson.dumps({"distinct": self.distinct[p], "answers": self.answers[p]}))
        elif path == "/_dump":
            await self._answer(send, 200, orjson.dumps(self.records[query.get("path", "")]))
        else:
            await self._answer(send, 200, b'{"ready":true}')

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes) -> None:
        try:
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        except (OSError, RuntimeError):
            pass  # the client gave up (a hang past its timeout)


def role_server(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run(DestinationServer(), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                lifespan="off", access_log=False, log_level="warning", timeout_keep_alive=75)


class ServerClient:
    """The parent's handle on a server process."""

    def __init__(self, tmp: Path) -> None:
        import httpx

        from streaming.broker import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = spawn("_server", "--port", str(self.port))
        self.http = httpx.Client(timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get(self.url + "/_ready").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the destination server did not start") from None
                time.sleep(0.1)

    def mode(self, path: str, mode: str, hang_s: float = 0.0) -> None:
        self.http.post(self.url + "/_mode", json={"path": path, "mode": mode, "hang_s": hang_s}).raise_for_status()

    def count(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = self.http.get(self.url + "/_count", params={"path": path}).json()
        return out

    def dump(self, path: str) -> list[list[Any]]:
        out: list[list[Any]] = self.http.get(self.url + "/_dump", params={"path": path}).json()
        return out

    def close(self) -> None:
        self.http.close()
        stop(self.proc, 5)


# --- role: the steady producer ----------------------------------------------------------------------------------------


def role_load(args: argparse.Namespace) -> None:
    """Routed records with their send time (``bench_sent_ns``, wall clock at produce). Before ``go`` on stdin:
    warm-up records (ids ``warm-N``) every 50 ms; then ``--rate``/s for ``--duration`` s (ids ``m-N``), open loop."""
    import orjson
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": args.broker, "enable.idempotence": True, "acks": "all",
                         "linger.ms": LOAD_LINGER_MS})
    acked = errors = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal acked, errors
        if err is None:
            acked += 1
        else:
            errors += 1

    def produce(event_id: str, seq: int) -> None:
        record = routed_record(event_id, seq)
        record["bench_sent_ns"] = time.time_ns()
        while True:
            try:
                producer.produce(args.topic, key=record["profile_id"].encode(), value=orjson.dumps(record),
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)

    print("READY", flush=True)
    warm = 0
    while not select.select([sys.stdin], [], [], 0.05)[0]:
        produce(f"warm-{warm}", warm)
        warm += 1
    sys.stdin.readline()
    producer.flush(30)
    n = int(args.rate * args.duration)
    start_wall, start = time.time(), time.monotonic()
    print(f"START {start_wall:.6f}", flush=True)
    behind = 0.0
    for i in range(n):
        target = start + i / args.rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            behind = max(behind, -delay)
        produce(f"m-{i}", i)
    end_wall = time.time()
    left = producer.flush(60)
    print("DONE " + json.dumps({"sent": n, "acked": acked - warm, "errors": errors, "unflushed": left,
                                "warm": warm, "start": start_wall, "end": end_wall, "max_behind_s": behind}),
          flush=True)


# --- role: the bare Quix consumer -------------------------------------------------------------------------------------


def role_bare(args: argparse.Namespace) -> None:
    """A Quix Application with the delivery lane's settings (``build_delivery_app``) that only counts."""
    from quixstreams import Application

    from streaming.broker import fast_group_consumer_config

    app = Application(broker_address=args.broker, consumer_group=args.group, auto_offset_reset="earliest",
                      commit_interval=1.0, commit_every=100,
                      consumer_extra_config={**fast_group_consumer_config(), "fetch.wait.max.ms": 20},
                      state_dir=args.state_dir, loglevel="WARNING", processing_guarantee="at-least-once")
    topic = app.topic(args.topic, key_deserializer="bytes", value_deserializer="json")
    n = 0
    first = 0.0
    first_cpu = 0.0
    expect = args.expect

    def count(_value: Any) -> None:
        nonlocal n, first, first_cpu
        n += 1
        if n == 1:
            first, first_cpu = time.time(), cpu_seconds(os.getpid())
        if n == expect:
            print("DONE " + json.dumps({"n": n, "first": first, "last": time.time(), "first_cpu": first_cpu,
                                        "cpu": cpu_seconds(os.getpid())}), flush=True)

    app.dataframe(topic).update(count)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    print("READY", flush=True)
    app.run()


# --- processes the parent runs ----------------------------------------------------------------------------------------


class Proc:
    """A child process whose CPU time is sampled (kept after it exits) and, for lanes, restarted when it dies."""

    def __init__(self, name: str, start: Any, *, restart: bool = False) -> None:
        self.name, self._start, self.restart = name, start, restart
        self.proc: subprocess.Popen[Any] = start()
        self.started = time.time()
        self.cpu_done = 0.0  # CPU of earlier incarnations
        self.last_cpu = 0.0
        self.exits: list[dict[str, Any]] = []

    def sample(self) -> float:
        value = cpu_seconds(self.proc.pid) if self.proc.poll() is None else float("nan")
        if value == value:
            self.last_cpu = value
        return self.cpu_done + self.last_cpu

    def check(self) -> None:
        self.sample()
        code = self.proc.poll()
        if code is not None and self.restart:
            self.exits.append({"at": time.time(), "code": code})
            self.cpu_done += self.last_cpu
            self.last_cpu = 0.0
            self.proc = self._start()

    def stop(self) -> None:
        self.sample()
        self.restart = False
        stop(self.proc, 30)


class Monitor:
    """Samples every process's CPU twice a second and restarts a process that exited when it is marked so (as a
    supervisor, or compose's ``restart: unless-stopped``, would). With ``service`` set, the lanes are that
    process's children (``python -m streaming.delivery`` runs one per destination and lane): found in ``/proc`` by
    their parent and command line, their CPU summed per lane over every incarnation."""

    def __init__(self, procs: dict[str, Proc], service: str | None = None) -> None:
        self.procs, self.service = procs, service
        self.child_cpu: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.5):
            with self.lock:
                for p in list(self.procs.values()):
                    p.check()
                if self.service:
                    self._scan_children(self.procs[self.service].proc.pid)

    def _scan_children(self, parent: int) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) != parent:
                    continue
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode().split("\0")
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                continue
            if "--destination" in argv and "--lane" in argv:
                name = f"{argv[argv.index('--destination') + 1]}-{argv[argv.index('--lane') + 1]}"
                self.child_cpu[int(entry.name)] = (name, cpu)

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            out = {name: p.sample() for name, p in self.procs.items()}
            if self.service:
                self._scan_children(self.procs[self.service].proc.pid)
                for d in ISOLATION_DESTINATIONS:
                    for lane in LANES:
                        out[f"{d}-{lane}"] = 0.0
                for name, cpu in self.child_cpu.values():
                    out[name] = out.get(name, 0.0) + cpu
            return out

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)


def lane_popen(env: dict[str, str], logs: Path, destination: str, lane: str) -> Any:
    def start() -> subprocess.Popen[bytes]:
        out = (logs / f"{destination}-{lane}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "streaming.delivery", "--destination", destination,
                                 "--lane", lane], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    return start


def service_popen(env: dict[str, str], logs: Path) -> Any:
    """``python -m streaming.delivery``: every destination and lane of the file, as ``firstmile up`` and
    docker-compose run it (``run_all``: one process per lane, a lane that exits restarted alone)."""
    def start() -> subprocess.Popen[bytes]:
        out = (logs / "service.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "streaming.delivery"], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    return start


def broker_proc(broker: Any) -> Proc:
    return Proc("broker", lambda: broker.process)


def platform_setup(address: str, tmp: Path, destinations: list[dict[str, Any]]) -> tuple[Any, dict[str, str]]:
    import yaml  # type: ignore[import-untyped]

    from streaming.broker import create_topics
    from streaming.delivery.app import create_delivery_topics
    from streaming.delivery.config import load_destinations
    from streaming.settings import StreamingSettings

    settings = StreamingSettings(data_dir=tmp, partitions=PARTITIONS)
    create_topics(address, settings)
    file = tmp / "destinations.yml"
    file.write_text(yaml.safe_dump({"destinations": destinations}))
    create_delivery_topics(address, settings, load_destinations(file))
    env = {**os.environ, "KAFKA_BROKER_ADDRESS": address, "FIRSTMILE_DATA_DIR": str(tmp),
           "FIRSTMILE_PARTITIONS": str(PARTITIONS), "FIRSTMILE_DESTINATIONS_FILE": str(file),
           "HOOK_SECRET": HOOK_SECRET, "SEGMENT_KEY": WRITE_KEY}
    return settings, env


def produce_records(address: str, n: int) -> float:
    import orjson
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "acks": "all",
                         "linger.ms": LOAD_LINGER_MS})
    t = time.monotonic()
    for i in range(n):
        record = routed_record(f"t-{i}", i)
        value = orjson.dumps(record)
        while True:
            try:
                producer.produce(TOPIC, key=record["profile_id"].encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("pre-produced records were not all acknowledged")
    return time.monotonic() - t


class OutcomeReader:
    """Reads ``delivery.outcomes`` from the beginning in a thread: counts per destination and status, and keeps the
    records of the destinations in ``keep`` (assigned partitions, no group: count by consuming, not watermarks)."""

    def __init__(self, address: str, topic: str, keep: set[str]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": address, "group.id": f"bench-out-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        self.keep = keep
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.kept: list[dict[str, Any]] = []
        self.first_delivered: dict[str, float] = {}
        self.last_message = time.monotonic()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import orjson

        try:
            while not self.done.is_set():
                for msg in self.consumer.consume(500, 0.2):
                    if msg.error():
                        continue
                    o = orjson.loads(msg.value())
                    d = o.get("destination")
                    with self.lock:
                        self.counts[d][o["status"]] += 1
                        if o["status"] == "delivered" and d not in self.first_delivered:
                            self.first_delivered[d] = time.monotonic()
                        if d in self.keep:
                            self.kept.append(o)
                        self.last_message = time.monotonic()
        finally:
            self.consumer.close()

    def delivered(self, destination: str) -> int:
        with self.lock:
            return self.counts[destination]["delivered"]

    def idle_s(self) -> float:
        return time.monotonic() - self.last_message

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def lane_log_stats(path: Path, destination: str | None = None) -> dict[str, Any]:
    """What a lane's log says: breaker openings and closings (with their times; only ``destination``'s in a log
    several lanes share), Quix backpressure, poll-interval overruns, rebalances, tracebacks and the exceptions
    that ended them."""
    text = path.read_text(errors="replace") if path.exists() else ""
    opened, closed = [], []
    exceptions: Counter[str] = Counter()
    for line in text.splitlines():
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b", line):
            exceptions[line[:160]] += 1
        if destination is not None and f"destination {destination}:" not in line:
            continue
        m = LOG_TS.match(line)
        at = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + int(m.group(1)[20:]) / 1000 \
            if m else None
        if "circuit open" in line:
            opened.append(at)
        elif "circuit closed" in line:
            closed.append(at)
    return {"breaker_opened": len(opened), "breaker_closed": len(closed), "opened_at": opened, "closed_at": closed,
            "backpressure": text.count("Backpressure for sink"),
            "poll_interval_exceeded": len(re.findall(r"max(imum)?[ ._]poll[ ._]interval|MAX_POLL_EXCEEDED", text,
                                                     flags=re.I)),
            "rebalance_lines": len(re.findall(r"rebalanc|revok", text, flags=re.I)),
            "tracebacks": text.count("Traceback"), "exceptions": dict(exceptions),
            "error_lines": sum(1 for line in text.splitlines() if " ERROR " in line or "CRITICAL" in line)}


# --- part 1: throughput -----------------------------------------------------------------------------------------------


def variant_destination(variant: str, url: str, tag: str, dsn_env: str | None = None) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "t", "topic": TOPIC}
    if variant == "webhook-batch":
        return {**base, "type": "webhook", "url": f"{url}/{tag}", "secret_env": "HOOK_SECRET",
                "batching": {"max_events": 100}}
    if variant == "webhook-single":
        return {**base, "type": "webhook", "url": f"{url}/{tag}", "secret_env": "HOOK_SECRET",
                "batching": {"max_events": 1}}
    if variant in ("segment", "segment-collector"):
        return {**base, "type": "segment", "url": url if variant == "segment-collector" else f"{url}/{tag}",
                "write_key_env": "SEGMENT_KEY", "batching": {"max_events": 100}}
    return {**base, "type": "postgres", "dsn_env": dsn_env, "table": "bench_events", "batching": {"max_events": 100}}


def postgres_available() -> tuple[bool, str]:
    if not (ROOT / "streaming" / "delivery" / "postgres.py").exists():
        return False, "streaming/delivery/postgres.py does not exist"
    if not (ROOT / "tests" / "streaming" / "postgres_server.py").exists():
        return False, "tests/streaming/postgres_server.py does not exist (no way to start a server as the tests do)"
    try:
        from tests.streaming import postgres_server
    except Exception as exc:  # noqa: BLE001 - any import problem is a reason to skip, and said
        return False, f"tests/streaming/postgres_server.py does not import: {exc}"
    if postgres_server.bin_dir() is None:
        return False, postgres_server.SKIP_REASON
    return True, ""


def run_throughput(variant: str, n: int, tmp: Path, timeout: float, server: ServerClient, tag: str,
                   t0: float) -> dict[str, Any]:
    run_dir = tmp / f"tp-{tag}"
    run_dir.mkdir()
    result: dict[str, Any] = {"variant": variant, "events": n, "loadavg": loadavg()}
    with fresh_broker(tmp, f"tp-{tag}") as broker:
        address = broker.address
        pg = collector = lane = None
        try:
            extra_env: dict[str, str] = {}
            url = server.url
            if variant == "postgres":
                from tests.streaming.postgres_server import PostgresServer

                pg = PostgresServer.start()
                extra_env["BENCH_PG_DSN"] = pg.dsn
            if variant == "segment-collector":
                from streaming.broker import free_port

                port = free_port()
                url = f"http://127.0.0.1:{port}"
                cenv = {**os.environ, "KAFKA_BROKER_ADDRESS": address, "FIRSTMILE_WRITE_KEYS": f"{WRITE_KEY}:bench",
                        "FIRSTMILE_RATE_LIMIT_PER_S": "0", "FIRSTMILE_COLLECTOR_PORT": str(port),
                        "FIRSTMILE_DATA_DIR": str(run_dir)}
                collector = subprocess.Popen([sys.executable, "-m", "streaming.collector"], env=cenv, cwd=ROOT,
                                             stdout=(run_dir / "collector.log").open("ab"),
                                             stderr=subprocess.STDOUT, start_new_session=True)
            dests = [] if variant == "bare" else [variant_destination(variant, url, tag, "BENCH_PG_DSN")]
            settings, env = platform_setup(address, run_dir, dests)
            env.update(extra_env)
            result["produce_s"] = produce_records(address, n)
            if collector is not None:
                wait_ready_http(url + "/readyz", collector)
            bproc = broker_proc(broker)
            broker_cpu0 = bproc.sample()
            if variant == "bare":
                started = time.time()
                proc = spawn("_bare", "--broker", address, "--topic", TOPIC, "--expect", str(n),
                             "--group", f"bench-bare-{tag}", "--state-dir", str(run_dir / "state"))
                try:
                    done = json.loads(wait_line(proc, "DONE", timeout)[5:])
                    cpu_end = cpu_seconds(proc.pid)
                finally:
                    stop(proc)
                span = done["last"] - done["first"]
                result.update(done=done["n"], complete=done["n"] >= n, span_s=span,
                              events_per_s=(done["n"] - 1) / span if span > 0 else float("nan"),
                              wall_events_per_s=done["n"] / (done["last"] - started),
                              startup_s=done["first"] - started,
                              cpu_us_per_event=(done["cpu"] - done["first_cpu"]) / max(done["n"] - 1, 1) * 1e6,
                              process_cpu_s=cpu_end)
            else:
                reader = OutcomeReader(address, settings.topic("delivery.outcomes"), keep={"t"})
                started = time.time()
                lane = Proc("t-fresh", lane_popen(env, run_dir, "t", "fresh"))
                deadline = time.monotonic() + timeout
                first_cpu = first_n = None
                while time.monotonic() < deadline and reader.delivered("t") < n:
                    if first_cpu is None and reader.delivered("t") > 0:
                        first_cpu, first_n = lane.sample(), reader.delivered("t")
                    if lane.proc.poll() is not None:
                        break
                    time.sleep(0.05)
                cpu_end = lane.sample()
                time.sleep(0.5)
                reader.close()
                kept = [o for o in reader.kept if o["status"] == "delivered"]
                ats = sorted(iso_to_epoch(o["at"]) for o in kept)
                span = ats[-1] - ats[0] if len(ats) > 1 else float("nan")
                delivered_ids = {o["event_id"] for o in kept}
                result.update(done=len(delivered_ids), complete=len(delivered_ids) >= n, span_s=span,
                              events_per_s=(len(ats) - 1) / span if span == span and span > 0 else float("nan"),
                              wall_events_per_s=len(ats) / (ats[-1] - started) if ats else float("nan"),
                              startup_s=ats[0] - started if ats else float("nan"),
                              outcomes=dict(reader.counts["t"]), lane_exit=lane.proc.poll(),
                              cpu_us_per_event=(cpu_end - first_cpu) / max(len(ats) - (first_n or 0), 1) * 1e6
                              if first_cpu is not None else float("nan"), process_cpu_s=cpu_end)
                if variant not in ("segment-collector", "postgres"):
                    answers = server.count(f"/{tag}" + ("/v1/batch" if variant == "segment" else ""))
                    result["server_distinct"] = sum(answers["distinct"].values())
                    result["server_requests"] = sum(answers["answers"].values())
                if pg is not None:
                    result["postgres_rows"] = pg.query("SELECT count(*) FROM bench_events")[0][0]
                if collector is not None:
                    result["collector_cpu_s"] = cpu_seconds(collector.pid)
                lane.stop()
                result["lane_log"] = lane_log_stats(run_dir / "t-fresh.log")
            result["broker_cpu_s"] = bproc.sample() - broker_cpu0
        finally:
            if lane is not None:
                lane.stop()
            stop(collector)
            if pg is not None:
                pg.close()
    log(t0, f"throughput {variant} ({tag}): {fmt(result.get('events_per_s'))} ev/s, {result.get('done')}/{n}, "
            f"CPU {fmt(result.get('cpu_us_per_event'))} µs/event, load {loadavg()}")
    return result


def wait_ready_http(url: str, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def part_throughput(args: argparse.Namespace, tmp: Path, t0: float) -> dict[str, Any]:
    ok, why = postgres_available()
    variants = [v for v in THROUGHPUT_VARIANTS if v != "postgres" or ok]
    out: dict[str, Any] = {"events": args.events, "rounds": [], "skipped": {} if ok else {"postgres": why}}
    server = ServerClient(tmp)
    try:
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else list(reversed(variants))
            rows = []
            for variant in order:
                try:
                    rows.append(run_throughput(variant, args.events, tmp, args.tp_timeout, server, f"{variant}-{r}",
                                               t0))
                except Exception as exc:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
                    log(t0, f"throughput {variant}: failed: {exc!r}")
                    rows.append({"variant": variant, "error": repr(exc)})
            out["rounds"].append({"order": order, "rows": rows})
    finally:
        server.close()
    return out


# --- part 2: isolation (rudder-server 4953) ---------------------------------------------------------------------------


def isolation_destinations(url: str, timeout_s: float, rate_limit: float = 0.0) -> list[dict[str, Any]]:
    """a, b, c with the destinations file's defaults; every one's ``rate_limit_per_s`` is ``rate_limit`` (0: none,
    the default), which bounds how fast c catches up after the fault, and so what its drain costs the others."""
    return [{"id": d, "type": "webhook", "topic": TOPIC, "url": f"{url}/{d}", "secret_env": "HOOK_SECRET",
             "timeout_s": timeout_s, "rate_limit_per_s": rate_limit} for d in ISOLATION_DESTINATIONS]


def run_isolation(fault: bool, index: int, topology: str, args: argparse.Namespace, tmp: Path,
                  t0: float) -> dict[str, Any]:
    name = f"{'fault' if fault else 'nofault'}-{index}"
    run_dir = tmp / f"iso-{topology}-{name}"
    run_dir.mkdir()
    duration = args.before_s + args.error_s + args.hang_s + args.after_s
    res: dict[str, Any] = {"name": name, "topology": topology, "fault": fault, "loadavg_start": loadavg(),
                           "rate": args.rate,
                           "duration_s": duration, "schedule_s": {"error_at": args.before_s,
                                                                   "hang_at": args.before_s + args.error_s,
                                                                   "recover_at": args.before_s + args.error_s
                                                                   + args.hang_s, "load_end": duration}}
    procs: dict[str, Proc] = {}
    monitor = server = load = None
    with fresh_broker(tmp, f"{topology}-{name}") as broker:
        try:
            server = ServerClient(run_dir)
            settings, env = platform_setup(broker.address, run_dir, isolation_destinations(server.url, args.timeout_s,
                                                                                   args.rate_limit))
            procs["broker"] = broker_proc(broker)
            procs["server"] = Proc("server", lambda: server.proc)  # type: ignore[union-attr]
            if topology == "service":
                procs["service"] = Proc("service", service_popen(env, run_dir), restart=True)
            else:
                for d in ISOLATION_DESTINATIONS:
                    for lane in LANES:
                        procs[f"{d}-{lane}"] = Proc(f"{d}-{lane}", lane_popen(env, run_dir, d, lane), restart=True)
            load = spawn("_load", "--broker", broker.address, "--topic", TOPIC, "--rate", str(args.rate),
                         "--duration", str(duration), stdin=True)
            procs["load"] = Proc("load", lambda: load)
            monitor = Monitor(procs, "service" if topology == "service" else None)
            wait_line(load, "READY", 60)
            # every destination delivers the warm-up records: its lanes' groups formed
            t_warm = time.monotonic()
            deadline = t_warm + 180
            while any(server.count(f"/{d}")["distinct"].get("warm", 0) == 0 for d in ISOLATION_DESTINATIONS):
                if time.monotonic() > deadline:
                    raise TimeoutError("destinations received nothing within 180 s")
                time.sleep(0.25)
            res["warmup_s"] = time.monotonic() - t_warm
            time.sleep(3)
            marks: dict[str, dict[str, float]] = {"start": monitor.snapshot()}
            walls = {"start": time.time()}
            assert load.stdin is not None
            load.stdin.write("go\n")
            load.stdin.flush()
            start = float(wait_line(load, "START", 60).split()[1])
            hang_s = args.timeout_s + 5

            def at(offset: float, label: str, mode: str | None) -> None:
                delay = start + offset - time.time()
                if delay > 0:
                    time.sleep(delay)
                if fault and mode is not None:
                    server.mode("/c", mode, hang_s)  # type: ignore[union-attr]
                walls[label] = time.time()
                marks[label] = monitor.snapshot()  # type: ignore[union-attr]

            sched = res["schedule_s"]
            at(sched["error_at"], "error", "500")
            at(sched["hang_at"], "hang", "hang")
            at(sched["recover_at"], "recover", "ok")
            done = json.loads(wait_line(load, "DONE", duration + 120)[5:])
            walls["load_end"] = time.time()
            marks["load_end"] = monitor.snapshot()
            res["load"] = done
            log(t0, f"isolation {topology} {name}: load done ({done['acked']}/{done['sent']} acked, max behind "
                    f"{done['max_behind_s']:.2f} s), draining")
            # drain: every measured id accepted by every destination
            expected = done["sent"]
            complete_at: dict[str, float | None] = dict.fromkeys(ISOLATION_DESTINATIONS)
            deadline = time.monotonic() + args.drain_timeout
            while time.monotonic() < deadline and any(v is None for v in complete_at.values()):
                for d in ISOLATION_DESTINATIONS:
                    if complete_at[d] is None and server.count(f"/{d}")["distinct"].get("m", 0) >= expected:
                        complete_at[d] = time.time()
                time.sleep(0.25)
            walls["drained"] = time.time()
            marks["drained"] = monitor.snapshot()
            res["complete_at"] = complete_at
            res["walls"] = walls
            res["cpu_marks"] = marks
            res["loadavg_end"] = loadavg()
            records = {d: server.dump(f"/{d}") for d in ISOLATION_DESTINATIONS}
            reader = OutcomeReader(broker.address, settings.topic("delivery.outcomes"), keep={"c"})
            t_read = time.monotonic()
            while time.monotonic() - t_read < 180 and (reader.idle_s() < 3 or
                                                       reader.delivered("c") < expected):
                time.sleep(0.5)
            reader.close()
            res["outcome_counts"] = {d: dict(c) for d, c in reader.counts.items()}
            outcomes_c = reader.kept
        finally:
            if monitor is not None:
                monitor.close()
            for p in procs.values():
                if p.name.endswith(LANES) or p.name == "service":
                    p.stop()
            stop(load)
            if server is not None:
                server.close()
    res["exits"] = {name_: p.exits for name_, p in procs.items() if p.exits}
    if topology == "service":  # one log for every lane: breaker lines name their destination, the rest do not
        res["lane_logs"] = {d: lane_log_stats(run_dir / "service.log", d) for d in ISOLATION_DESTINATIONS}
        res["service_log"] = lane_log_stats(run_dir / "service.log")
    else:
        res["lane_logs"] = {f"{d}-{lane}": lane_log_stats(run_dir / f"{d}-{lane}.log")
                            for d in ISOLATION_DESTINATIONS for lane in LANES}
    res.update(analyse_isolation(res, records, outcomes_c, start))
    c = res["destinations"]["c"]
    log(t0, f"isolation {topology} {name}: a p99 {fmt(res['destinations']['a']['latency']['p99_ms'])} ms, b p99 "
            f"{fmt(res['destinations']['b']['latency']['p99_ms'])} ms, c lost {c['lost']} dup {c['duplicated']}, "
            f"drain {fmt(res.get('drain', {}).get('backlog_drained_s'), '.1f')} s, load {loadavg()}")
    return res


def analyse_isolation(res: dict[str, Any], records: dict[str, list[list[Any]]], outcomes_c: list[dict[str, Any]],
                      start: float) -> dict[str, Any]:
    sent_n = res["load"]["sent"]
    sched = res["schedule_s"]
    window = (start + sched["error_at"], start + sched["load_end"])
    out: dict[str, Any] = {"destinations": {}}
    for d, recs in records.items():
        first: dict[str, tuple[float, int]] = {}
        keys: dict[str, list[str]] = defaultdict(list)
        answers: Counter[str] = Counter()
        for at, answer, key, ids, sents in recs:
            answers[answer] += 1
            if answer != "200":
                continue
            for i, s in zip(ids, sents, strict=False):
                if not i.startswith("m-"):
                    continue
                keys[i].append(key)
                if i not in first:
                    first[i] = (at, s)
        lat_all = [(at - s / 1e9) * 1000 for at, s in first.values()]
        lat_window = [(at - s / 1e9) * 1000 for at, s in first.values() if window[0] <= s / 1e9 < window[1]]
        lat_before = [(at - s / 1e9) * 1000 for at, s in first.values() if s / 1e9 < window[0]]
        dup_ids = {i: k for i, k in keys.items() if len(k) > 1}
        same_key = sum(1 for k in dup_ids.values() if len(set(k)) == 1)
        out["destinations"][d] = {
            "accepted": len(first), "lost": sent_n - len(first), "duplicated": len(dup_ids),
            "duplicate_copies": sum(len(k) - 1 for k in dup_ids.values()), "duplicated_same_key": same_key,
            "duplicated_other_key": len(dup_ids) - same_key, "requests": dict(answers),
            "latency": summary_ms(lat_all), "latency_window": summary_ms(lat_window),
            "latency_before_fault": summary_ms(lat_before),
            "latency_by_phase": latency_by_phase(first, start, sched),
            "p99_by_10s": p99_timeline(first, start, 10.0)}
    if res["fault"]:
        recover = res["walls"]["recover"]
        c_first = {i: at for i, (at, _s) in _firsts(records["c"]).items()}
        sent_at = _sent_times([r for recs in records.values() for r in recs])
        before = [i for i, s in sent_at.items() if s / 1e9 < recover]
        missing = [i for i in before if i not in c_first]
        drained = max((c_first[i] for i in before if i in c_first), default=float("nan"))
        delivered = [o for o in outcomes_c if o["status"] == "delivered" and str(o["event_id"]).startswith("m-")]
        by_lane: dict[str, list[float]] = defaultdict(list)
        attempts: Counter[int] = Counter()
        before_set = set(before)
        for o in delivered:
            attempts[int(o["attempt"])] += 1
            if o["event_id"] in before_set:
                by_lane[o["lane"]].append(iso_to_epoch(o["at"]))
        statuses = Counter(o["status"] for o in outcomes_c if str(o["event_id"]).startswith("m-"))
        # Diagnosis of duplicates: which lanes delivered the copies; an event settled twice at the same attempt
        # (two "retrying" outcomes with one attempt number) was read again after its batch had been settled.
        lanes_of: dict[str, list[str]] = defaultdict(list)
        settled: Counter[tuple[str, int, str]] = Counter()
        for o in outcomes_c:
            if not str(o["event_id"]).startswith("m-"):
                continue
            if o["status"] == "delivered":
                lanes_of[o["event_id"]].append(o["lane"])
            elif o["status"] == "retrying":
                settled[(o["event_id"], int(o["attempt"]), o["lane"])] += 1
        dup_lanes = Counter("+".join(sorted(set(v))) for v in lanes_of.values() if len(v) > 1)
        dup_copies = Counter(len(v) for v in lanes_of.values() if len(v) > 1)
        resettled = Counter(lane for (_i, _a, lane), k in settled.items() if k > 1)
        out["drain"] = {
            "backlog_events": len(before), "backlog_missing": len(missing),
            "backlog_drained_s": drained - recover if not missing else float("nan"),
            "fresh_lane_drained_s": max(by_lane["fresh"]) - recover if by_lane["fresh"] else float("nan"),
            "retry_lane_drained_s": max(by_lane["retry"]) - recover if by_lane["retry"] else float("nan"),
            "delivered_by_lane": {k: len(v) for k, v in by_lane.items()},
            "all_complete_after_load_end_s": (res["complete_at"]["c"] - res["walls"]["load_end"])
            if res["complete_at"].get("c") else float("nan"),
            "attempts_of_delivered": dict(sorted(attempts.items())), "outcome_statuses": dict(statuses),
            "duplicate_delivered_by_lanes": dict(dup_lanes), "duplicate_deliveries_per_id": dict(sorted(
                dup_copies.items())), "retry_settled_twice_by_lane": dict(resettled)}
    return out


PHASES = (("before", "error_at"), ("500s", "hang_at"), ("hang", "recover_at"), ("after", "load_end"))


def latency_by_phase(first: dict[str, tuple[float, int]], start: float, sched: dict[str, float]) -> dict[str, Any]:
    """Latency of the events produced in each phase of the schedule (the same phases in a run without the fault):
    says whether a healthy destination's tail comes from the 500s, the hang or c's drain after it."""
    out: dict[str, Any] = {}
    lower = start
    for phase, end_key in PHASES:
        upper = start + sched[end_key]
        out[phase] = summary_ms([(at - s / 1e9) * 1000 for at, s in first.values() if lower <= s / 1e9 < upper])
        lower = upper
    return out


def p99_timeline(first: dict[str, tuple[float, int]], start: float, step: float) -> list[float]:
    """p99 (ms) of the events produced in each ``step`` seconds from the load's start."""
    bins: dict[int, list[float]] = defaultdict(list)
    for at, s in first.values():
        bins[int((s / 1e9 - start) // step)].append((at - s / 1e9) * 1000)
    return [round(pct(bins[k], 99), 1) for k in sorted(bins) if k >= 0]


def _firsts(recs: list[list[Any]]) -> dict[str, tuple[float, int]]:
    first: dict[str, tuple[float, int]] = {}
    for at, answer, _key, ids, sents in recs:
        if answer == "200":
            for i, s in zip(ids, sents, strict=False):
                if i.startswith("m-") and i not in first:
                    first[i] = (at, s)
    return first


def _sent_times(recs: list[list[Any]]) -> dict[str, int]:
    """Every measured id any destination was sent (accepted or not) and its produce time."""
    out: dict[str, int] = {}
    for _at, _answer, _key, ids, sents in recs:
        for i, s in zip(ids, sents, strict=False):
            if i.startswith("m-") and s is not None:
                out.setdefault(i, s)
    return out


def part_isolation(args: argparse.Namespace, tmp: Path, t0: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for topology in args.topology.split(","):
        runs = []
        for p in range(args.pairs):
            order = (False, True) if p % 2 == 0 else (True, False)
            for fault in order:
                runs.append(run_isolation(fault, p, topology, args, tmp, t0))
        out[topology] = {"runs": runs}
    return out


# --- report -----------------------------------------------------------------------------------------------------------


def cpu_phases(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """CPU share (of one core) per process per phase."""
    marks, walls = run["cpu_marks"], run["walls"]
    phases = [("before", "start", "error"), ("500s", "error", "hang"), ("hang", "hang", "recover"),
              ("after", "recover", "load_end"), ("drain", "load_end", "drained")]
    out: dict[str, dict[str, float]] = {}
    for label, a, b in phases:
        span = walls[b] - walls[a]
        if span <= 0:
            continue
        out[label] = {p: (marks[b][p] - marks[a][p]) / span for p in marks[a]}
    return out


def report(res: dict[str, Any]) -> str:
    lines = [f"firstmile delivery benchmark — {res['started']} — {res['machine']}",
             f"load average at start {res['loadavg_start']}, at end {res.get('loadavg_end')} (above ~1.5 other work "
             "shares the 2 cores: compare the figures side by side in this run, and CPU per event)", ""]
    tp = res.get("throughput")
    if tp:
        lines.append(f"1. throughput: {tp['events']} routed records pre-produced to {TOPIC} ({PARTITIONS} partitions, "
                     "fresh Tansu per row), one lane, a server that answers at once; events/s first→last delivered")
        lines.append(f"   {'variant':<19}{'round':>6}{'done':>8}{'events/s':>10}{'× bare':>8}{'wall ev/s':>11}"
                     f"{'start s':>9}{'lane µs/ev':>12}{'× bare CPU':>12}{'load':>6}")
        best: dict[str, dict[str, Any]] = {}
        for r, rnd in enumerate(tp["rounds"]):
            for row in rnd["rows"]:
                v = row["variant"]
                if "error" not in row and (v not in best or row["events_per_s"] > best[v]["events_per_s"]):
                    best[v] = {**row, "round": r + 1}
        bare = best.get("bare")
        for r, rnd in enumerate(tp["rounds"]):
            for row in rnd["rows"]:
                lines.append(throughput_line(row, f"{r + 1}", bare))
        lines.append("   best of rounds:")
        for v in THROUGHPUT_VARIANTS:
            if v in best:
                lines.append(throughput_line(best[v], f"{best[v]['round']}", bare))
            elif v in tp["skipped"]:
                lines.append(f"   {v:<19}skipped: {tp['skipped'][v]}")
        lines.append("   × bare = events/s ÷ the bare Quix consumer's (same topic, same Application settings, only "
                     "counts); × bare CPU = bare CPU/event ÷ the lane's (the ratio with a core each)")
        notes = [f"{row['variant']} round {r + 1}: {row['error']}" for r, rnd in enumerate(tp["rounds"])
                 for row in rnd["rows"] if "error" in row]
        notes += [f"{row['variant']} round {r + 1}: INCOMPLETE {row['done']}/{row['events']} "
                  f"(outcomes {row.get('outcomes')})" for r, rnd in enumerate(tp["rounds"]) for row in rnd["rows"]
                  if "error" not in row and not row["complete"]]
        lines += [f"   note: {n}" for n in notes]
        lines.append("")
    for k, (topology, part) in enumerate((res.get("isolation") or {}).items()):
        lines += isolation_report(f"2{'abc'[k]}", topology, part["runs"], res["args"])
    return "\n".join(lines)


TOPOLOGY_TITLES = {
    "service": "`python -m streaming.delivery` (run_all: one process per lane, a lane that exits restarted alone "
               "with backoff), as `firstmile up` and docker-compose run it; the service restarted at once if it "
               "exits (compose: restart unless-stopped)",
    "lanes": "each lane its own `python -m streaming.delivery --destination ID --lane L` process, restarted alone "
             "when it exits (as the tests run them)"}


def isolation_report(num: str, topology: str, runs: list[dict[str, Any]], args: dict[str, Any]) -> list[str]:
    r0 = runs[0]
    s = r0["schedule_s"]
    lines = [f"{num}. rudder-server 4953, topology '{topology}': {TOPOLOGY_TITLES.get(topology, topology)}",
             f"   webhooks a, b, c all on {TOPIC} (batching 100 / 1 s, timeout_s {args['timeout_s']:.0f}, breaker "
             f"after 5 failures, rate limit {fmt(args.get('rate_limit') or 0)} ev/s (0: none); a fresh and a retry "
             f"lane each), {fmt(r0['rate'])} ev/s for {fmt(r0['duration_s'])} "
             f"s per run; fault: c answers 500 at +{s['error_at']:.0f} s, hangs at +{s['hang_at']:.0f} s (each "
             f"request sleeps timeout + 5 s), answers at once from +{s['recover_at']:.0f} s; runs in order "
             + ", ".join(r["name"] for r in runs),
             "   delivery latency (server receive − produce), ms; 'win' = events produced from the fault's start "
             f"(+{s['error_at']:.0f} s) to the load's end, 'before' = produced before it",
             f"   {'run':<11}{'dest':<5}{'accepted':>9}{'p50':>7}{'p90':>7}{'p99':>8}{'max':>8}"
             f"{'win p50':>9}{'win p99':>9}{'before p99':>11}{'lost':>6}{'dup':>6}{'load start→end':>16}"]
    for run in runs:
        for d in ISOLATION_DESTINATIONS:
            x = run["destinations"][d]
            lat, win, bef = x["latency"], x["latency_window"], x["latency_before_fault"]
            lines.append(f"   {run['name']:<11}{d:<5}{x['accepted']:>9}{fmt(lat['p50_ms']):>7}"
                         f"{fmt(lat['p90_ms']):>7}{fmt(lat['p99_ms']):>8}{fmt(lat['max_ms']):>8}"
                         f"{fmt(win['p50_ms']):>9}{fmt(win['p99_ms']):>9}{fmt(bef['p99_ms']):>11}"
                         f"{x['lost']:>6}{x['duplicated']:>6}{run['loadavg_start']:>9}→{run['loadavg_end']:<6}")
    lines.append("   a and b with the fault ÷ without, p99 (target ≤ 1.1×):")
    for d in ("a", "b"):
        lines += ["   " + line for line in ratio_lines(runs, d)]
    lines.append("   p99 by phase of the schedule (events produced before / during c's 500s / c's hang / after c "
                 "recovered, while it drains), ms, and the load average at the run's start:")
    for run in runs:
        for d in ("a", "b"):
            phases = run["destinations"][d].get("latency_by_phase")
            if phases:
                lines.append(f"     {run['name']:<11}{d}: " + " / ".join(
                    f"{phase} {fmt(phases[phase]['p99_ms'])}" for phase, _ in PHASES)
                    + f"   (load {run['loadavg_start']})")
    for run in runs:
        if not run["fault"]:
            continue
        c, dr = run["destinations"]["c"], run["drain"]
        lines.append(f"   c in {run['name']}: lost {c['lost']} (never accepted); duplicated {c['duplicated']} ids, "
                     f"{c['duplicate_copies']} extra copies (same idempotency key {c['duplicated_same_key']} ids, "
                     f"another key {c['duplicated_other_key']}; the event id in the body is the only common key); "
                     f"c's requests by answer {c['requests']}")
        lines.append(f"     backlog at recovery {dr['backlog_events']} events, drained "
                     f"{fmt(dr['backlog_drained_s'], '.1f')} s after recovery (last delivery by the fresh lane "
                     f"{fmt(dr['fresh_lane_drained_s'], '.1f')} s, by the retry lane "
                     f"{fmt(dr['retry_lane_drained_s'], '.1f')} s; delivered by lane {dr['delivered_by_lane']}); "
                     f"all of c complete {fmt(dr['all_complete_after_load_end_s'], '.1f')} s after the load ended")
        lines.append(f"     attempts of delivered events {dr['attempts_of_delivered']}; outcomes "
                     f"{dr['outcome_statuses']}")
        lines.append(f"     duplicated ids by the lanes that delivered them {dr['duplicate_delivered_by_lanes']}, by "
                     f"deliveries per id {dr['duplicate_deliveries_per_id']}; events put on the retry topic twice "
                     "for the same attempt (read again after their batch was settled) "
                     f"{dr['retry_settled_twice_by_lane']}")
    lines.append("   logs: breaker openings/closings (first opening after the 500s began, last closing after the "
                 "recovery), Quix backpressure pauses, poll-interval overruns, tracebacks; process exits:")
    for run in runs:
        parts = []
        for lane, st in run["lane_logs"].items():
            if any(st[k] for k in ("breaker_opened", "breaker_closed", "backpressure", "poll_interval_exceeded",
                                   "tracebacks")):
                first_open = (f" (first +{st['opened_at'][0] - run['walls']['error']:.1f} s)"
                              if st["opened_at"] and st["opened_at"][0] else "")
                last_close = (f" (last {st['closed_at'][-1] - run['walls']['recover']:+.1f} s)"
                              if st["closed_at"] and st["closed_at"][-1] else "")
                extra = "" if topology == "service" else (
                    f", backpressure {st['backpressure']}, poll overruns {st['poll_interval_exceeded']}, tracebacks "
                    f"{st['tracebacks']}")
                parts.append(f"{lane}: opened {st['breaker_opened']}{first_open}, closed {st['breaker_closed']}"
                             f"{last_close}{extra}")
        lines.append(f"   {run['name']}: " + ("; ".join(parts) if parts else "no breaker activity"))
        service = run.get("service_log")
        if service and (service["tracebacks"] or service["poll_interval_exceeded"] or service["backpressure"]):
            lines.append(f"     service log: backpressure {service['backpressure']}, poll overruns "
                         f"{service['poll_interval_exceeded']}, tracebacks {service['tracebacks']}")
        exceptions: Counter[str] = Counter()
        for st in [*run["lane_logs"].values(), *([service] if service else [])]:
            exceptions.update(st["exceptions"])
        if topology == "service" and service:
            exceptions = Counter(service["exceptions"])
        for line, n in exceptions.most_common(3):
            lines.append(f"     {n}× {line}")
        for proc, exits in run.get("exits", {}).items():
            when = ", ".join(f"{e['at'] - run['walls']['hang']:+.0f}" for e in exits)
            lines.append(f"     {proc} exited {len(exits)}× (codes {sorted({e['code'] for e in exits})}) at {when} s "
                         "from the hang's start; restarted")
    lines.append("   CPU, % of one core per phase: before / 500s / hang / after / drain (lanes summed over restarts)")
    for run in runs:
        phases = cpu_phases(run)
        lines.append(f"   {run['name']}:")
        names = list(next(iter(phases.values())).keys()) if phases else []
        for p in names:  # 'service' is run_all's own process; its lanes are listed apart
            cells = " / ".join(fmt(phases[ph][p] * 100) for ph in phases)
            lines.append(f"     {p:<10}{cells}")
        total = {ph: sum(v.values()) * 100 for ph, v in phases.items()}
        lines.append(f"     {'all':<10}" + " / ".join(fmt(v) for v in total.values()) + "  (2 cores = 200)")
    lines.append("")
    return lines


def throughput_line(row: dict[str, Any], rnd: str, bare: dict[str, Any] | None) -> str:
    if "error" in row:
        return f"   {row['variant']:<19}{rnd:>6}  failed: {row['error'][:100]}"
    ratio = row["events_per_s"] / bare["events_per_s"] if bare and bare["events_per_s"] else None
    cpu_ratio = bare["cpu_us_per_event"] / row["cpu_us_per_event"] if bare and row["cpu_us_per_event"] else None
    return (f"   {row['variant']:<19}{rnd:>6}{row['done']:>8}{fmt(row['events_per_s']):>10}{fmt(ratio, '.2f'):>8}"
            f"{fmt(row['wall_events_per_s']):>11}{fmt(row['startup_s'], '.1f'):>9}"
            f"{fmt(row['cpu_us_per_event']):>12}{fmt(cpu_ratio, '.3f'):>12}{row['loadavg']:>6}"
            + ("" if row["complete"] else "  INCOMPLETE"))


def ratio_lines(runs: list[dict[str, Any]], d: str) -> list[str]:
    """Per nofault/fault pair (in run order), over all events and over the window; best ÷ best; and within each run
    the window's p99 ÷ the p99 before the fault (the same moment of the machine, the fault runs against the
    nofault runs' drift)."""
    def p99(run: dict[str, Any], key: str = "latency") -> float:
        return float(run["destinations"][d][key]["p99_ms"])

    pairs, verdicts = [], []
    for i in range(0, len(runs) - 1, 2):
        pair = {r["fault"]: r for r in runs[i:i + 2]}
        if True in pair and False in pair:
            whole = p99(pair[True]) / p99(pair[False])
            window = p99(pair[True], "latency_window") / p99(pair[False], "latency_window")
            pairs.append(f"{whole:.2f}× (window {window:.2f}×)")
            verdicts.append(whole <= 1.1)
    faults = [r for r in runs if r["fault"]]
    clean = [r for r in runs if not r["fault"]]
    best = min(map(p99, faults), default=float("nan")) / min(map(p99, clean), default=float("nan"))
    within = {kind: ", ".join(f"{p99(r, 'latency_window') / p99(r, 'latency_before_fault'):.2f}×" for r in rs)
              for kind, rs in (("fault", faults), ("nofault", clean))}
    verdict = "met in every pair" if verdicts and all(verdicts) else \
        "MISSED in pair " + ", ".join(str(i + 1) for i, ok in enumerate(verdicts) if not ok)
    return [f"{d}: per pair {', '.join(pairs)} → {verdict}; best fault run ÷ best nofault run {best:.2f}×",
            f"   within each run, window p99 ÷ before-fault p99: fault runs {within['fault']}; nofault runs "
            f"{within['nofault']}"]


# --- main -------------------------------------------------------------------------------------------------------------


QUICK = {"events": 2000, "rounds": 1, "rate": 100.0, "pairs": 1, "before_s": 5.0, "error_s": 3.0, "hang_s": 8.0,
         "after_s": 5.0, "timeout_s": 2.0, "drain_timeout": 240.0, "tp_timeout": 90.0}


def main_bench(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    if os.getloadavg()[0] > 1.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f} before the run: other processes share the "
              f"{os.cpu_count()} cores; compare the figures side by side in this run, not absolute rates", flush=True)
    res: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": loadavg(),
                           "machine": f"{platform.node()} {os.cpu_count()} cores Python {platform.python_version()}",
                           "quick": args.quick, "args": {k: v for k, v in vars(args).items() if k != "parts"}}
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp_name:
        tmp = Path(tmp_name)
        if "throughput" in args.parts:
            res["throughput"] = part_throughput(args, tmp, t0)
        if "isolation" in args.parts:
            res["isolation"] = part_isolation(args, tmp, t0)
        if args.keep_logs:
            import shutil

            dest = Path(args.keep_logs)
            dest.mkdir(parents=True, exist_ok=True)
            for f in tmp.rglob("*.log"):
                shutil.copy(f, dest / f"{f.parent.name}-{f.name}")
    res["loadavg_end"] = loadavg()
    res["total_s"] = time.monotonic() - t0
    text = report(res)
    print()
    print(text)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**res, "report": text}, indent=2, default=str))
    print(f"JSON: {out}  (total {res['total_s']:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].startswith("_") else None
    if sub == "_server":
        parser.add_argument("role")
        parser.add_argument("--port", type=int, required=True)
        role_server(parser.parse_args())
        return
    if sub == "_load":
        parser.add_argument("role")
        parser.add_argument("--broker", required=True)
        parser.add_argument("--topic", required=True)
        parser.add_argument("--rate", type=float, required=True)
        parser.add_argument("--duration", type=float, required=True)
        role_load(parser.parse_args())
        return
    if sub == "_bare":
        parser.add_argument("role")
        for name in ("--broker", "--topic", "--group", "--state-dir"):
            parser.add_argument(name, required=True)
        parser.add_argument("--expect", type=int, required=True)
        role_bare(parser.parse_args())
        return
    parser.add_argument("--quick", action="store_true", help="a smoke run in small sizes (a couple of minutes)")
    parser.add_argument("--parts", default="throughput,isolation", help="comma-separated: throughput,isolation")
    parser.add_argument("--events", type=int, default=20_000, help="pre-produced records per throughput row")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (order reversed every other)")
    parser.add_argument("--tp-timeout", type=float, default=300.0, help="max seconds per throughput row")
    parser.add_argument("--rate", type=float, default=500.0, help="routed events/s (each destination reads all)")
    parser.add_argument("--pairs", type=int, default=2, help="nofault/fault pairs per topology, order alternating")
    parser.add_argument("--topology", default="service,lanes",
                        help="comma-separated: service (python -m streaming.delivery, as deployed), lanes (one "
                             "process per lane, restarted alone)")
    parser.add_argument("--before-s", type=float, default=30.0, help="load before the fault")
    parser.add_argument("--error-s", type=float, default=15.0, help="seconds c answers 500")
    parser.add_argument("--hang-s", type=float, default=60.0, help="seconds c hangs (sleeps timeout + 5 s)")
    parser.add_argument("--after-s", type=float, default=30.0, help="load after c recovered")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="the destinations' timeout_s (default: the "
                                                                      "destinations file's default)")
    parser.add_argument("--rate-limit", type=float, default=0.0,
                        help="every destination's rate_limit_per_s in the isolation part (0: none, the default); "
                             "bounds c's catch-up after the fault")
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="max seconds to wait for c to drain")
    parser.add_argument("--keep-logs", default="", help="copy the lanes' and brokers' logs here")
    parser.add_argument("--json", default=str(ROOT / "data" / "benchmarks" / "delivery.json"))
    args = parser.parse_args()
    if args.quick:
        defaults = parser.parse_args([])
        for k, v in QUICK.items():
            if getattr(args, k) == getattr(defaults, k):
                setattr(args, k, v)
    args.parts = set(args.parts.split(","))
    main_bench(args)


if __name__ == "__main__":
    main()
