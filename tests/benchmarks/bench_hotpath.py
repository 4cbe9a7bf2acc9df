"""Hot-path benchmark (``make bench-hotpath``): the first-mile worker against a bare Quix hop, in one run.

Same events (a realistic simulator mix: humans, listed crawlers, stealth bots, EU consent with TCF strings, plus ~1 %
poison input), same partitions (3), a fresh embedded Tansu broker per variant (Tansu never trims its memory), and the
sustainable settings of STACK-FACTS.md (load producer linger 50 ms; Quix producer linger 10 ms, fetch wait 20 ms,
commit interval 1 s; readers fetch wait 20 ms). Variants:

* ``passthrough`` – a bare Quix app: raw bytes of ``events.raw`` → one output topic, same app settings;
* ``full``        – ``streaming.worker.build_app`` (two stages, repartitioned by profile) with a policy that carries a
  propensity model (a logistic doc with plausible coefficients) and a shadow bot model;
* ``nomodel``     – the same policy without models;
* ``skeleton``    – the worker's own topology and wiring (``build_app``: stage 1 stateful by device, repartition
  by ``group_by``, stage 2 stateful by profile, one output) with the decisions replaced by a state
  read + write and a small record: what the two stateful stages and the repartition cost without any logic. The
  baseline STACK-FACTS.md names for a repartitioned pipeline (≈ 0.6× a one-step app); ``full ÷ skeleton`` is
  what the first-mile logic itself costs.

Parts:

1. ``compute``    – per-event compute inside the worker: ``decide_device`` + ``decide_profile`` timed in-process
   over the same events (plain dict state); cold caches as in a freshly started worker, plus an adversarial pass
   where every user agent is unique (randomizing bots defeat every per-UA cache).
1b. ``ua``       – the worker's crawler user-agent matcher (all crawler-user-agents patterns in one Hyperscan
   database) on never-seen user agents, browsers and bots, each lookup timed (p50/p99 µs), side by side with the
   scan alone, the cached hit and ``crawleruseragents.is_crawler``.
2. ``throughput`` – events preloaded, then the worker runs in its own process; events/s counted by consuming the
   outputs (distinct ``raw_partition/raw_offset`` over dlq, quarantine, suppressed and destinations: every input ends
   in exactly one of them), never by watermarks. Also the worker's and the broker's CPU time per event, counted from
   the worker's first partition assignment (after imports, warm-up and the group join, before its first event) to
   the last output, for every variant: start-up is excluded here as in the latency phase.
3. ``latency``    – end-to-end at a fixed rate (default 1,000 ev/s for 40 s): load generator, worker and reader in
   three processes; the load stamps its produce time in a header, the reader takes the first output of each input.

Prints a report and writes JSON (``--json``, default ``data/benchmarks/hotpath.json``).

    .venv/bin/python tests/benchmarks/bench_hotpath.py [--events 50000] [--rate 1000] [--duration 40]
        [--parts compute,ua,throughput,latency] [--ua-lookups 20000] [--ua-reference 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SCRIPT = Path(__file__).resolve()
PARTITIONS = 3
PASSTHROUGH_TOPIC = "bench.passthrough"
SECRET = "bench-secret-0123456789"
QUIX_LINGER_MS = 10      # >= 10 with a repartition (STACK-FACTS); the same for the bare hop
QUIX_FETCH_WAIT_MS = 20  # Tansu's sustainable minimum
LOAD_LINGER_MS = 50
READER_FETCH_WAIT_MS = 20
VARIANTS = ("passthrough", "skeleton", "full", "nomodel")
#: Events of the adversarial pass (every user agent new): each costs a user-agent parse, so keep it short.
UNIQUE_UA_EVENTS = 5000

# --- events ----------------------------------------------------------------------------------------------------------


def poison(rng: random.Random, i: int, good: bytes) -> bytes:
    """Invalid input the worker must dead-letter (and survive)."""
    kind = i % 6
    if kind == 0:
        return b'{"type": "track", "event_id": "p-' + str(i).encode() + b'", "anonymous_id": "x"'  # truncated JSON
    if kind == 1:
        return good[:40] + b"\xff\xfe" + good[40:]  # not UTF-8
    if kind == 2:
        doc = json.loads(good)
        doc.pop("event_id", None)
        return json.dumps(doc).encode()  # no id
    if kind == 3:
        doc = json.loads(good)
        doc["timestamp"] = 12345
        return json.dumps(doc).encode()  # wrong type
    if kind == 4:
        doc = json.loads(good)
        doc["event_id"] = f"p-{i}-big"
        doc["properties"] = {"blob": "x" * 33_000}
        return json.dumps(doc).encode()  # oversized
    return b"null"


def make_events(n: int, seed: int = 7) -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    """``n`` (key, value) records for ``events.raw`` in arrival order, as the collector would write them."""
    import orjson

    from streaming.contract import from_segment
    from streaming.simulator import generate, load_scenario

    users = max(50, n // 21 + 10)  # the default scenario yields ~21 events per simulated person per day
    scenario = load_scenario("default", users=users, crawler_bots=max(3, 3 * users // 200),
                             stealth_bots=max(2, 2 * users // 200), seed=seed)
    rng = random.Random(seed)
    records: list[tuple[bytes, bytes]] = []
    mix: dict[str, int] = {}
    for ev in generate(scenario, day=0):
        if len(records) >= n:
            break
        record = from_segment(ev.payload, source_id="bench", received_at=ev.send_at)
        key = (record.get("anonymous_id") or record.get("user_id") or "").encode()
        value = orjson.dumps(record)
        actor = str(ev.truth.get("actor"))
        if actor == "human" and ev.truth.get("region") == "EU":
            actor = "human_eu"
        mix[actor] = mix.get(actor, 0) + 1
        records.append((key, value))
        if rng.random() < 0.01 and len(records) < n:  # ~1 % poison, inserted (sessions stay intact)
            records.append((b"poison-%d" % rng.randrange(100), poison(rng, len(records), value)))
            mix["poison"] = mix.get("poison", 0) + 1
    if len(records) < n:
        raise SystemExit(f"the scenario yielded only {len(records)} events; ask for fewer")
    return records, mix


# --- the policy under test --------------------------------------------------------------------------------------------

#: Plausible propensity coefficients over session-so-far features (standardized; log1p for counts and money).
PROPENSITY = {
    "session_event_count": (1.0, 0.8, 0.30, "log1p"), "session_duration_s": (4.0, 2.0, 0.20, "log1p"),
    "seconds_since_prev": (2.5, 1.5, -0.10, "log1p"), "mean_interval_s": (2.5, 1.5, 0.10, "log1p"),
    "interval_std_s": (2.0, 1.5, 0.05, "log1p"), "min_interval_s": (1.5, 1.2, 0.05, "log1p"),
    "events_per_minute": (1.0, 1.0, -0.30, "log1p"), "page_views": (1.0, 0.8, 0.10, "log1p"),
    "product_views": (0.8, 0.8, 0.60, "log1p"), "cart_adds": (0.2, 0.5, 1.20, "log1p"),
    "cart_value": (1.0, 2.0, 0.90, "log1p"), "distinct_categories": (1.0, 1.0, 0.20, "none"),
}
BOT_MODEL = {
    "events_per_minute": (1.0, 1.0, 1.5, "log1p"), "interval_std_s": (2.0, 1.5, -1.2, "log1p"),
    "min_interval_s": (1.5, 1.2, -0.8, "log1p"), "session_event_count": (1.0, 0.8, 0.5, "log1p"),
}


def _model(spec: dict[str, tuple[float, float, float, str]], intercept: float, **extra: Any) -> dict[str, Any]:
    names = list(spec)
    return {"kind": "logistic", "features": names, "mean": [spec[k][0] for k in names],
            "scale": [spec[k][1] for k in names], "coef": [spec[k][2] for k in names],
            "transform": [spec[k][3] for k in names], "intercept": intercept,
            "source": {"note": "bench_hotpath: plausible hand-set coefficients"}, **extra}


def policy_doc(with_models: bool) -> dict[str, Any]:
    from streaming.policy import bootstrap_policy, seal

    doc = {k: v for k, v in bootstrap_policy().items() if k != "checksum"}
    doc["policy_version"] = 2
    doc["parent_version"] = 1
    doc["description"] = "bench_hotpath: bootstrap rules" + (" + propensity and shadow bot models" if with_models
                                                             else ", models off")
    if with_models:
        sessions = __import__("streaming.sessions", fromlist=["FEATURES"])
        assert set(PROPENSITY) == set(sessions.FEATURES), "PROPENSITY must cover streaming.sessions.FEATURES"
        doc["models"] = {"propensity": _model(PROPENSITY, -2.0),
                         "bot": _model(BOT_MODEL, -3.0, threshold=0.9, mode="shadow")}
        # The score drives a decision: a high-propensity segment first.
        doc["segments"] = [{"id": "high_propensity", "action": "offer_free_shipping",
                            "when": {">=": [{"var": "score"}, 0.8]}}, *doc["segments"]]
    return seal(doc)


def holder_for(variant: str) -> Any:
    from streaming.policy import PolicyHolder, compile_policy

    return PolicyHolder(compile_policy(policy_doc(with_models=variant == "full")))


# --- part 1: compute in-process ---------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_us(ns: list[int]) -> dict[str, float]:
    us = [v / 1000 for v in ns]
    return {"n": len(us), "p50_us": pct(us, 0.5), "p90_us": pct(us, 0.9), "p99_us": pct(us, 0.99),
            "p999_us": pct(us, 0.999), "max_us": max(us) if us else float("nan"),
            "mean_us": statistics.fmean(us) if us else float("nan")}


def clear_caches() -> None:
    from streaming import bots, enrich

    enrich.geo.cache_clear()
    enrich.device.cache_clear()
    bots.crawler_matcher()._match.cache_clear()
    enrich.warm()  # as run_worker does: databases loaded, not the per-string caches


def time_compute(records: list[tuple[bytes, bytes]], variant: str, *, unique_ua: bool = False) -> dict[str, Any]:
    """decide_device + decide_profile per event, in arrival order, per-key dict state (the worker's compute)."""
    import orjson

    from streaming.pipeline import DictState, Origin, decide_device, decide_profile

    policy = holder_for(variant).current
    secret = SECRET.encode()
    if unique_ua:  # every event a never-seen user agent: no per-UA cache can answer
        tweaked = []
        for i, (key, value) in enumerate(records):
            try:
                doc = orjson.loads(value)
                ctx = doc.get("context") or {}
                if ctx.get("user_agent"):
                    ctx["user_agent"] = f"{ctx['user_agent']} r/{i}"
                    value = orjson.dumps(doc)
            except Exception:
                pass
            tweaked.append((key, value))
        records = tweaked
    clear_caches()
    devices: dict[bytes, DictState] = {}
    profiles: dict[str, DictState] = {}
    total, stage1, stage2, quix_json, total_cpu = [], [], [], [], []
    outcomes: dict[str, int] = {}
    clock, thread_clock = time.perf_counter_ns, time.thread_time_ns
    cpu0 = time.process_time()
    for offset, (key, value) in enumerate(records):
        state = devices.setdefault(key, DictState())
        c0 = thread_clock()
        t0 = clock()
        out = decide_device(value, state, policy, secret=secret, origin=Origin(offset % PARTITIONS, offset), key=key)
        t1 = clock()
        outs = decide_profile(out.value, profiles.setdefault(out.key, DictState()), policy) \
            if out.topic == "profile" else [out]
        t2 = clock()
        total_cpu.append(thread_clock() - c0)
        total.append(t2 - t0)
        stage1.append(t1 - t0)
        if out.topic == "profile":
            stage2.append(t2 - t1)
        # What Quix adds around it (orjson), measured apart: serialize stage 1's record, read it back, serialize
        # the outputs.
        t3 = clock()
        if out.topic == "profile":
            orjson.loads(orjson.dumps(out.value))
        for o in outs:
            orjson.dumps(o.value)
        quix_json.append(clock() - t3)
        for o in outs:
            outcomes[o.topic] = outcomes.get(o.topic, 0) + 1
    cpu_per_event_us = (time.process_time() - cpu0) / max(len(records), 1) * 1e6
    return {"variant": variant, "unique_ua": unique_ua, "cpu_per_event_us": cpu_per_event_us,
            "total": summary_us(total), "total_cpu": summary_us(total_cpu), "decide_device": summary_us(stage1),
            "decide_profile": summary_us(stage2), "json_roundtrip": summary_us(quix_json), "outputs": outcomes}


# --- part 1b: the crawler user-agent matcher, uncached ---------------------------------------------------------------


def never_seen_user_agents(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """``n`` distinct (kind, user agent) pairs, ~70 % browsers and ~30 % bots, shuffled.

    Browsers: fake-useragent's bundled data (839 distinct strings); bots: every instance in the crawler-user-agents
    list (2,123). Beyond those, variants with a randomized build number (``Chrome/131.0.6778.85`` →
    ``Chrome/131.0.51234.85``), as bots that randomize their user agent send: every string is new to any cache.
    """
    import re

    import crawleruseragents
    from fake_useragent.utils import load

    rng = random.Random(seed)
    bases = {"browser": sorted({row["useragent"] for row in load()}),
             "bot": sorted({i for e in crawleruseragents.CRAWLER_USER_AGENTS_DATA for i in e.get("instances", [])})}
    version = re.compile(r"(\d+\.\d+\.)(\d+)")
    out: list[tuple[str, str]] = []
    used: set[str] = set()
    for kind, share in (("browser", 0.7), ("bot", 0.3)):
        want = round(n * share)
        pool = bases[kind]
        k = 0
        while want > 0:
            ua = pool[k % len(pool)]
            if k >= len(pool):  # a variant nobody has sent before
                ua = version.sub(lambda m: m.group(1) + str(rng.randrange(10_000, 99_999)), ua, count=1)
                if ua in used:
                    ua = f"{ua} r{k}"
            k += 1
            if ua not in used:
                used.add(ua)
                out.append((kind, ua))
                want -= 1
    rng.shuffle(out)
    return out


def time_ua_matcher(n: int, reference: int) -> dict[str, Any]:
    """The worker's crawler matcher (all crawler-user-agents patterns in one Hyperscan database) on never-seen user
    agents: ``match`` through a fresh (empty) LRU cache — what the worker pays per new user agent —, the database
    scan alone, the cached hit, and ``crawleruseragents.is_crawler`` (Python ``re``) on the first ``reference``
    of the same strings, side by side."""
    import crawleruseragents

    from streaming.bots import CrawlerMatcher

    uas = never_seen_user_agents(n)
    patterns = [entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA]
    t0 = time.perf_counter()
    matcher = CrawlerMatcher(patterns)  # a fresh database and an empty cache (not the process-wide singleton)
    compile_s = time.perf_counter() - t0
    clock = time.perf_counter_ns
    rows: dict[str, dict[str, list[int]]] = {k: {"match": [], "scan": [], "cached": [], "is_crawler": []}
                                             for k in ("browser", "bot")}
    hits = {"browser": 0, "bot": 0}
    match, scan = matcher.match, matcher._match_uncached
    for kind, ua in uas:  # first sight of each: an LRU miss, the scan, the insert
        t = clock()
        found = match(ua)
        rows[kind]["match"].append(clock() - t)
        hits[kind] += found is not None
    for kind, ua in uas:
        t = clock()
        scan(ua)
        rows[kind]["scan"].append(clock() - t)
    for kind, ua in uas:  # cached
        t = clock()
        match(ua)
        rows[kind]["cached"].append(clock() - t)
    for kind, ua in uas[:reference]:
        t = clock()
        crawleruseragents.is_crawler(ua)
        rows[kind]["is_crawler"].append(clock() - t)
    counts = {k: sum(1 for kind, _ in uas if kind == k) for k in ("browser", "bot")}
    result: dict[str, Any] = {"lookups": len(uas), "patterns": len(patterns), "compile_s": compile_s,
                              "fallback_patterns": len(matcher.fallback), "counts": counts,
                              "flagged": {k: hits[k] / max(counts[k], 1) for k in hits}}
    for kind in ("browser", "bot", "all"):
        for what in ("match", "scan", "cached", "is_crawler"):
            ns = rows["browser"][what] + rows["bot"][what] if kind == "all" else rows[kind][what]
            result[f"{kind}_{what}"] = summary_us(ns) if ns else None
    return result


# --- broker, topics, processes ----------------------------------------------------------------------------------------


def bench_settings(tmp: Path, variant: str) -> Any:
    from streaming.settings import load_settings

    return load_settings(partitions=PARTITIONS, data_dir=tmp / "data", consumer_group=f"bench-{variant}",
                         pii_secret=SECRET, commit_interval=1.0)


def create_all_topics(address: str, settings: Any) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from streaming.broker import create_topics

    create_topics(address, settings)
    admin = AdminClient({"bootstrap.servers": address})
    futures = admin.create_topics([NewTopic(PASSTHROUGH_TOPIC, num_partitions=PARTITIONS, replication_factor=1,
                                            config={"retention.ms": str(settings.retention_ms),
                                                    "retention.bytes": str(settings.retention_bytes)})])
    for future in futures.values():
        future.result(timeout=30)


def output_topics(variant: str, settings: Any) -> list[str]:
    from streaming import settings as topics

    if variant == "passthrough":
        return [PASSTHROUGH_TOPIC]
    return [settings.topic(t) for t in (topics.DLQ, topics.QUARANTINE, topics.SUPPRESSED, *topics.DESTINATIONS)]


@contextmanager
def fresh_broker(tmp: Path, name: str):
    from streaming.broker import EmbeddedBroker

    broker = EmbeddedBroker.start(log_path=tmp / f"tansu-{name}.log")
    try:
        yield broker
    finally:
        broker.stop()


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def spawn(role: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SCRIPT), role, *args], stdout=subprocess.PIPE, text=True,
                            cwd=str(ROOT), start_new_session=True)


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[2]} exited ({proc.returncode}) before printing {prefix}")
            continue
        if line.startswith(prefix):
            return line.strip()
    raise TimeoutError(f"{proc.args[2]}: no {prefix} within {timeout}s")


