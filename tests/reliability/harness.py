"""Shared machinery of the reliability suite: sizes, figures, a real platform (embedded Tansu broker, worker and
lake sink subprocesses), producing and consuming by assign(), the landing zone in DuckDB, dbt, and the
pure-function oracle (streaming.pipeline with DictState) that every stateful result is compared against.

Sizes come from ``FIRSTMILE_RELIABILITY_*`` env vars with small CI defaults (``tests/reliability/run_all.py`` sets
the full sizes). Every scenario reports its figures through :func:`figure`: printed (run pytest with ``-s``) and,
when ``FIRSTMILE_RELIABILITY_FIGURES`` names a file, appended to it as one JSON line (run_all.py tabulates them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics
from streaming.control import publish_policy
from streaming.pipeline import DictState, Origin, decide_device, decide_profile
from streaming.policy import bootstrap_policy, compile_policy
from streaming.recovery import end_by_consuming
from streaming.settings import StreamingSettings
from warehouse.lake import STREAMS, stream_glob

REPO = Path(__file__).resolve().parents[2]
SERVING_TOPICS = (topics.PROFILES, topics.PROFILE_DEVICES)
SECRET = "reliability-secret-0123"
OUTPUT_TOPICS = (*topics.DESTINATIONS, topics.QUARANTINE, topics.DLQ, topics.SUPPRESSED)
DECIDED_STREAMS = ("events", "quarantine", "suppressed")


# --- sizes and figures -------------------------------------------------------------------------------------------

#: Every size resolved in this process, {NAME: value} (the env's or the CI default): figure() stamps them on its
#: JSON line so that run_all.py can record the size each figure was measured at.
SIZES: dict[str, int] = {}


def size(name: str, ci: int) -> int:
    """``FIRSTMILE_RELIABILITY_<NAME>`` or the CI default."""
    value = int(os.environ.get(f"FIRSTMILE_RELIABILITY_{name.upper()}", ci))
    SIZES[name.upper()] = value
    return value


def figure(scenario: str, summary: str, **values: Any) -> None:
    """Print a scenario's figure and append it to ``$FIRSTMILE_RELIABILITY_FIGURES`` (JSON lines) if set, with the
    sizes resolved so far under ``_sizes``."""
    print(f"\n[{scenario}] {summary} | " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)
    path = os.environ.get("FIRSTMILE_RELIABILITY_FIGURES")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"scenario": scenario, "summary": summary, **values, "_sizes": dict(SIZES)},
                                default=str) + "\n")


# --- the platform --------------------------------------------------------------------------------------------------

@dataclass
class Platform:
    """One embedded broker, the platform's topics, policy v1, and the processes started on it."""

    data_dir: Path
    partitions: int = 3
    broker: EmbeddedBroker | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    settings: StreamingSettings | None = None

    def start(self) -> Platform:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self.broker = EmbeddedBroker.start(log_path=self.data_dir / "logs" / "broker.log")
        self.settings = StreamingSettings(data_dir=self.data_dir, partitions=self.partitions,
                                          pii_secret=SECRET)  # type: ignore[call-arg]
        self.settings.layout.ensure()
        create_topics(self.address, self.settings)
        publish_policy(self.address, topics.CONTROL_POLICY, bootstrap_policy())
        return self

    @property
    def address(self) -> str:
        assert self.broker is not None
        return self.broker.address

    @property
    def lake(self) -> Path:
        return self.data_dir / "lake"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTMILE_")}
        env.update(KAFKA_BROKER_ADDRESS=self.address, FIRSTMILE_DATA_DIR=str(self.data_dir),
                   FIRSTMILE_PARTITIONS=str(self.partitions), FIRSTMILE_PII_SECRET=SECRET,
                   PYTHONPATH=str(REPO))
        return env

    def spawn(self, name: str, module: str = "", *, data_dir: Path | None = None,
              env: dict[str, str] | None = None, observed: bool = False) -> subprocess.Popen[bytes]:
        """Start ``python -m module`` (default: the worker; FIRSTMILE_RELIABILITY_WORKER overrides its module).
        ``data_dir``: the process's own data directory (a second worker on this machine needs its own state);
        ``env``: extra settings for this process (``FIRSTMILE_COMMIT_INTERVAL``, ...); ``observed``: run the
        module under :data:`OBSERVED` (its log then names the partitions it is given and the offsets it commits,
        read back by :func:`observations`)."""
        module = module or os.environ.get("FIRSTMILE_RELIABILITY_WORKER", "streaming.worker")
        log = (self.data_dir / "logs" / f"{name}.log").open("ab")
        env = {**self.env(), **(env or {})}
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            env["FIRSTMILE_DATA_DIR"] = str(data_dir)
        argv = ["-c", OBSERVED, module] if observed else ["-m", module]
        proc = subprocess.Popen([sys.executable, *argv], env=env, cwd=self.data_dir, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, name: str, timeout: float = 20) -> int | None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        return proc.returncode

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def log(self, name: str) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):  # teardown must go on
                self.stop(name, timeout=10)
        if self.broker is not None:
            self.broker.stop()


