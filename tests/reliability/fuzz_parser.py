"""Scenario 11's fuzz harness: a bounded atheris (libFuzzer, coverage-guided) run on the event parsers.

    .venv/bin/python tests/reliability/fuzz_parser.py --corpus DIR --crashes DIR -- -runs=20000 -seed=1

Every input goes through

* ``streaming.contract.parse_raw``: the worker's parser of every record on ``events.raw``; only ``InvalidEvent``
  may leave it;
* the collector's body path: ``decode_body`` (gzip when the input starts with the gzip magic), then
  ``Collector._validate`` for the endpoint the body implies (``/v1/batch`` when it has a ``batch``, else the single
  call its ``type`` names): ``from_segment`` and ``parse_raw`` on every event; only a ``Reject`` with a 4xx status
  may leave it (a 5xx or anything else would be a 5xx or a dropped connection over HTTP);
* ``streaming.contract.from_segment`` on the decoded object (the simulator and the tests call it directly): only
  ``InvalidEvent`` may leave it.

Anything else is a crash. The harness catches it, writes the input and the traceback to ``--crashes`` (one pair of
files per distinct signature: exception type and innermost frame) and goes on, so one bounded run counts every
distinct crash instead of stopping at the first. ``--crashes``/``stats.json`` holds the running counts. A hang
(libFuzzer ``-timeout``) or an out-of-memory still ends the run with a non-zero exit code.

The seed corpus (``--corpus`` is filled when it is empty) is the simulator's wire events of every type, their
internal form as the collector puts them on ``events.raw``, batches, gzipped bodies and one event over 32 KB; a
libFuzzer dictionary of the contract's field names and JSON tokens is written next to it, so mutations go deep.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import json
import random
import sys
import traceback
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import atheris
import orjson

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["streaming.contract", "streaming.collector"]):
    from streaming.collector.app import (
        MAX_BATCH_BYTES,
        MAX_SINGLE_BYTES,
        SINGLE_ROUTES,
        Collector,
        Reject,
        decode_body,
    )
    from streaming.collector.config import CollectorSettings
    from streaming.contract import InvalidEvent, from_segment, parse_raw

RECEIVED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KINDS = frozenset(SINGLE_ROUTES.values())
#: the statuses the body path may answer (auth, rate limit and the broker come after it)
CLIENT_ERRORS = frozenset({400, 413, 415})

#: libFuzzer dictionary: field names and enum values (as JSON strings), literals and timestamps at the edges
DICTIONARY_STRINGS = [
    "messageId", "anonymousId", "userId", "timestamp", "originalTimestamp", "sentAt", "context", "properties",
    "traits", "consent", "purposes", "tcString", "tcf", "previousId", "groupId", "writeKey", "batch", "type",
    "event", "name", "page", "userAgent", "ip", "locale", "timezone", "integrations", "url", "path",
    "schema_version", "event_id", "anonymous_id", "user_id", "received_at", "sent_at", "original_timestamp",
    "clock_skew_ms", "source_id", "previous_id", "user_agent",
    "track", "screen", "identify", "alias", "group",
    "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2026-11-23T12:00:00.000Z", "",
]
DICTIONARY_RAW = ["true", "false", "null", "{}", "[]", ":", ",", "\\u0000", "\\ud800", "1e999", "-0",
                  "18446744073709551616", "-9223372036854775809", "1.7976931348623157e308", "Z", "+00:00", "-23:59"]


#: values a structure-aware mutation puts anywhere in an event: edge numbers, strings and timestamps, every event
#: type, wrong containers, deep and long values
INTERESTING: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1.5, -0.0, 1e308, -1e-308,
    float("inf"), float("nan"), "", " ", "\x00", "\ud800", "\udfff\ud800", "\u202e", "é" * 40, "x" * 300, "1",
    "true", "null", "2026-11-23T12:00:00Z", "2026-11-23T12:00:00.123456+05:30", "2026-11-23", "12:00:00",
    "0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59Z",
    "2026-02-30T00:00:00Z", "2026-11-23T12:00:00+24:00", "2026-11-23T25:00:00Z", "+002026-11-23T12:00:00Z",
    "track", "page", "screen", "identify", "alias", "consent", "group", "shout", [], {}, [1, "a", None], {"": ""},
    {"analytics": True, "marketing": False}, {"purposes": {"a": True}}, {"tcString": "CQAAAAAQ"}, [[[[[[[[[[]]]]]]]]]],
    {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}, list(range(500)),
]


def _interesting(rng: random.Random) -> Any:
    value = rng.choice(INTERESTING)
    if isinstance(value, str) and rng.random() < 0.2:
        return rng.choice(DICTIONARY_STRINGS)
    return copy.deepcopy(value)


def _containers(node: Any, out: list[Any], depth: int = 0) -> list[Any]:
    if isinstance(node, dict | list) and depth < 12:
        out.append(node)
        for child in (node.values() if isinstance(node, dict) else node):
            _containers(child, out, depth + 1)
    return out


def mutate_json(doc: Any, rng: random.Random) -> Any:
    """One structural mutation of a decoded JSON document: set, add, delete or rename a field, copy a subtree
    elsewhere, wrap the document in a batch or unwrap one."""
    op = rng.random()
    if op < 0.05:
        return {"batch": [doc], "sentAt": _interesting(rng)} if rng.random() < 0.5 else \
            ((doc.get("batch") or [doc])[0] if isinstance(doc, dict) and isinstance(doc.get("batch"), list) else doc)
    nodes = _containers(doc, [])
    if not nodes:
        return _interesting(rng)
    node = rng.choice(nodes)
    if isinstance(node, list):
        if node and rng.random() < 0.7:
            node[rng.randrange(len(node))] = _interesting(rng) if rng.random() < 0.8 else copy.deepcopy(
                rng.choice(nodes))
        elif node and rng.random() < 0.5:
            del node[rng.randrange(len(node))]
        else:
            node.append(_interesting(rng))
        return doc
    keys = list(node)
    if keys and op < 0.55:
        node[rng.choice(keys)] = _interesting(rng) if rng.random() < 0.85 else copy.deepcopy(rng.choice(nodes))
    elif keys and op < 0.7:
        del node[rng.choice(keys)]
    elif keys and op < 0.8:
        key = rng.choice(keys)
        node[rng.choice(DICTIONARY_STRINGS)] = node.pop(key)
    else:
        node[rng.choice(DICTIONARY_STRINGS)] = _interesting(rng)
    return doc


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Structure-aware most of the time (decode, mutate 1-3 times, re-encode, sometimes gzipped), libFuzzer's byte
    mutations otherwise and whenever the input is not JSON."""
    rng = random.Random(seed)
    if rng.random() < 0.7:
        try:
            raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            doc = json.loads(raw)
        except (ValueError, OSError, EOFError, RecursionError, zlib.error):
            doc = None
        if doc is not None:
            for _ in range(rng.randint(1, 3)):
                doc = mutate_json(doc, rng)
            try:
                out = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
            except (ValueError, RecursionError):
                out = b""
            if out:
                if rng.random() < 0.05:
                    out = gzip.compress(out)
                return out[:max_size]
    return atheris.Mutate(data, max_size)