def stop(proc: subprocess.Popen[str], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# --- roles (separate processes) ---------------------------------------------------------------------------------------


def passthrough_app(settings: Any, address: str, state_dir: str) -> Any:
    """A bare Quix hop with exactly the worker's Application settings (streaming.worker.build_app)."""
    from quixstreams import Application
    from quixstreams.models import TopicConfig

    from streaming import settings as topics
    from streaming.broker import fast_group_consumer_config
    from streaming.worker import _topic_config

    app = Application(broker_address=address, consumer_group=settings.consumer_group, auto_offset_reset="earliest",
                      commit_interval=settings.commit_interval,
                      consumer_extra_config={**fast_group_consumer_config(), "fetch.wait.max.ms": QUIX_FETCH_WAIT_MS},
                      producer_extra_config={"linger.ms": QUIX_LINGER_MS}, state_dir=state_dir, loglevel="WARNING",
                      processing_guarantee="at-least-once")
    raw = app.topic(settings.topic(topics.RAW), key_deserializer="bytes", value_deserializer="bytes",
                    key_serializer="bytes", value_serializer="bytes", config=_topic_config(settings, topics.RAW))
    out = app.topic(PASSTHROUGH_TOPIC, key_serializer="bytes", value_serializer="bytes",
                    config=TopicConfig(num_partitions=PARTITIONS, replication_factor=1,
                                       extra_config={"retention.ms": str(settings.retention_ms),
                                                     "retention.bytes": str(settings.retention_bytes)}))
    app.dataframe(raw).to_topic(out)
    return app


def skeleton_device(raw: bytes | None, state: Any, policy: Any, *, secret: bytes, origin: Any,
                    key: bytes | None, control: Any = None) -> Any:
    """Stage 1 of the ``skeleton`` variant: one state read and write per event, a small record, no decisions."""
    from streaming.pipeline import Output

    seen = state.get("device") or {"n": 0}
    state.set("device", {"n": seen["n"] + 1})
    profile = (key or b"-").decode("utf-8", "replace")
    return Output("profile", profile, {"profile_id": profile, "raw_partition": origin.partition,
                                       "raw_offset": origin.offset, "n": seen["n"]})


def skeleton_profile(record: dict[str, Any], state: Any, policy: Any, control: Any = None) -> list[Any]:
    from streaming import settings as topics
    from streaming.pipeline import Output

    seen = state.get("profile") or {"n": 0}
    state.set("profile", {"n": seen["n"] + 1})
    return [Output(topics.DEST_WAREHOUSE, record["profile_id"], record)]


def report_assignment(app: Any) -> None:
    """Print ``ASSIGNED <cpu s>`` (this process's CPU time so far) once the first partitions are assigned.

    That is the worker's CPU baseline for the throughput phase: imports, warm-up (geo databases, the crawler
    matcher), building the app, the group join and opening the state stores are behind it; every event is
    processed after it (Quix consumes only once ``_on_assign`` has returned). Wraps the instance's bound
    ``_on_assign`` (Quix 3.28 passes ``self._on_assign`` to ``subscribe`` when ``run()`` starts): no per-event cost.
    """
    original = app._on_assign
    done = False

    def on_assign(consumer: Any, partitions: list[Any]) -> None:
        nonlocal done
        original(consumer, partitions)
        if partitions and not done:
            done = True
            print(f"ASSIGNED {cpu_seconds(os.getpid()):.3f} {len(partitions)}", flush=True)

    app._on_assign = on_assign


def role_worker(args: argparse.Namespace) -> None:
    """The app under test, in its own process: prints READY, runs until SIGTERM."""
    from streaming import bots, enrich
    from streaming.worker import build_app

    tmp = Path(args.tmp)
    settings = bench_settings(tmp, args.variant)
    state_dir = str(tmp / f"state-{args.variant}-{uuid.uuid4().hex[:6]}")
    if args.variant == "passthrough":
        app = passthrough_app(settings, args.broker, state_dir)
    elif args.variant == "skeleton":
        import streaming.worker as worker_module

        worker_module.decide_device = skeleton_device  # type: ignore[assignment]
        worker_module.decide_profile = skeleton_profile  # type: ignore[assignment]
        app = build_app(settings, args.broker, holder_for("nomodel"), state_dir=state_dir)
    else:
        enrich.warm()
        bots.crawler_matcher()  # ~1 s to compile: not on the first event
        app = build_app(settings, args.broker, holder_for(args.variant), state_dir=state_dir)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    report_assignment(app)
    print("READY", flush=True)
    profile_to = os.environ.get("BENCH_HOTPATH_PROFILE")  # a path: cProfile the worker (diagnosis only)
    if profile_to:
        import cProfile

        cProfile.runctx("app.run()", globals(), {"app": app}, f"{profile_to}.{args.variant}")
    else:
        app.run()


def reader_consumer(address: str, topics_: list[str]) -> Any:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": address, "group.id": f"bench-reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.wait.max.ms": READER_FETCH_WAIT_MS, "fetch.min.bytes": 1})
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics_ for p in range(PARTITIONS)])
    return consumer


