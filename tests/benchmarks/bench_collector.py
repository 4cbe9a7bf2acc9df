"""Collector benchmark (``make bench-collector``): accepted events/s and accept latency, load on loopback.

Each phase gets a fresh embedded broker (Tansu never trims its memory) and a fresh collector process
(``python -m streaming.collector``); the load runs in a third process:

* ``single``  – closed loop, single-event ``POST /v1/track`` requests, many connections (``wrk`` if installed,
  else a Python asyncio generator), accepted events/s;
* ``batch``   – the same with 100-event ``POST /v1/batch`` requests;
* ``latency`` – open loop at a fixed rate (default 1,000 req/s of single events), p50/p99/p99.9 measured from each
  request's *scheduled* send time (no coordinated omission), by a Python asyncio generator.

Every phase runs each collector under test back to back (the order alternating from phase to phase) with the same
load generator: ``raw`` (``python -m streaming.collector``, the raw ASGI app) and ``fastapi``
(``tests/benchmarks/fastapi_collector.py``: the same work written the idiomatic FastAPI way, pydantic body models,
``Depends`` for the write key, same sink, same uvicorn options). Besides events/s and latency it reports the
collector process's CPU time per accepted request, the figure a busy machine (or a load generator that saturates
first) disturbs least, and the ratios side by side.

Every accepted request was acknowledged by the broker (acks=all, idempotent) before its 200. Prints a report and
writes JSON (``--json``). Anchor: RudderStack's gateway, 1.7k events/s on 2 cores at 4.2 ms; target (raw) ≥ 3×
with p99 ≤ 5 ms.

    .venv/bin/python tests/benchmarks/bench_collector.py [--duration 10] [--rate 1000] [--linger-ms 1]
        [--phases latency,single,batch] [--servers raw,fastapi]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WRITE_KEY = "bench-key"
AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
ANCHOR = {"name": "RudderStack gateway", "events_per_s": 1700, "latency_ms": 4.2, "cores": 2}

# ~345-byte event, like STACK-FACTS' ceilings.
EVENT_TEMPLATE = {
    "type": "track", "event": "Product Viewed", "anonymousId": "anon-{i}", "messageId": "{mid}",
    "timestamp": "2026-11-23T10:00:00.000Z",
    "context": {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0",
                "locale": "en-GB", "page": {"url": "https://shop.example/p/42", "path": "/p/42"}},
    "properties": {"sku": "SKU-42", "price": 19.99, "currency": "EUR", "category": "shoes"},
}


def event_json(mid: str, anon: int) -> str:
    doc = json.loads(json.dumps(EVENT_TEMPLATE))
    doc["messageId"] = mid
    doc["anonymousId"] = f"anon-{anon}"
    return json.dumps(doc, separators=(",", ":"))


# -- processes ---------------------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


#: how each collector under test is started (same environment, same uvicorn options)
SERVERS = {
    "raw": [sys.executable, "-m", "streaming.collector"],
    "fastapi": [sys.executable, str(Path(__file__).with_name("fastapi_collector.py"))],
}


def fastapi_available() -> bool:
    try:
        import fastapi  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def stack(linger_ms: float, workers: int, log_dir: Path, server: str = "raw"):
    from streaming.broker import EmbeddedBroker, create_topics, free_port
    from streaming.settings import load_settings

    broker = EmbeddedBroker.start(log_path=log_dir / "tansu.log")
    collector = None
    try:
        create_topics(broker.address, load_settings(kafka_broker_address=broker.address))
        port = free_port()
        env = {**os.environ, "KAFKA_BROKER_ADDRESS": broker.address, "FIRSTMILE_WRITE_KEYS": f"{WRITE_KEY}:bench",
               "FIRSTMILE_RATE_LIMIT_PER_S": "0", "FIRSTMILE_COLLECTOR_PORT": str(port),
               "FIRSTMILE_COLLECTOR_LINGER_MS": str(linger_ms), "FIRSTMILE_COLLECTOR_WORKERS": str(workers)}
        log = open(log_dir / f"collector-{server}.log", "ab")  # noqa: SIM115
        collector = subprocess.Popen(SERVERS[server], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_ready(port)
        yield {"port": port, "collector": collector, "broker": broker}
    finally:
        if collector is not None:
            collector.terminate()
            try:
                collector.wait(timeout=15)
            except subprocess.TimeoutExpired:
                collector.kill()
        broker.stop()


def wait_ready(port: int, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("collector not ready")


def warm_up(port: int, seconds: float = 1.5) -> None:
    """A short closed-loop burst so the first measured request does not pay for connection set-up."""
    subprocess.run([sys.executable, __file__, "--_load", "closed", "--port", str(port), "--duration", str(seconds),
                    "--connections", "8", "--batch", "1"], check=True, capture_output=True)


# -- wrk ---------------------------------------------------------------------------------------------------------

WRK_LUA = r"""
local batch = tonumber(os.getenv("BENCH_BATCH") or "1")
local prefix = os.getenv("BENCH_PREFIX") .. tostring(math.random(1, 1000000000))
local n = 0
local tmpl = os.getenv("BENCH_EVENT")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
request = function()
  n = n + 1
  local id = prefix .. "-" .. n
  if batch == 1 then
    local body = tmpl:gsub("{mid}", id, 1):gsub("{anon}", tostring(n % 5000), 1)
    return wrk.format(nil, "/v1/track", nil, body)
  end
  local parts = {}
  for i = 1, batch do
    parts[i] = tmpl:gsub("{mid}", id .. "-" .. i, 1):gsub("{anon}", tostring((n * batch + i) % 5000), 1)
  end
  return wrk.format(nil, "/v1/batch", nil, '{"batch":[' .. table.concat(parts, ",") .. ']}')