#: ``python -c OBSERVED <module>``: runs ``python -m <module>`` unchanged, but logs (lines ``OBSERVED <what> ...``)
#: each partition assignment and revocation Quix's Application receives and, once each checkpoint has committed,
#: the offsets it processed per partition. The worker stamps nothing that names the process that decided an event
#: and Quix logs its rebalances without partitions (and at DEBUG), so this is how a test sees which worker held
#: which partition and decided what. It wraps Quix's callbacks and changes nothing they do.
OBSERVED = r"""
import logging, runpy, sys
from quixstreams.app import Application
from quixstreams.checkpointing.checkpoint import Checkpoint

log = logging.getLogger("reliability.observed")
handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("%(asctime)s OBSERVED %(message)s"))
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False


def observe(name, what):
    original = getattr(Application, name)

    def observed(self, consumer, parts):
        if parts:
            log.info("%s %s", what, " ".join(f"{tp.topic}[{tp.partition}]" for tp in parts))
        return original(self, consumer, parts)

    setattr(Application, name, observed)


for name, what in (("_on_assign", "assigned"), ("_on_revoke", "revoked"), ("_on_lost", "lost")):
    observe(name, what)
commit = Checkpoint.commit


def observed_commit(self, *args, **kwargs):
    spans = {tp: (self._starting_tp_offsets.get(tp, last), last) for tp, last in self._tp_offsets.items()}
    result = commit(self, *args, **kwargs)
    if spans:
        log.info("committed %s", " ".join(f"{t}[{p}]@{a}-{b}" for (t, p), (a, b) in sorted(spans.items())))
    return result


Checkpoint.commit = observed_commit
module = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""

_OBSERVED_LINE = re.compile(r" OBSERVED (assigned|revoked|lost|committed) (.+)$", re.MULTILINE)
_PART = re.compile(r"^(.+)\[(\d+)\](?:@(\d+)-(\d+))?$")


@dataclass
class Observations:
    """What a process spawned with ``observed=True`` logged: the partitions it holds now (``assigned``: input and
    changelog partitions) and the offsets it processed and committed per partition (``processed``: the committed
    spans, first to last processed offset, summed)."""

    assigned: set[tuple[str, int]] = field(default_factory=set)
    processed: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def decided(self, topic: str) -> int:
        """Offsets of ``topic`` this process processed and committed (each one an event it decided)."""
        return sum(n for (t, _p), n in self.processed.items() if t == topic)


def observations(log: str) -> Observations:
    """Replay the OBSERVED lines of a log (:data:`OBSERVED`) into :class:`Observations`."""
    seen = Observations()
    for what, rest in _OBSERVED_LINE.findall(log):
        for item in rest.split():
            match = _PART.match(item)
            if match is None:
                continue
            tp = (match[1], int(match[2]))
            if what == "committed" and match[3] is not None:
                seen.processed[tp] += int(match[4]) - int(match[3]) + 1
            elif what == "assigned":
                seen.assigned.add(tp)
            elif what in ("revoked", "lost"):
                seen.assigned.discard(tp)
    return seen


# --- producing and consuming -------------------------------------------------------------------------------------

def produce(address: str, items: Iterable[tuple[bytes | None, bytes | None]], *, topic: str = topics.RAW,
            rate: float | None = None, linger_ms: int = 20,
            pace_until: threading.Event | None = None) -> list[tuple[int, int]]:
    """Produce (key, value) in order (idempotent producer); return each record's (partition, offset). ``rate``
    (records/s) applies until ``pace_until`` is set, if given: then the rest goes at once."""
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "acks": "all",
                         "linger.ms": linger_ms, "message.max.bytes": 4_000_000})
    items = list(items)
    where: list[tuple[int, int] | None] = [None] * len(items)
    errors: list[str] = []

    def report(i: int) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                where[i] = (msg.partition(), msg.offset())
        return on_delivery

    start = time.monotonic()
    for i, (key, value) in enumerate(items):
        while rate and not (pace_until is not None and pace_until.is_set()):
            ahead = start + i / rate - time.monotonic()
            if ahead <= 0:
                break
            time.sleep(min(ahead, 0.2))
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60)
    assert not remaining and not errors, (remaining, errors[:3])
    assert all(w is not None for w in where)
    return [w for w in where if w is not None]


def consume(address: str, names: Iterable[str], *, idle: float = 3.0, timeout: float = 120.0,
            raw: bool = False) -> list[tuple[str, int, int, bytes | None, Any]]:
    """Every record of the topics from the beginning, by assign() (no group), until ``idle`` seconds pass without
    a record after every partition reported EOF (Tansu's watermarks under-report: count by consuming).
    Returns (topic, partition, offset, key, value) with the value JSON-decoded unless ``raw``."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": f"reliability-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 50})
    meta = consumer.list_topics(timeout=10)
    names = [n for n in names if n in meta.topics]
    tps = [TopicPartition(t, p, OFFSET_BEGINNING) for t in names for p in meta.topics[t].partitions]
    out: list[tuple[str, int, int, bytes | None, Any]] = []
    if not tps:
        consumer.close()
        return out
    consumer.assign(tps)
    eof: set[tuple[str, int]] = set()
    last = time.monotonic()
    deadline = last + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            if len(eof) >= len(tps) and time.monotonic() - last > idle:
                break
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                eof.add((msg.topic(), msg.partition()))
            continue
        eof.discard((msg.topic(), msg.partition()))
        last = time.monotonic()
        value = msg.value()
        if not raw and value is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(value)
        out.append((msg.topic(), msg.partition(), msg.offset(), msg.key(), value))
    consumer.close()
    return out


def committed(address: str, group: str = "firstmile-worker", topic: str = topics.RAW) -> int:
    """Sum of the group's committed offsets on ``topic`` (progress of the workers; -1001 = none counts 0)."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        tps = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def assert_alive(platform: Platform | None, watch: Iterable[str], *, tail: int = 1500) -> None:
    """Fail at once, with the end of its log, when a watched process has died (the waits below poll through it)."""
    for name in watch:
        assert platform is not None and platform.alive(name), \
            f"{name} died:\n{platform.log(name)[-tail:] if platform else ''}"


def wait_for_progress(address: str, since: int, *, timeout: float = 60.0, group: str = "firstmile-worker",
                      platform: Platform | None = None, watch: Iterable[str] = ()) -> int:
    """Block until the group's committed offsets pass ``since`` (a (re)started worker is processing). Fails at once
    when a watched process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert_alive(platform, watch)
        now = committed(address, group)
        if now > since:
            return now
        time.sleep(0.2)
    raise AssertionError(f"group {group} made no progress past {since} within {timeout:.0f}s")


def uncommitted(address: str, where: Iterable[tuple[int, int]] = (), *, group: str = "firstmile-worker",
                topic: str = topics.RAW, then: Iterable[str] = ("repartition__",)) -> dict[str, int]:
    """Records ``group`` has not committed yet: on ``topic`` up to the inputs ``where``, and once none is left
    there, on every topic whose name starts with one of ``then`` (read to its true end, as Tansu's watermarks
    under-report). {"topic[p]": count}; empty = none. Defaults: the worker (events.raw, then its repartition)."""
    ends: dict[int, int] = {}
    for part, off in where:
        ends[part] = max(ends.get(part, 0), off + 1)
    prefixes = tuple(then)
    consumer = Consumer({"bootstrap.servers": address, "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(timeout=10)
        names = [topic] + sorted(t for t in meta.topics if t != topic and t.startswith(prefixes))
        tps = [TopicPartition(t, p) for t in names if t in meta.topics for p in meta.topics[t].partitions]
        done = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()
    left = {f"{topic}[{p}]": end - done.get((topic, p), 0) for p, end in ends.items()
            if end > done.get((topic, p), 0)}
    if not left:  # a later stage only catches up once the first has nothing left
        for (t, p), start in done.items():
            if t != topic and (end := end_by_consuming(address, t, p, start)) > start:
                left[f"{t}[{p}]"] = end - start
    return left


def wait_for_commits(address: str, where: Iterable[tuple[int, int]], *, timeout: float = 120.0,
                     platform: Platform | None = None, watch: Iterable[str] = (), lake: bool = False) -> float:
    """Block until the worker group has committed every input and everything its repartition topic holds (and,
    with ``lake``, the lake sink every output); returns the seconds waited. The state in the changelogs is final
    only then: a worker killed after it processed and delivered events but before its next checkpoint leaves them
    uncommitted (their outputs are already in the lake), and its successor re-processes them once the group gives
    it the partitions (at-least-once)."""
    where = list(where)
    start = time.monotonic()
    left: dict[str, int] = {}
    while time.monotonic() - start < timeout:
        left = uncommitted(address, where)
        if not left and lake:
            left = uncommitted(address, group="firstmile-lake", then=OUTPUT_TOPICS)
        if not left:
            return time.monotonic() - start
        assert_alive(platform, watch)
        time.sleep(0.5)
    raise AssertionError(f"records left uncommitted for {timeout:.0f}s: {left}")


def list_topics(address: str) -> list[str]:
    consumer = Consumer({"bootstrap.servers": address, "group.id": f"reliability-{uuid.uuid4().hex[:8]}"})
    try:
        return sorted(consumer.list_topics(timeout=10).topics)
    finally:
        consumer.close()


def changelog_state(address: str) -> dict[str, dict[str, Any]]:
    """The workers' state as their changelog topics hold it: {state key: {message key: last value}}.
    Quix changelog records are keyed ``<message key>|<json state key>`` with the JSON value."""
    names = [t for t in list_topics(address) if t.startswith("changelog__")]
    # A busy Tansu can answer a fetch with nothing for a while: read until two reads agree (count by consuming).
    records: list[tuple[str, int, int, bytes | None, Any]] = []
    for _ in range(5):
        again = consume(address, names, idle=2.0, raw=True)
        if again and len(again) == len(records):
            break
        records = max(records, again, key=len)
    state: dict[str, dict[str, Any]] = defaultdict(dict)
    for _t, _p, _o, key, value in records:
        if key is None or b'|"' not in key:
            continue
        msg_key, _, state_key = key.rpartition(b'|"')
        name = ('"' + state_key.decode()).strip('"')
        owner = msg_key.decode("utf-8", "replace")
        if len(owner) >= 2 and owner[0] == owner[-1] == '"':  # a str key the repartition serialized as JSON
            owner = orjson.loads(owner)
        state[name][owner] = None if value is None else orjson.loads(value)
    return unpack(state)


#: State entries that pack a key's whole state (streaming.pipeline.PackedState): unpacked to their parts.
PACKED = ("device", "profile")


def unpack(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{state name: {owner: value}} with packed entries ({"device": {owner: {"identity": ..}}}) spread out."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, owners in state.items():
        for owner, value in owners.items():
            if name in PACKED and isinstance(value, dict):
                for part, v in value.items():
                    out[part][owner] = v
            else:
                out[name][owner] = value
    return out


# --- the landing zone --------------------------------------------------------------------------------------------

def lake_con(lake: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per lake stream (empty streams: no view)."""
    con = duckdb.connect()
    for stream in STREAMS:
        if list((lake / stream).rglob("*.parquet")):
            con.execute(f"create view {stream} as select * from read_parquet('{stream_glob(lake, stream)}', "
                        f"hive_partitioning=true, union_by_name=true)")
    return con


def lake_streams(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()
            if r[0] in STREAMS]


def lake_inputs(lake: Path) -> set[tuple[int, int]]:
    """Distinct (raw_partition, raw_offset) over every lake stream."""
    con = lake_con(lake)
    try:
        streams = lake_streams(con)
        if not streams:
            return set()
        sql = " union ".join(f"select raw_partition, raw_offset from {s}" for s in streams)
        return {(int(p), int(o)) for p, o in con.execute(sql).fetchall()}
    finally:
        con.close()


def wait_for_lake(lake: Path, expected: set[tuple[int, int]], *, timeout: float = 180.0,
                  platform: Platform | None = None, watch: Iterable[str] = ()) -> float:
    """Wait until every expected input is in the lake; returns the seconds waited. Fails if a watched process
    died, or on timeout with the count missing."""
    start = time.monotonic()
    missing = expected
    while time.monotonic() - start < timeout:
        missing = expected - lake_inputs(lake)
        if not missing:
            return time.monotonic() - start
        assert_alive(platform, watch, tail=3000)
        time.sleep(1.0)
    raise AssertionError(f"{len(missing)} of {len(expected)} inputs never reached the lake "
                         f"(e.g. {sorted(missing)[:5]})")


#: The least dbt builds to have stg_decided: the model and its parents (the erasure seed and staging, the lake file
#: manifest, stg_lake_decided), without their data and unit tests (landing_duplicates counts instead).
STG_DECIDED_BUILD = ["build", "--select", "+stg_decided", "--exclude-resource-type", "test",
                     "--exclude-resource-type", "unit_test"]


def landing_duplicates(data_dir: Path) -> dict[str, int]:
    """Duplicates in the landing zone ``<data_dir>/lake`` and in what the warehouse keeps of it.

    Landing: rows per event_id > 1 across the decided streams (``duplicate_rows``, ``event_ids_duplicated``).
    Warehouse: runs the real dbt (:data:`STG_DECIDED_BUILD`) into ``<data_dir>/warehouse.duckdb`` and counts in
    stg_decided, per the warehouse's own key (the event id as sent and the device, B7):

    * ``duplicates_after_dedupe``: rows beyond the first per (sent_event_id, device_id);
    * ``event_id_duplicates_after_dedupe``: rows beyond the first per event_id (a reused id is rewritten to
      ``<event_id>@<device_id>``, so event_id must be unique too);
    * ``events_lost_by_dedupe``: (event_id, device_id) keys of the lake that stg_decided does not keep, and
      ``inputs_lost_by_dedupe``: the lake's inputs (raw partition, offset) among them;
    * ``events_not_in_lake``: keys stg_decided holds that no lake row has.

    Every one of them is 0 when each input the lake holds is represented in stg_decided exactly once. The lake
    must not be written to meanwhile (stop the lake sink first). Raises AssertionError when dbt fails.
    """
    lake = data_dir / "lake"
    con = lake_con(lake)
    try:
        streams = [s for s in lake_streams(con) if s in DECIDED_STREAMS]
        assert streams, f"no decided stream in {lake}"
        union = " union all by name ".join(f"select event_id, device_id, raw_partition, raw_offset from {s}"
                                           for s in streams)
        landing = con.execute(f"""
            select count(*), count(distinct event_id),
                   (select count(*) from (select event_id from ({union}) group by 1 having count(*) > 1))
            from ({union})""").fetchone()
        assert landing is not None
        failure = dbt_ok(run_dbt(STG_DECIDED_BUILD, data_dir))
        assert not failure, f"dbt could not build stg_decided:\n{failure}"
        con.execute(f"attach '{data_dir / 'warehouse.duckdb'}' as warehouse (read_only)")
        warehouse = con.execute(f"""
            with lake as (
                select event_id as sent_event_id, coalesce(device_id, '') as device, raw_partition, raw_offset
                from ({union})
            ),
            kept as (select sent_event_id, coalesce(device_id, '') as device, event_id from warehouse.stg_decided),
            kept_keys as (select sent_event_id, device, count(*) as n from kept group by all),
            lost as (
                select * from lake
                where not exists (select 1 from kept_keys k
                                  where k.sent_event_id = lake.sent_event_id and k.device = lake.device)
            )
            select
                (select count(*) from kept),
                (select coalesce(sum(n - 1), 0) from kept_keys),
                (select count(*) - count(distinct event_id) from kept),
                (select count(*) from (select distinct sent_event_id, device from lost)),
                (select count(*) from (select distinct raw_partition, raw_offset from lost)),
                (select count(*) from kept_keys k
                 where not exists (select 1 from lake
                                   where lake.sent_event_id = k.sent_event_id and lake.device = k.device))
            """).fetchone()
        assert warehouse is not None
    finally:
        con.close()
    rows, event_ids, duplicated = landing
    kept, after, id_after, lost, inputs_lost, unknown = (int(v) for v in warehouse)
    return {"rows": rows, "event_ids": event_ids, "duplicate_rows": rows - event_ids,
            "event_ids_duplicated": duplicated, "kept_rows": kept, "duplicates_after_dedupe": after,
            "event_id_duplicates_after_dedupe": id_after, "events_lost_by_dedupe": lost,
            "inputs_lost_by_dedupe": inputs_lost, "events_not_in_lake": unknown}


def dedupe_failures(dupes: dict[str, int]) -> dict[str, int]:
    """The counts of :func:`landing_duplicates` that must be 0 and are not."""
    must_be_zero = ("duplicates_after_dedupe", "event_id_duplicates_after_dedupe", "events_lost_by_dedupe",
                    "inputs_lost_by_dedupe", "events_not_in_lake")
    return {k: dupes[k] for k in must_be_zero if dupes[k]}


# --- dbt ---------------------------------------------------------------------------------------------------------

def run_dbt(command: list[str], data_dir: Path, *, vars_yaml: str | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real dbt CLI over ``<data_dir>/lake`` into ``<data_dir>/warehouse.duckdb``."""
    dbt = Path(sys.executable).with_name("dbt")
    env = dict(os.environ, FIRSTMILE_DUCKDB_PATH=str(data_dir / "warehouse.duckdb"),
               FIRSTMILE_LAKE_DIR=str(data_dir / "lake"), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    args = [str(dbt), *command, "--project-dir", "dbt_project", "--profiles-dir", "dbt_project",
            "--target-path", str(data_dir / "dbt_target"), "--log-path", str(data_dir / "dbt_logs")]
    if vars_yaml:
        args += ["--vars", vars_yaml]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def dbt_ok(result: subprocess.CompletedProcess[str]) -> str:
    """Failure text of a dbt run ('' when it passed)."""
    return "" if result.returncode == 0 else (result.stdout[-5000:] + result.stderr[-2000:])


# --- the oracle --------------------------------------------------------------------------------------------------

@dataclass
class Oracle:
    """The pure first-mile functions replayed over the inputs in production order (per-key order is what Kafka
    guarantees), each device and profile with a DictState: what an uninterrupted, single-process run decides."""

    devices: dict[str, DictState] = field(default_factory=lambda: defaultdict(DictState))
    profiles: dict[str, DictState] = field(default_factory=lambda: defaultdict(DictState))
    decisions: dict[tuple[int, int], list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)

    def replay(self, items: list[tuple[bytes | None, bytes | None]], where: list[tuple[int, int]],
               policy_doc: dict[str, Any] | None = None) -> Oracle:
        policy = compile_policy(policy_doc or bootstrap_policy())
        for (key, value), (part, off) in zip(items, where, strict=True):
            dkey = key.decode("utf-8", "replace") if key is not None else ""
            out = decide_device(value, self.devices[dkey], policy, secret=SECRET.encode(), origin=Origin(part, off),
                                key=key)
            assert out.value is not None  # stage 1 never writes a tombstone
            if out.topic != "profile":
                self.decisions[(part, off)] = [(out.topic, out.value)]
                continue
            outs = decide_profile(out.value, self.profiles[out.value["profile_id"]], policy)
            # the live profile views (serving) are not decisions about the event
            self.decisions[(part, off)] = [(o.topic, o.value) for o in outs
                                           if o.value is not None and o.topic not in SERVING_TOPICS]
        return self

    def state(self, name: str) -> dict[str, Any]:
        """{key: value} of one state name, over devices and profiles (as the changelog shows it)."""
        raw: dict[str, dict[str, Any]] = defaultdict(dict)
        for group in (self.devices, self.profiles):
            for key, st in group.items():
                for entry, value in st.data.items():
                    raw[entry][key] = value
        return unpack(raw).get(name, {})


def consent_view(consent: dict[str, Any] | None) -> dict[str, tuple[bool, int]]:
    """Per-purpose (granted, decided_at_ms) of a ConsentState dict (the source label is not a decision)."""
    purposes = (consent or {}).get("purposes") or {}
    return {p: (bool(v[0]), int(v[1])) for p, v in purposes.items()}


def state_diff(actual: dict[str, dict[str, Any]], oracle: Oracle, *, extra: tuple[str, ...] = ()) -> dict[str, int]:
    """Mismatches between the changelog state and the oracle: identity (device → user), device consent, profile
    consent and device sessions, plus the ``extra`` state names compared as they are."""
    diffs = {}
    views: list[tuple[str, Any]] = [("identity", lambda v: (v or {}).get("user_id")),
                                    ("device_consent", lambda v: v or {}), ("consent", consent_view),
                                    ("session", lambda v: v or {})]
    views += [(name, lambda v: v) for name in extra]
    for name, view in views:
        want = {k: view(v) for k, v in oracle.state(name).items()}
        got = {k: view(v) for k, v in actual.get(name, {}).items()}
        keys = set(want) | set(got)
        diffs[name] = sum(1 for k in keys if want.get(k, view(None)) != got.get(k, view(None)))
        diffs[f"{name}_keys"] = len(want)
    return diffs


def sim_items(events: Iterable[Any], *, source_id: str = "reliability") -> list[tuple[bytes, bytes]]:
    """Simulator events as the collector would put them on events.raw (received_at = simulated send time)."""
    from streaming.contract import from_segment

    items = []
    for ev in events:
        record = from_segment(ev.payload, source_id=source_id, received_at=ev.send_at)
        key = (record.get("anonymous_id") or record.get("user_id") or "").encode()
        items.append((key, orjson.dumps(record)))
    return items