def role_load(args: argparse.Namespace) -> None:
    """Open-loop load at a fixed rate; each record carries its produce time (ns) and sequence number in headers.

    Before the measured phase it sends probes (seq -1) every 100 ms until it reads ``go`` on stdin."""
    import select

    from confluent_kafka import Producer

    with open(args.events, "rb") as fh:
        records: list[tuple[bytes, bytes]] = pickle.load(fh)
    producer = Producer({"bootstrap.servers": args.broker, "enable.idempotence": True, "acks": "all",
                         "linger.ms": LOAD_LINGER_MS, "compression.type": "lz4"})
    topic = args.topic
    errors = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal errors
        errors += err is not None

    print("READY", flush=True)
    probe = 0
    while not select.select([sys.stdin], [], [], 0.1)[0]:
        key, value = records[-1 - probe % 2000]  # from the tail: not the measured events (no duplicate ids)
        producer.produce(topic, key=key, value=value, headers=[("bench_seq", b"-1"),
                                                               ("bench_t0", str(time.time_ns()).encode())])
        producer.poll(0)
        probe += 1
    sys.stdin.readline()
    n = int(args.rate * args.duration)
    start = time.monotonic()
    max_behind = 0.0
    for i in range(n):
        due = start + i / args.rate
        ahead = due - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        else:
            max_behind = max(max_behind, -ahead)
        key, value = records[i % len(records)]
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=[
                    ("bench_seq", str(i).encode()), ("bench_t0", str(time.time_ns()).encode())],
                    on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    elapsed = time.monotonic() - start
    remaining = producer.flush(30)
    print("DONE " + json.dumps({"sent": n, "elapsed_s": elapsed, "max_behind_ms": max_behind * 1000,
                                "undelivered": remaining, "errors": errors, "probes": probe}), flush=True)