end
"""


def run_wrk(port: int, batch: int, connections: int, duration: float, threads: int = 1) -> dict[str, Any]:
    tmpl = event_json("{mid}", 0).replace('"anon-0"', '"anon-{anon}"')
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_LUA)
        script = fh.name
    env = {**os.environ, "BENCH_BATCH": str(batch), "BENCH_PREFIX": uuid.uuid4().hex[:8], "BENCH_EVENT": tmpl,
           "BENCH_AUTH": AUTH}
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s", script,
           f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    os.unlink(script)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    secs = float(re.search(r"requests in ([\d.]+)s", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    lat = {m.group(1): _ms(m.group(2), m.group(3)) for m in re.finditer(r"\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", out)}
    ok = total - bad
    return {"tool": "wrk", "requests_ok": ok, "requests_failed": bad, "socket_errors": errors.group(1) if errors
            else "", "seconds": secs, "requests_per_s": ok / secs, "events_per_s": ok * batch / secs,
            "p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "raw": out}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# -- the Python load generator (a separate process: `--_load`) ----------------------------------------------------

def build_request(port: int, batch: int, seq: int, prefix: str) -> bytes:
    if batch == 1:
        body = event_json(f"{prefix}-{seq}", seq % 5000).encode()
        path = "/v1/track"
    else:
        events = ",".join(event_json(f"{prefix}-{seq}-{i}", (seq * batch + i) % 5000) for i in range(batch))
        body = f'{{"batch":[{events}]}}'.encode()
        path = "/v1/batch"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    await reader.readexactly(length)
    return status


async def open_loop(port: int, rate: float, duration: float, batch: int) -> dict[str, Any]:
    """Requests scheduled at a fixed rate; latency counted from the scheduled time."""
    prefix = uuid.uuid4().hex[:8]
    total = int(rate * duration)
    requests = [build_request(port, batch, i, prefix) for i in range(total)]
    pool: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = collections.deque()
    for _ in range(16):
        pool.append(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def one(scheduled: float, data: bytes) -> None:
        conn = pool.popleft() if pool else await asyncio.open_connection("127.0.0.1", port)
        try:
            status = await _request(*conn, data)
        except (OSError, asyncio.IncompleteReadError):
            statuses[-1] = statuses.get(-1, 0) + 1
            return
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        pool.append(conn)

    # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
    start = time.perf_counter() + 0.05
    tasks = []
    for i, data in enumerate(requests):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, data)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 3)

    ok = statuses.get(200, 0)
    return {"tool": "python-open-loop", "rate": rate, "batch": batch, "requests_ok": ok, "statuses": statuses,
            "seconds": elapsed, "achieved_rate": ok / elapsed, "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "p999_ms": pct(99.9), "max_ms": round(latencies[-1] * 1000, 3)}


async def closed_loop(port: int, connections: int, duration: float, batch: int) -> dict[str, Any]:
    prefix = uuid.uuid4().hex[:8]
    template = [build_request(port, batch, i, prefix) for i in range(2000)]
    ok = 0
    failed = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def worker(w: int) -> None:
        nonlocal ok, failed
        conn = await asyncio.open_connection("127.0.0.1", port)
        i = w
        while loop.time() < end:
            status = await _request(*conn, template[i % len(template)])
            i += connections
            if status == 200:
                ok += 1
            else:
                failed += 1

    start = loop.time()
    await asyncio.gather(*(worker(w) for w in range(connections)))
    secs = loop.time() - start
    return {"tool": "python-closed-loop", "requests_ok": ok, "requests_failed": failed, "seconds": secs,
            "requests_per_s": ok / secs, "events_per_s": ok * batch / secs}


def run_python_load(mode: str, port: int, **kw: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_load", mode, "--port", str(port)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- main ----------------------------------------------------------------------------------------------------------

def measure(name: str, server: str, fn, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    with stack(args.linger_ms, args.workers if server == "raw" else 1, log_dir, server) as s:
        warm_up(s["port"])
        pids = {"collector": s["collector"].pid, "broker": s["broker"].process.pid}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.monotonic()
        result = fn(s["port"])
        wall = time.monotonic() - t0
        used = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
    result["server"] = server
    result["cpu_cores_used"] = {k: round(v / wall, 2) for k, v in used.items()}
    # The figure a busy machine disturbs least: the collector process's CPU per accepted request (uvicorn worker
    # processes, with --workers > 1, are children and not counted: compare with --workers 1).
    result["collector_cpu_us_per_request"] = used["collector"] / max(result["requests_ok"], 1) * 1e6
    print(f"  {name} [{server}]: done", file=sys.stderr)
    return result


def side_by_side(results: dict[str, dict[str, Any]], phase: str) -> dict[str, Any] | None:
    """raw ÷ fastapi for one phase: throughput (events/s), collector CPU per request, latency percentiles."""
    raw, fast = results.get(phase, {}).get("raw"), results.get(phase, {}).get("fastapi")
    if not raw or not fast:
        return None
    out: dict[str, Any] = {"fastapi_cpu_per_request_x": fast["collector_cpu_us_per_request"]
                           / raw["collector_cpu_us_per_request"]}
    if "events_per_s" in raw:
        out["raw_over_fastapi_events_per_s"] = raw["events_per_s"] / max(fast["events_per_s"], 1e-9)
    for q in ("p50_ms", "p99_ms"):
        if raw.get(q) and fast.get(q):
            out[f"fastapi_over_raw_{q}"] = fast[q] / raw[q]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed request rate of the latency phase")
    parser.add_argument("--linger-ms", type=float, default=float(os.environ.get("FIRSTMILE_COLLECTOR_LINGER_MS", 1)))
    parser.add_argument("--workers", type=int, default=1, help="collector worker processes")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=16)
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--phases", default="latency,single,batch")
    parser.add_argument("--servers", default="raw,fastapi",
                        help="collectors to measure side by side: raw (streaming.collector) and/or fastapi "
                             "(tests/benchmarks/fastapi_collector.py)")
    parser.add_argument("--json", type=Path, default=ROOT / "data" / "benchmarks" / "collector.json")
    # internal: run as the load generator process
    parser.add_argument("--_load", choices=["open", "closed"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._load:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        if args._load == "open":
            result = asyncio.run(open_loop(args.port, args.rate, args.duration, args.batch))
        else:
            result = asyncio.run(closed_loop(args.port, args.connections, args.duration, args.batch))
        print(json.dumps(result))
        return 0

    load_before = os.getloadavg()
    if load_before[0] > 1.0:
        print(f"warning: load average {load_before[0]:.1f} before the run: other processes share the cores, "
              "figures will be low and noisy", file=sys.stderr)
    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk"))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    phases = args.phases.split(",")
    servers = [x for x in args.servers.split(",") if x]
    if "fastapi" in servers and not fastapi_available():
        print("fastapi is not installed in this environment: the FastAPI variant is skipped", file=sys.stderr)
        servers.remove("fastapi")
    results: dict[str, dict[str, Any]] = {}

    def throughput(batch: int, conns: int):
        def run(port: int) -> dict[str, Any]:
            if use_wrk:
                return run_wrk(port, batch, conns, args.duration)
            return run_python_load("closed", port, connections=conns, duration=args.duration, batch=batch)
        return run

    runners = {
        "latency": lambda port: run_python_load("open", port, rate=args.rate, duration=args.duration, batch=1),
        "single": throughput(1, args.connections),
        "batch": throughput(100, args.batch_connections),
    }
    order_log = []
    for i, phase in enumerate(p for p in ("latency", "single", "batch") if p in phases):
        # each phase measures every server back to back, the order alternating from phase to phase
        order = servers if i % 2 == 0 else servers[::-1]
        order_log.append({"phase": phase, "order": order})
        results[phase] = {server: measure(phase, server, runners[phase], args, log_dir) for server in order}

    for per_server in results.values():
        for r in per_server.values():
            r.pop("raw", None)
    target_eps = 3 * ANCHOR["events_per_s"]
    comparison = {phase: side_by_side(results, phase) for phase in results}
    report = {
        "benchmark": "collector", "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "host": platform.node(), "cores": os.cpu_count(), "python": platform.python_version(),
        "linger_ms": args.linger_ms, "workers": args.workers, "duration_s": args.duration, "anchor": ANCHOR,
        "target": {"events_per_s": target_eps, "p99_ms": 5.0}, "servers": servers, "order": order_log,
        "results": results, "raw_vs_fastapi": comparison, "logs": str(log_dir),
    }
    single = results.get("single", {}).get("raw", {}).get("events_per_s")
    p99 = results.get("latency", {}).get("raw", {}).get("p99_ms")
    report["meets_target"] = {"throughput": None if single is None else single >= target_eps,
                              "p99": None if p99 is None else p99 <= 5.0}  # None: phase not run

    print("\nfirstmile collector benchmark "
          f"({os.cpu_count()} cores, linger.ms={args.linger_ms}, {args.workers} worker(s), {args.duration:g} s/phase, "
          f"load average before {load_before[0]:.1f})")
    print(f"anchor: {ANCHOR['name']} {ANCHOR['events_per_s']} ev/s @ {ANCHOR['latency_ms']} ms; "
          f"target (raw collector) >= {target_eps} ev/s, p99 <= 5 ms")
    for server in servers:
        label = {"raw": "raw ASGI", "fastapi": "FastAPI"}[server]
        r = results.get("single", {}).get(server)
        if r:
            print(f"  {label:<9} single events  : {r['events_per_s']:>9,.0f} ev/s  ({r['requests_ok']} ok, "
                  f"{r['requests_failed']} failed, {args.connections} conns, {r['tool']}) "
                  f"{r['collector_cpu_us_per_request']:,.0f} µs collector CPU/request, cpu {r['cpu_cores_used']}")
        r = results.get("batch", {}).get(server)
        if r:
            print(f"  {label:<9} 100-event batch: {r['events_per_s']:>9,.0f} ev/s  ({r['requests_per_s']:,.0f} req/s, "
                  f"{r['requests_failed']} failed, {args.batch_connections} conns, {r['tool']}) "
                  f"{r['collector_cpu_us_per_request']:,.0f} µs collector CPU/request, cpu {r['cpu_cores_used']}")
        r = results.get("latency", {}).get(server)
        if r:
            print(f"  {label:<9} latency @ {r['rate']:,.0f} req/s: p50 {r['p50_ms']} ms  p90 {r['p90_ms']} ms  p99 "
                  f"{r['p99_ms']} ms  p99.9 {r['p999_ms']} ms  max {r['max_ms']} ms  statuses {r['statuses']}  "
                  f"{r['collector_cpu_us_per_request']:,.0f} µs collector CPU/request")
    for phase, c in comparison.items():
        if not c:
            continue
        parts = []
        if "raw_over_fastapi_events_per_s" in c:
            parts.append(f"raw ÷ FastAPI events/s {c['raw_over_fastapi_events_per_s']:.2f}×")
        parts.append(f"FastAPI ÷ raw collector CPU per request {c['fastapi_cpu_per_request_x']:.2f}×")
        if "fastapi_over_raw_p99_ms" in c:
            parts.append(f"FastAPI ÷ raw p50 {c['fastapi_over_raw_p50_ms']:.2f}×, "
                         f"p99 {c['fastapi_over_raw_p99_ms']:.2f}×")
        print(f"  {phase:<7} side by side: " + "; ".join(parts))
    print(f"  meets target (raw): {report['meets_target']}  (load average before/after: {load_before[0]:.1f}/"
          f"{report['loadavg_after'][0]:.1f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"JSON: {args.json}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