class Crashes:
    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.signatures: dict[str, int] = {}
        self.inputs = 0

    def record(self, target: str, data: bytes, exc: BaseException) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = frames[-1] if frames else None
        sig = f"{target}:{type(exc).__name__}@{Path(where.filename).name}:{where.lineno}" if where else \
            f"{target}:{type(exc).__name__}"
        self.inputs += 1
        first = sig not in self.signatures
        self.signatures[sig] = self.signatures.get(sig, 0) + 1
        if first:
            name = f"crash-{len(self.signatures)}"
            (self.out / f"{name}.bin").write_bytes(data)
            (self.out / f"{name}.txt").write_text(f"{sig}\n\n{''.join(traceback.format_exception(exc))}")
            print(f"\nCRASH {sig}: {exc!r}"[:500], file=sys.stderr, flush=True)
        (self.out / "stats.json").write_text(json.dumps({"crash_inputs": self.inputs,
                                                         "signatures": self.signatures}))


def make_target(crashes: Crashes) -> Any:
    collector = Collector(CollectorSettings(write_keys="fuzz:fuzz-src", kafka_broker_address="fuzz:9092",
                                            _env_file=None))  # type: ignore[call-arg]

    def collector_path(data: bytes) -> Any:
        encoding = b"gzip" if data[:2] == b"\x1f\x8b" else None
        doc = decode_body(data, encoding, MAX_BATCH_BYTES)
        if "batch" in doc:
            events = doc["batch"]
            if not isinstance(events, list) or not events:
                return doc  # the collector answers 400 here
            collector._validate(copy.deepcopy(events), doc, None, "fuzz-src", RECEIVED_AT)
        elif len(data) <= MAX_SINGLE_BYTES:
            kind = doc["type"] if isinstance(doc.get("type"), str) and doc["type"] in KINDS else "track"
            collector._validate([copy.deepcopy(doc)], doc, kind, "fuzz-src", RECEIVED_AT)
        return doc

    def test_one_input(data: bytes) -> None:
        try:
            parse_raw(data)
        except InvalidEvent:
            pass
        except Exception as exc:  # noqa: BLE001 - the point: anything else is a crash
            crashes.record("parse_raw", data, exc)
        doc = None
        try:
            doc = collector_path(data)
        except Reject as rej:
            if rej.status not in CLIENT_ERRORS:
                crashes.record(f"collector[{rej.status}]", data, rej)
        except Exception as exc:  # noqa: BLE001
            crashes.record("collector", data, exc)
        if isinstance(doc, dict):
            for payload in (doc["batch"] if isinstance(doc.get("batch"), list) else [doc])[:50]:
                try:
                    from_segment(copy.deepcopy(payload), source_id="fuzz-src", received_at=RECEIVED_AT,
                                 batch_sent_at=doc.get("sentAt"), kind="track")
                except InvalidEvent:
                    pass
                except Exception as exc:  # noqa: BLE001
                    crashes.record("from_segment", data, exc)

    return test_one_input