def role_reader(args: argparse.Namespace) -> None:
    """Reads every output topic from the beginning; per input (bench_seq) keeps the first arrival's latency."""
    consumer = reader_consumer(args.broker, args.topics.split(","))
    first: dict[int, float] = {}
    no_header = 0
    saw_probe = False
    stop_at = None
    expect = args.expect
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        msgs = consumer.consume(1000, 0.05)
        now = time.time_ns()
        for msg in msgs:
            if msg.error():
                continue
            headers = dict(msg.headers() or [])
            if "bench_seq" not in headers:
                no_header += 1
                continue
            seq = int(headers["bench_seq"])
            if seq < 0:
                if not saw_probe:
                    saw_probe = True
                    print("FIRST", flush=True)
                continue
            if seq not in first:
                first[seq] = (now - int(headers["bench_t0"])) / 1e6
        if expect and len(first) >= expect:
            break
        if stop_at is None and os.path.exists(args.stop_file):
            stop_at = time.monotonic() + 10  # grace for stragglers after the load finished
        if stop_at is not None and time.monotonic() > stop_at:
            break
    consumer.close()
    with open(args.out, "w") as fh:
        json.dump({"latency_ms": [first[k] for k in sorted(first)], "seqs": sorted(first), "no_header": no_header},
                  fh)
    print("DONE", flush=True)


# --- part 2: throughput -----------------------------------------------------------------------------------------------


def preload(address: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "acks": "all",
                         "linger.ms": LOAD_LINGER_MS, "compression.type": "lz4"})
    started = time.monotonic()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("preload: events not delivered")
    return time.monotonic() - started


def count_done(variant: str, msg: Any, seen: set[tuple[int, int]]) -> None:
    import orjson

    if variant == "passthrough":
        seen.add((msg.partition(), msg.offset()))
        return
    value = orjson.loads(msg.value())
    seen.add((value["raw_partition"], value["raw_offset"]))


class Assignment:
    """Watches the worker's stdout (in a thread) for ``ASSIGNED <cpu s>``; at that moment also samples the broker's
    CPU, so both baselines are taken when the worker is ready and before it processes the first event."""

    def __init__(self, worker: subprocess.Popen[str], broker_pid: int) -> None:
        self.worker_cpu = self.broker_cpu = self.at = float("nan")
        self.seen = threading.Event()
        self._worker, self._broker_pid = worker, broker_pid
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        assert self._worker.stdout is not None
        for line in self._worker.stdout:
            if line.startswith("ASSIGNED") and not self.seen.is_set():
                self.broker_cpu, self.at = cpu_seconds(self._broker_pid), time.monotonic()
                self.worker_cpu = float(line.split()[1])
                self.seen.set()