def write_corpus(corpus: Path, *, users: int = 12) -> int:
    """Seeds: the simulator's wire events (every type it emits, plus alias/screen/group/tcf ones), their internal
    form, batches, gzipped bodies, one event over 32 KB. Returns the count."""
    from streaming import simulator

    corpus.mkdir(parents=True, exist_ok=True)
    events = list(simulator.generate(simulator.load_scenario("default", users=users), day=0))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        by_type.setdefault(ev.payload.get("type", "?"), []).append(ev.payload)
    wire: list[dict[str, Any]] = [p for items in by_type.values() for p in items[:25]]
    wire += [
        {"type": "alias", "messageId": "seed-alias", "userId": "u-1", "previousId": "anon-1"},
        {"type": "screen", "messageId": "seed-screen", "userId": 42, "name": "Cart"},
        {"type": "group", "messageId": "seed-group", "userId": "u-1", "groupId": "g-1", "traits": {"n": 1}},
        {"type": "consent", "messageId": "seed-tcf", "anonymousId": "a-1",
         "context": {"consent": {"tcString": "CQAAAAAQAAAAAAAAAAENBPCAAAAAAAAAAAAAAAAAAAAA"}}},
        {"type": "consent", "messageId": "seed-consent", "userId": "u-1",
         "consent": {"analytics": True, "marketing": False}},
        {"type": "track", "messageId": "seed-skew", "anonymousId": "a-2", "event": "E",
         "timestamp": "2026-11-23T11:00:00+05:00", "sentAt": "2026-11-23T12:05:00Z", "writeKey": "fuzz",
         "properties": {"n": [1, 2.5, None, {"k": [True]}]}},
        # the first run's two crashes, kept as regression seeds (from_segment raised TypeError / OverflowError)
        {"type": {"type": "track"}, "messageId": "seed-type-object", "anonymousId": "a-3", "event": "E"},
        {"type": "track", "messageId": "seed-edge-sent", "anonymousId": "a-4", "event": "E",
         "sentAt": "9999-12-31T23:59:59-14:00"},
        {"type": "track", "messageId": "seed-edge-time", "anonymousId": "a-4", "event": "E",
         "timestamp": "0001-01-01T00:00:00+05:00"},
    ]
    seeds: list[bytes] = []
    for payload in wire:
        seeds.append(orjson.dumps(payload))
        # a seed that breaks the contract stays a wire seed only: the fuzz run judges it
        with contextlib.suppress(Exception):
            seeds.append(orjson.dumps(from_segment(payload, source_id="fuzz-src", received_at=RECEIVED_AT)))
    for i in range(0, min(len(wire), 60), 6):
        seeds.append(orjson.dumps({"batch": wire[i:i + 6], "sentAt": "2026-11-23T12:00:01Z",
                                   "context": {"locale": "de-DE"}}))
    seeds.append(gzip.compress(seeds[0]))
    seeds.append(gzip.compress(seeds[-2]))
    seeds.append(orjson.dumps({**wire[0], "properties": {"blob": "x" * 33_000}}))
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i:04d}").write_bytes(seed)
    return len(seeds)


def write_dictionary(path: Path) -> None:
    lines = [json.dumps(json.dumps(token)) for token in DICTIONARY_STRINGS]
    lines += [json.dumps(token) for token in DICTIONARY_RAW]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="corpus directory (seeded when empty)")
    parser.add_argument("--crashes", type=Path, required=True, help="where crashing inputs and stats go")
    parser.add_argument("libfuzzer", nargs="*", help="libFuzzer options after --, e.g. -runs=20000 -seed=1")
    args = parser.parse_args()
    if not args.corpus.exists() or not any(args.corpus.iterdir()):
        write_corpus(args.corpus)
    dictionary = args.crashes / "parser.dict"
    args.crashes.mkdir(parents=True, exist_ok=True)
    write_dictionary(dictionary)
    crashes = Crashes(args.crashes)
    (args.crashes / "stats.json").write_text(json.dumps({"crash_inputs": 0, "signatures": {}}))
    argv = [sys.argv[0], f"-dict={dictionary}", f"-artifact_prefix={args.crashes}/", *args.libfuzzer,
            str(args.corpus)]
    atheris.Setup(argv, make_target(crashes), custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