def run_throughput(variant: str, records: list[tuple[bytes, bytes]], tmp: Path, timeout: float) -> dict[str, Any]:
    from streaming import settings as topics

    n = len(records)
    settings = bench_settings(tmp, variant)
    with fresh_broker(tmp, f"tp-{variant}") as broker:
        create_all_topics(broker.address, settings)
        preload_s = preload(broker.address, settings.topic(topics.RAW), records)
        consumer = reader_consumer(broker.address, output_topics(variant, settings))
        broker_cpu0 = cpu_seconds(broker.process.pid)
        started = time.monotonic()
        worker = spawn("_worker", "--variant", variant, "--broker", broker.address, "--tmp", str(tmp))
        try:
            wait_line(worker, "READY", 60)
            assigned = Assignment(worker, broker.process.pid)
            seen: set[tuple[int, int]] = set()
            t_first = t_done = None
            n_first = 0
            marks: list[tuple[float, int]] = []
            deadline = time.monotonic() + timeout
            while len(seen) < n and time.monotonic() < deadline:
                for msg in consumer.consume(2000, 0.1):
                    if msg.error():
                        continue
                    count_done(variant, msg, seen)
                now = time.monotonic()
                if t_first is None and seen:
                    t_first, n_first = now, len(seen)
                if seen and (not marks or now - marks[-1][0] >= 1.0):
                    marks.append((now, len(seen)))
            t_done = time.monotonic()
            worker_cpu_total = cpu_seconds(worker.pid)
            broker_cpu_end = cpu_seconds(broker.process.pid)
            assigned.seen.wait(5)
        finally:
            stop(worker)
            consumer.close()
    done = len(seen)
    window = (t_done - t_first) if t_first else float("nan")
    # CPU from the worker's partition assignment to the last output: start-up, imports and warm-up excluded, as
    # the latency phase excludes them (it samples after output flows); the whole-process figures are kept apart.
    worker_cpu = worker_cpu_total - assigned.worker_cpu
    broker_cpu = broker_cpu_end - assigned.broker_cpu
    return {"variant": variant, "events": n, "done": done, "complete": done >= n, "preload_s": preload_s,
            "assigned_s": assigned.at - started, "startup_s": (t_first - started) if t_first else None,
            "window_s": window,
            "events_per_s": (done - n_first) / window if t_first and window > 0 else 0.0,
            "wall_events_per_s": done / (t_done - started),
            "worker_cpu_s": worker_cpu, "broker_cpu_s": broker_cpu,
            "worker_cpu_us_per_event": worker_cpu / max(done, 1) * 1e6,
            "broker_cpu_us_per_event": broker_cpu / max(done, 1) * 1e6,
            "worker_startup_cpu_s": assigned.worker_cpu,
            "worker_cpu_s_since_process_start": worker_cpu_total,
            "worker_cpu_us_per_event_since_process_start": worker_cpu_total / max(done, 1) * 1e6,
            "broker_cpu_s_since_worker_spawn": broker_cpu_end - broker_cpu0,
            "cpu_baseline": "worker's first partition assignment (before its first event) → last output",
            "progress": [(round(t - started, 2), c) for t, c in marks]}


# --- part 3: end-to-end latency ---------------------------------------------------------------------------------------


def run_latency(variant: str, events_file: Path, tmp: Path, rate: float, duration: float) -> dict[str, Any]:
    from streaming import settings as topics

    settings = bench_settings(tmp, f"lat-{variant}")
    out_file = tmp / f"lat-{variant}.json"
    stop_file = tmp / f"lat-{variant}.stop"
    with fresh_broker(tmp, f"lat-{variant}") as broker:
        create_all_topics(broker.address, settings)
        worker = spawn("_worker", "--variant", variant, "--broker", broker.address, "--tmp", str(tmp))
        reader = load = None
        try:
            wait_line(worker, "READY", 60)
            reader = spawn("_reader", "--broker", broker.address, "--topics",
                           ",".join(output_topics(variant, settings)), "--out", str(out_file), "--stop-file",
                           str(stop_file), "--expect", str(int(rate * duration)), "--timeout",
                           str(duration + 120))
            load = subprocess.Popen([sys.executable, str(SCRIPT), "_load", "--broker", broker.address, "--topic",
                                     settings.topic(topics.RAW), "--events", str(events_file), "--rate", str(rate),
                                     "--duration", str(duration)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, cwd=str(ROOT), start_new_session=True)
            wait_line(load, "READY", 30)
            t0 = time.monotonic()
            wait_line(reader, "FIRST", 60)  # the worker's group has formed and output flows
            warmup = time.monotonic() - t0
            time.sleep(3)  # let the first checkpoint pass
            assert load.stdin is not None
            load.stdin.write("go\n")
            load.stdin.flush()
            worker_cpu0, broker_cpu0 = cpu_seconds(worker.pid), cpu_seconds(broker.process.pid)
            load_report = json.loads(wait_line(load, "DONE", duration + 90)[5:])
            stop_file.touch()
            wait_line(reader, "DONE", 60)
            worker_cpu = cpu_seconds(worker.pid) - worker_cpu0
            broker_cpu = cpu_seconds(broker.process.pid) - broker_cpu0
        finally:
            for proc in (load, reader, worker):
                if proc is not None:
                    stop(proc)
    result = json.loads(out_file.read_text())
    lat = result["latency_ms"]
    half = len(lat) // 2
    return {"variant": variant, "rate": rate, "duration_s": duration, "sent": load_report["sent"],
            "received": len(lat), "warmup_s": warmup, "load": load_report, "no_header_outputs": result["no_header"],
            "p50_ms": pct(lat, 0.5), "p90_ms": pct(lat, 0.9), "p99_ms": pct(lat, 0.99), "p999_ms": pct(lat, 0.999),
            "max_ms": max(lat) if lat else float("nan"),
            "first_half_p99_ms": pct(lat[:half], 0.99), "second_half_p99_ms": pct(lat[half:], 0.99),
            "worker_cpu_share": worker_cpu / duration, "broker_cpu_share": broker_cpu / duration,
            "worker_cpu_us_per_event": worker_cpu / max(len(lat), 1) * 1e6,
            "cpu_baseline": "after output flows (probes) + 3 s, at the start of the measured load → reader done"}


# --- report -----------------------------------------------------------------------------------------------------------


def fmt(v: Any, spec: str = ".0f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def report(res: dict[str, Any]) -> str:
    lines = [f"firstmile hot-path benchmark — {res['started']} — {res['machine']}",
             f"events: {res['events']} ({', '.join(f'{k} {v}' for k, v in sorted(res['mix'].items()))}), "
             f"{PARTITIONS} partitions, fresh Tansu per variant; Quix linger {QUIX_LINGER_MS} ms, fetch wait "
             f"{QUIX_FETCH_WAIT_MS} ms, commit 1 s; load linger {LOAD_LINGER_MS} ms; load avg at start "
             f"{res['loadavg_start']}, at end {res.get('loadavg_end')}", ""]
    if res.get("compute"):
        lines.append("1. per-event compute in-process (decide_device + decide_profile, dict state), µs")
        lines.append(f"   {'pass':<34}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>9}{'max':>9}{'mean':>8}"
                     "   target p99 ≤ 1000")
        for c in res["compute"]:
            label = f"{c['variant']}{' unique UA' if c['unique_ua'] else ' (cold caches)'}"
            for part in ("total", "total_cpu", "decide_device", "decide_profile", "json_roundtrip"):
                s = c[part]
                name = f"{label}: {part}" if part == "total" else \
                    "  total, thread CPU time" if part == "total_cpu" else f"  {part}"
                lines.append(f"   {name:<34}{fmt(s['p50_us']):>8}{fmt(s['p90_us']):>8}{fmt(s['p99_us']):>8}"
                             f"{fmt(s['p999_us']):>9}{fmt(s['max_us']):>9}{fmt(s['mean_us']):>8}")
        lines.append("   process CPU per event over each pass (all of the above, immune to preemption): "
                     + ", ".join(f"{c['variant']}{' unique UA' if c['unique_ua'] else ''} {c['cpu_per_event_us']:.0f}"
                                 for c in res["compute"]) + " µs")
        outs = res["compute"][0]["outputs"]
        lines.append("   outputs (full): " + ", ".join(f"{k} {v}" for k, v in sorted(outs.items())))
        lines.append("")
    if res.get("ua"):
        u = res["ua"]
        lines.append(f"1b. crawler user-agent matcher ({u['patterns']} crawler-user-agents patterns in one Hyperscan "
                     f"database, compiled in {u['compile_s']:.2f} s), {u['lookups']} never-seen user agents "
                     f"({u['counts']['browser']} browsers, {u['counts']['bot']} bots), µs per lookup")
        lines.append(f"   {'lookup':<44}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>9}{'max':>9}{'mean':>8}")
        labels = {"match": "match(), first sight (LRU miss + scan)", "scan": "database scan alone (no cache)",
                  "cached": "match(), cached", "is_crawler": "crawleruseragents.is_crawler (re)"}
        for what in ("match", "scan", "cached", "is_crawler"):
            for kind in ("all", "browser", "bot"):
                st = u.get(f"{kind}_{what}")
                if not st:
                    continue
                name = f"{labels[what]}: {kind}" if kind == "all" else f"  {kind} ({st['n']})"
                lines.append(f"   {name:<44}{fmt(st['p50_us'], '.1f'):>8}{fmt(st['p90_us'], '.1f'):>8}"
                             f"{fmt(st['p99_us'], '.1f'):>8}{fmt(st['p999_us'], '.1f'):>9}{fmt(st['max_us'], '.1f'):>9}"
                             f"{fmt(st['mean_us'], '.1f'):>8}")
        ref, fast = u.get("all_is_crawler"), u["all_match"]
        if ref:
            lines.append(f"   is_crawler ÷ match (first sight): p50 {ref['p50_us'] / fast['p50_us']:.0f}×, p99 "
                         f"{ref['p99_us'] / fast['p99_us']:.0f}× (on the first {ref['n']} of the same strings)")
        lines.append(f"   flagged as crawler: bots {u['flagged']['bot']:.3f}, browsers {u['flagged']['browser']:.4f} "
                     "(variants included)")
        lines.append("")
    if res.get("throughput"):
        base = next((t for t in res["throughput"] if t["variant"] == "passthrough"), None)
        lines.append("2. throughput, preloaded, counted by consuming the outputs (events/s over first→last output)")
        lines.append(f"   {'variant':<13}{'done':>8}{'events/s':>10}{'× pass':>8}{'wall ev/s':>11}{'start s':>9}"
                     f"{'worker µs/ev':>14}{'broker µs/ev':>14}{'× pass CPU':>12}{'start CPU s':>13}")
        for t in res["throughput"]:
            ratio = t["events_per_s"] / base["events_per_s"] if base and base["events_per_s"] else None
            cpu_ratio = base["worker_cpu_us_per_event"] / t["worker_cpu_us_per_event"] if base else None
            lines.append(f"   {t['variant']:<13}{t['done']:>8}{fmt(t['events_per_s']):>10}{fmt(ratio, '.2f'):>8}"
                         f"{fmt(t['wall_events_per_s']):>11}{fmt(t['startup_s'], '.1f'):>9}"
                         f"{fmt(t['worker_cpu_us_per_event']):>14}{fmt(t['broker_cpu_us_per_event']):>14}"
                         f"{fmt(cpu_ratio, '.2f'):>12}{fmt(t.get('worker_startup_cpu_s'), '.2f'):>13}"
                         + ("" if t["complete"] else "  INCOMPLETE"))
        lines.append("   target: full ≥ 0.6× passthrough (events/s).  '× pass CPU' = passthrough worker CPU/event ÷ "
                     "this variant's (rate if the worker had a core to itself)")
        lines.append("   CPU per event counts from the worker's partition assignment (before its first event) to the "
                     "last output, every variant alike; 'start CPU s' (imports, warm-up, group join) is excluded")
        by_variant = {t["variant"]: t for t in res["throughput"]}
        skeleton, full = by_variant.get("skeleton"), by_variant.get("full")
        if skeleton and full and skeleton["events_per_s"]:
            lines.append(f"   relative to the repartitioned topology without logic (skeleton, STACK-FACTS' baseline): "
                         f"full {full['events_per_s'] / skeleton['events_per_s']:.2f}× events/s; the logic costs "
                         f"{full['worker_cpu_us_per_event'] - skeleton['worker_cpu_us_per_event']:.0f} µs of worker "
                         f"CPU per event, the topology {skeleton['worker_cpu_us_per_event']:.0f}")
        lines.append("")
    if res.get("latency"):
        lines.append(f"3. end-to-end latency, produce → first output, {fmt(res['rate'])} ev/s for "
                     f"{fmt(res['duration'])} s, load / worker / reader in separate processes, ms")
        lines.append(f"   {'variant':<13}{'recv/sent':>13}{'p50':>7}{'p90':>7}{'p99':>7}{'p99.9':>8}{'max':>7}"
                     f"{'p99 1st½':>10}{'p99 2nd½':>10}{'worker CPU':>12}{'broker CPU':>12}")
        for lat in res["latency"]:
            lines.append(f"   {lat['variant']:<13}{lat['received']:>6}/{lat['sent']:<6}{fmt(lat['p50_ms']):>7}"
                         f"{fmt(lat['p90_ms']):>7}{fmt(lat['p99_ms']):>7}{fmt(lat['p999_ms']):>8}{fmt(lat['max_ms']):>7}"
                         f"{fmt(lat['first_half_p99_ms']):>10}{fmt(lat['second_half_p99_ms']):>10}"
                         f"{fmt(lat['worker_cpu_share'] * 100):>11}%{fmt(lat['broker_cpu_share'] * 100):>11}%")
        by = {lat["variant"]: lat for lat in res["latency"]}
        if "skeleton" in by and "full" in by:
            a, b = by["skeleton"], by["full"]
            lines.append(f"   the logic adds to the skeleton: p50 {fmt(b['p50_ms'] - a['p50_ms'], '+.0f')} ms, p99 "
                         f"{fmt(b['p99_ms'] - a['p99_ms'], '+.0f')} ms")
        if "passthrough" in by and "full" in by:
            a, b = by["passthrough"], by["full"]
            lines.append(f"   pipeline adds: p50 {fmt(b['p50_ms'] - a['p50_ms'], '+.0f')} ms, p99 "
                         f"{fmt(b['p99_ms'] - a['p99_ms'], '+.0f')} ms over the bare hop (target e2e p99 ≤ 10 ms: the "
                         "broker's fetch wait alone exceeds it on Tansu)")
        lines.append("")
    return "\n".join(lines)


def main_bench(args: argparse.Namespace) -> None:
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    if os.getloadavg()[0] > 1.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f} before the run: other processes share the "
              f"{os.cpu_count()} cores; compare ratios and CPU/event of this run, not absolute rates", flush=True)
    res: dict[str, Any] = {"started": started, "loadavg_start": round(os.getloadavg()[0], 1),
                           "machine": f"{platform.node()} {os.cpu_count()} cores Python {platform.python_version()}",
                           "rate": args.rate, "duration": args.duration}
    t = time.monotonic()
    records, mix = make_events(args.events)
    res["events"], res["mix"] = len(records), mix
    print(f"[{time.monotonic() - t:5.1f}s] {len(records)} events generated: {mix}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-hotpath-") as tmp_name:
        tmp = Path(tmp_name)
        events_file = tmp / "events.pkl"
        with open(events_file, "wb") as fh:
            pickle.dump(records, fh)
        if "compute" in args.parts:
            res["compute"] = [time_compute(records, "full"), time_compute(records, "nomodel"),
                              time_compute(records[:UNIQUE_UA_EVENTS], "full", unique_ua=True)]
            print(f"[{time.monotonic() - t:5.1f}s] compute done", flush=True)
        if "ua" in args.parts:
            res["ua"] = time_ua_matcher(args.ua_lookups, args.ua_reference)
            ua = res["ua"]["all_match"]
            print(f"[{time.monotonic() - t:5.1f}s] crawler matcher, never-seen user agents: p50 {ua['p50_us']:.1f} / "
                  f"p99 {ua['p99_us']:.1f} µs", flush=True)
        if "throughput" in args.parts:
            res["throughput"] = []
            for variant in VARIANTS:
                res["throughput"].append(run_throughput(variant, records, tmp, args.timeout))
                tp = res["throughput"][-1]
                print(f"[{time.monotonic() - t:5.1f}s] throughput {variant}: {tp['events_per_s']:.0f} ev/s "
                      f"({tp['done']}/{tp['events']})", flush=True)
        if "latency" in args.parts:
            res["latency"] = []
            for variant in ("passthrough", "skeleton", "full"):
                res["latency"].append(run_latency(variant, events_file, tmp, args.rate, args.duration))
                lat = res["latency"][-1]
                print(f"[{time.monotonic() - t:5.1f}s] latency {variant}: p50 {lat['p50_ms']:.0f} / p99 "
                      f"{lat['p99_ms']:.0f} ms ({lat['received']}/{lat['sent']})", flush=True)
    res["loadavg_end"] = round(os.getloadavg()[0], 1)
    res["total_s"] = time.monotonic() - t
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
    if sub == "_worker":
        parser.add_argument("role")
        parser.add_argument("--variant", choices=VARIANTS, required=True)
        parser.add_argument("--broker", required=True)
        parser.add_argument("--tmp", required=True)
        role_worker(parser.parse_args())
        return
    if sub == "_load":
        parser.add_argument("role")
        for name in ("--broker", "--topic", "--events"):
            parser.add_argument(name, required=True)
        parser.add_argument("--rate", type=float, required=True)
        parser.add_argument("--duration", type=float, required=True)
        role_load(parser.parse_args())
        return
    if sub == "_reader":
        parser.add_argument("role")
        for name in ("--broker", "--topics", "--out", "--stop-file"):
            parser.add_argument(name, required=True)
        parser.add_argument("--expect", type=int, default=0)
        parser.add_argument("--timeout", type=float, default=300)
        role_reader(parser.parse_args())
        return
    parser.add_argument("--events", type=int, default=50_000, help="events for compute and throughput")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s of the latency load")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of measured latency load")
    parser.add_argument("--timeout", type=float, default=180.0, help="max seconds per throughput variant")
    parser.add_argument("--parts", default="compute,ua,throughput,latency",
                        help="comma-separated subset of compute,ua,throughput,latency")
    parser.add_argument("--ua-lookups", type=int, default=20_000,
                        help="never-seen user agents for the crawler-matcher part (ua)")
    parser.add_argument("--ua-reference", type=int, default=1000,
                        help="of those, how many also go through crawleruseragents.is_crawler (Python re)")
    parser.add_argument("--json", default=str(ROOT / "data" / "benchmarks" / "hotpath.json"))
    args = parser.parse_args()
    args.parts = set(args.parts.split(","))
    main_bench(args)


if __name__ == "__main__":
    main()
