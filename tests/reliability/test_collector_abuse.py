"""Scenario 11, collector abuse: the HTTP collector (``python -m streaming.collector``, uvicorn on a free loopback
port) on a real embedded broker, attacked over real HTTP. Asserted:

* schemathesis against ``/openapi.json`` (positive and negative cases, with the write key, without one, with an
  unknown or malformed one): 5xx = 0, every documented check passes, and every unauthenticated call to an
  endpoint that takes events is a 401;
* unauthenticated = 401 always: no key, an unknown, empty or malformed one, a key in the password slot, a wrong or
  non-string ``writeKey`` in the body, each with bodies that are valid, oversized (declared and chunked), gzip
  bombs, of an unsupported encoding, malformed, empty or not an object, plus hypothesis-generated bodies and
  headers: nothing but 401, so an unauthenticated caller learns nothing about its body;
* over-limit: an event over 32 KB (on the wire, or only once stamped in the internal schema), a batch over 512 KB
  (declared, chunked, or as a gzip bomb), a batch event over 32 KB are 413; a burst over the key's token bucket is
  429 with ``Retry-After``; nothing 5xx;
* a legitimate key under an abusive key's flood (a separate process, 16 connections, most answered 429): only 2xx
  for the legitimate key; its p50/p99 latency with and without the flood is reported, never asserted;
* a bounded atheris (libFuzzer) run on the event parsers (``fuzz_parser.py``, a subprocess): crashes = 0.

Sizes: ``ABUSE_CASES`` schemathesis cases, ``ABUSE_SECONDS`` per phase of the flood, ``FUZZ_RUNS`` fuzz runs.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streaming.broker import EmbeddedBroker, create_topics, free_port
from streaming.settings import StreamingSettings
from tests.reliability.harness import REPO, figure, size

pytestmark = pytest.mark.integration

CASES = size("ABUSE_CASES", 500)
SECONDS = size("ABUSE_SECONDS", 4)
FUZZ_RUNS = size("FUZZ_RUNS", 30_000)

FUZZ_KEY, LEGIT_KEY, FLOOD_KEY, BURST_KEY = "abuse-fuzz", "abuse-legit", "abuse-flood", "abuse-burst"
#: the collector-wide limit (FIRSTMILE_RATE_LIMIT_PER_S) is what the flood hits; schemathesis' key is unlimited
#: (rate 0), the burst key has 5/s (a bucket of 5 with FIRSTMILE_RATE_LIMIT_BURST_S=1)
RATE_PER_S = 40
WRITE_KEYS = f"{FUZZ_KEY}:fuzz-src:0,{LEGIT_KEY}:legit-src,{FLOOD_KEY}:flood-src,{BURST_KEY}:burst-src:5"
REAL_KEYS = frozenset({FUZZ_KEY, LEGIT_KEY, FLOOD_KEY, BURST_KEY})
SINGLE = ("track", "page", "screen", "identify", "alias", "group", "consent")
EVENT_PATHS = tuple(f"/v1/{name}" for name in (*SINGLE, "batch", "import"))


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def event(kind: str = "track", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messageId": f"abuse-{uuid.uuid4().hex}", "anonymousId": "anon-abuse"}
    by_kind: dict[str, dict[str, Any]] = {"track": {"event": "Product Viewed", "properties": {"sku": "A-1"}},
                                          "consent": {"consent": {"analytics": True}},
                                          "alias": {"userId": "u-abuse", "previousId": "anon-abuse"},
                                          "group": {"groupId": "acme", "traits": {"name": "Acme"}}}
    body.update(by_kind.get(kind, {}))
    return {**body, **extra}


def body_for(path: str, **extra: Any) -> dict[str, Any]:
    """A valid body for an endpoint (a one-event batch for /v1/batch and /v1/import)."""
    kind = path.rsplit("/", 1)[1]
    if kind in ("batch", "import"):
        return {"batch": [{**event(), "type": "track"}], **extra}
    return event(kind, **extra)


# -- the real stack -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded broker with the platform's topics and the collector on it; yields the collector's base URL."""
    data = tmp_path_factory.mktemp("abuse")
    broker = EmbeddedBroker.start(log_path=data / "broker.log")
    proc: subprocess.Popen[bytes] | None = None
    try:
        create_topics(broker.address, StreamingSettings(data_dir=data))  # type: ignore[call-arg]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTMILE_")}
        env.update(KAFKA_BROKER_ADDRESS=broker.address, FIRSTMILE_DATA_DIR=str(data), PYTHONPATH=str(REPO),
                   FIRSTMILE_WRITE_KEYS=WRITE_KEYS, FIRSTMILE_COLLECTOR_PORT=str(port),
                   FIRSTMILE_RATE_LIMIT_PER_S=str(RATE_PER_S), FIRSTMILE_RATE_LIMIT_BURST_S="1")
        proc = subprocess.Popen([sys.executable, "-m", "streaming.collector"], env=env, cwd=data,
                                stdout=(data / "collector.log").open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                (data / "collector.log").read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        yield base
        assert proc.poll() is None, "the collector died:\n" + (data / "collector.log").read_text()[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        broker.stop()


@pytest.fixture
def client(stack: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack, timeout=30) as c:
        yield c


def status_classes(statuses: Counter[int]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for status, n in statuses.items():
        out[f"{status // 100}xx"] += n
    return {k: out[k] for k in ("2xx", "4xx", "5xx")} | {k: v for k, v in out.items() if k not in ("2xx", "4xx",
                                                                                                  "5xx")}


# -- 1. schemathesis -------------------------------------------------------------------------------------------------

def test_schemathesis_cases_get_no_5xx_and_unauthenticated_ones_get_401(stack: str) -> None:
    import requests
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Ok
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{stack}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), [r for r in results if not isinstance(r, Ok)]
    posts = [op for op in operations if op.method.upper() == "POST"]
    gets = [op for op in operations if op.method.upper() != "POST"]
    # the tracking API, and the regulations API (server keys only: the write key below gets its documented 401)
    assert {op.path for op in posts} == {*EVENT_PATHS, "/v1/regulations"}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance]
    auths: dict[str, dict[str, str] | None] = {
        "key": {"Authorization": basic(FUZZ_KEY)},
        "no_key": None,
        "unknown_key": {"Authorization": basic("not-a-key")},
        "malformed_key": {"Authorization": "Basic !!not-base64"},
    }
    statuses: Counter[int] = Counter()
    by_auth: dict[str, Counter[int]] = {name: Counter() for name in auths}
    by_mode: dict[str, Counter[int]] = {mode.value: Counter() for mode in GenerationMode}
    unauthenticated: Counter[int] = Counter()
    not_401: list[str] = []
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    session = requests.Session()
    calls = 0

    def run_one(case: Any, auth: str, mode: str) -> None:
        nonlocal calls
        headers = dict(case.headers or {})
        headers.pop("Authorization", None)
        headers.pop("authorization", None)
        case.headers = headers
        response = case.call(base_url=stack, session=session, headers=auths[auth], timeout=30)
        calls += 1
        statuses[response.status_code] += 1
        by_auth[auth][response.status_code] += 1
        by_mode[mode][response.status_code] += 1
        if auth != "key" and case.operation.method.upper() == "POST":
            unauthenticated[response.status_code] += 1
        if auth != "key" and case.operation.method.upper() == "POST" and response.status_code != 401:
            not_401.append(f"{auth} {case.operation.label} -> {response.status_code} {response.text[:120]}")
        if auth == "key" or case.operation.method.upper() != "POST":
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # noqa: BLE001 - schemathesis' failure group: counted, reported below
                name = type(exc).__name__ + ": " + str(exc).strip().splitlines()[0][:160]
                failures[name] += 1
                examples.setdefault(name, f"{case.operation.label} {str(case.body)[:300]}")

    per_get = 5
    budget = max(CASES - per_get * len(gets), 2 * len(posts))
    plan = [(op, GenerationMode.POSITIVE, per_get) for op in gets]
    for i, op in enumerate(posts):
        share = budget // len(posts) + (1 if i < budget % len(posts) else 0)
        plan += [(op, GenerationMode.POSITIVE, share - share // 3), (op, GenerationMode.NEGATIVE, share // 3)]
    # most cases carry the write key (hypothesis favours the first choices), the others are unauthenticated
    auth_choice = st.sampled_from(["key", "key", "key", "no_key", "unknown_key", "malformed_key"])
    started = time.monotonic()

    def runner(op: Any, mode: GenerationMode, n: int) -> Callable[[], None]:
        @settings(max_examples=n, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode), auth=auth_choice)
        def run(case: Any, auth: str) -> None:
            run_one(case, auth, mode.value)
        return run  # type: ignore[no-any-return]

    for op, mode, n in plan:
        if n > 0:
            runner(op, mode, n)()
    session.close()
    seconds = time.monotonic() - started
    classes = status_classes(statuses)
    figure("11 collector abuse: schemathesis", f"{calls} cases ({len(operations)} operations: "
           f"{', '.join(sorted(op.label for op in operations))}; positive and negative; "
           f"{sum(by_auth['key'].values())} with the key) in {seconds:.0f} s",
           **classes, statuses=dict(sorted(statuses.items())),
           by_auth={a: dict(sorted(c.items())) for a, c in by_auth.items()},
           negative=dict(sorted(by_mode["negative"].items())),
           unauthenticated_posts=dict(sorted(unauthenticated.items())), unauthenticated_not_401=len(not_401),
           check_failures=sum(failures.values()), cases_per_s=round(calls / seconds, 1))
    assert classes["5xx"] == 0, statuses
    assert not not_401, not_401[:10]
    assert not failures, {name: (n, examples[name]) for name, n in failures.items()}
    assert calls >= 0.8 * CASES


# -- 2. unauthenticated = 401 always ---------------------------------------------------------------------------------

#: every way to not be authenticated: (name, headers, the body's writeKey: absent when None)
UNAUTHENTICATED: list[tuple[str, dict[str, str], Any]] = [
    ("no key", {}, None),
    ("unknown key", {"Authorization": basic("not-a-key")}, None),
    ("empty key", {"Authorization": basic("")}, None),
    ("key as password", {"Authorization": basic("", LEGIT_KEY)}, None),
    ("key in another case", {"Authorization": basic(LEGIT_KEY.upper())}, None),
    ("key with a space", {"Authorization": basic(f" {LEGIT_KEY}")}, None),
    ("Basic, no token", {"Authorization": "Basic"}, None),
    ("Basic, not base64", {"Authorization": "Basic !!!***"}, None),
    ("Basic, not UTF-8", {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:").decode()}, None),
    ("Bearer with the key", {"Authorization": f"Bearer {LEGIT_KEY}"}, None),
    ("empty header", {"Authorization": ""}, None),
    ("a 64 KB header", {"Authorization": "Basic " + "QUFB" * 16384}, None),
    ("unknown header key, right body key", {"Authorization": basic("not-a-key")}, LEGIT_KEY),
    ("wrong body key", {}, "not-a-key"),
    ("empty body key", {}, ""),
    ("body key not a string", {}, 12345),
    ("body key an object", {}, {"key": LEGIT_KEY}),
]


def hostile_bodies(path: str, write_key: Any) -> list[tuple[str, bytes | Iterator[bytes], dict[str, str]]]:
    """(name, content, extra headers): valid, oversized (declared and chunked), gzip bomb, bad encodings,
    malformed, empty, not an object, too deep, not UTF-8: each with the body key when one is given."""
    key = {} if write_key is None else {"writeKey": write_key}
    limit = 512 * 1024 if path.endswith(("batch", "import")) else 32 * 1024
    valid = orjson.dumps(body_for(path, **key))
    big = orjson.dumps({**body_for(path, **key), "blob": "x" * (limit + 1000)})
    deep = b'{"writeKey": ' + orjson.dumps(write_key) + b', "a": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    return [
        ("valid", valid, {}),
        ("oversized", big, {}),
        ("oversized, chunked", iter([big[i:i + 16384] for i in range(0, len(big), 16384)]), {}),
        ("gzip bomb", gzip.compress(valid[:-1] + b', "pad": "' + b"0" * 3_000_000 + b'"}'),
         {"Content-Encoding": "gzip"}),
        ("gzip, valid", gzip.compress(valid), {"Content-Encoding": "gzip"}),
        ("not gzip", b"not gzip at all", {"Content-Encoding": "gzip"}),
        ("brotli", valid, {"Content-Encoding": "br"}),
        ("malformed JSON", valid[:-3] + b"{{", {}),
        ("empty", b"", {}),
        ("not an object", b"[" + valid + b"]", {}),
        ("too deep", deep, {}),
        ("not UTF-8", b"\xff\xfe" + valid, {}),
        ("text/plain", valid, {"Content-Type": "text/plain"}),
    ]


def test_unauthenticated_callers_get_401_whatever_the_body(client: httpx.Client) -> None:
    answers: Counter[int] = Counter()
    wrong: list[str] = []
    for path in EVENT_PATHS:
        for auth_name, headers, write_key in UNAUTHENTICATED:
            for body_name, content, extra in hostile_bodies(path, write_key):
                response = client.post(path, content=content, headers={**headers, **extra})
                answers[response.status_code] += 1
                if response.status_code != 401 or response.json().get("code") != "unauthorized":
                    wrong.append(f"{path} {auth_name} / {body_name}: {response.status_code} {response.text[:100]}")
    # the same bodies with the key are answered on their merits (so the matrix above did exercise 413/415/400)
    authed: Counter[int] = Counter()
    for _name, content, extra in hostile_bodies("/v1/track", None):
        authed[client.post("/v1/track", content=content,
                           headers={"Authorization": basic(FUZZ_KEY), **extra}).status_code] += 1
    figure("11 collector abuse: unauthenticated", f"{sum(answers.values())} requests: {len(EVENT_PATHS)} endpoints "
           f"x {len(UNAUTHENTICATED)} ways to be unauthenticated x {len(hostile_bodies('/v1/track', None))} bodies",
           statuses=dict(sorted(answers.items())), not_401=len(wrong),
           same_bodies_with_the_key=dict(sorted(authed.items())))
    assert not wrong, wrong[:10]
    assert {413, 415, 400, 200} <= set(authed)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {}, optional={"type": st.sampled_from(["track", "page", "identify", "consent", "shout"]) | json_values,
                  "messageId": st.text(max_size=30) | json_values, "anonymousId": st.text(max_size=30),
                  "userId": st.text(max_size=30) | st.integers(-(2**63), 2**64 - 1), "event": st.text(max_size=20),
                  "timestamp": st.datetimes().map(lambda d: d.isoformat()) | st.text(max_size=30),
                  "properties": json_values, "context": json_values, "batch": st.lists(json_values, max_size=4)})
not_a_key = st.text(max_size=40).filter(lambda k: k.strip() not in REAL_KEYS)
authorization = st.one_of(
    st.none(),
    not_a_key.map(lambda k: basic(k)),
    st.tuples(not_a_key, st.text(max_size=20)).map(lambda kp: basic(*kp)),
    st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)
body_key = st.one_of(st.just(None), not_a_key, json_values.filter(lambda v: not isinstance(v, str)))


@st.composite
def unauthenticated_requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes, bool]:
    path = draw(st.sampled_from(EVENT_PATHS))
    headers: dict[str, str] = {}
    auth = draw(authorization)
    if auth is not None:
        headers["Authorization"] = auth.strip()  # h11 refuses surrounding whitespace
    encoding = draw(st.sampled_from([None, None, "gzip", "identity", "br", "deflate"]))
    if encoding:
        headers["Content-Encoding"] = encoding
    kind = draw(st.sampled_from(["event", "json", "bytes"]))
    if kind == "bytes":
        content = draw(st.binary(max_size=300))
    else:
        doc: Any = draw(json_values)
        if kind == "event":
            doc = draw(event_like)
        key = draw(body_key)
        if isinstance(doc, dict) and key is not None:
            doc["writeKey"] = key
        content = orjson.dumps(doc)
    if encoding == "gzip" and draw(st.booleans()):
        content = gzip.compress(content)
    return path, headers, content, draw(st.integers(0, 9)) == 0  # last: pad the body over every limit


def test_generated_unauthenticated_requests_get_401(client: httpx.Client) -> None:
    answers: Counter[int] = Counter()
    wrong: list[str] = []

    @settings(max_examples=max(50, CASES // 2), deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(request=unauthenticated_requests())
    def run(request: tuple[str, dict[str, str], bytes, bool]) -> None:
        path, headers, content, pad = request
        if pad:
            content += b" " * (600 * 1024)
        response = client.post(path, content=content, headers=headers)
        answers[response.status_code] += 1
        if response.status_code != 401:
            wrong.append(f"{path} {headers} {content[:80]!r}: {response.status_code} {response.text[:100]}")

    run()
    figure("11 collector abuse: generated unauthenticated", f"{sum(answers.values())} hypothesis requests",
           statuses=dict(sorted(answers.items())), not_401=len(wrong))
    assert not wrong, wrong[:10]


# -- 3. over-limit ---------------------------------------------------------------------------------------------------

def test_over_limit_is_413_or_429_never_5xx(client: httpx.Client) -> None:
    auth = {"Authorization": basic(FUZZ_KEY)}
    answers: dict[str, tuple[int, str]] = {}

    def post(name: str, path: str, content: bytes | Iterator[bytes], **headers: str) -> httpx.Response:
        response = client.post(path, content=content, headers={**auth, **headers})
        answers[name] = (response.status_code, response.json().get("code", "") if response.content else "")
        return response

    for kind in SINGLE:
        post(f"{kind}: event over 32 KB", f"/v1/{kind}", orjson.dumps(event(kind, properties={"b": "x" * 33_000})))
    # under 32 KB on the wire, over it once the collector stamps it into the internal schema (was a 400 `too_large`)
    near = orjson.dumps(event("track", properties={"b": "x" * 32_600}))
    assert len(near) < 32 * 1024
    post("track: 32 KB on the wire, over it in the internal schema", "/v1/track", near)
    small = {**event(), "type": "track"}
    big_batch = orjson.dumps({"batch": [{**small, "properties": {"b": "y" * 30_000}} for _ in range(20)]})
    post("batch over 512 KB", "/v1/batch", big_batch)
    post("import over 512 KB", "/v1/import", big_batch)
    post("batch over 512 KB, chunked", "/v1/batch", iter([big_batch[i:i + 65536]
                                                         for i in range(0, len(big_batch), 65536)]))
    post("batch gzip bomb", "/v1/batch", gzip.compress(b'{"batch": ["' + b"0" * 5_000_000 + b'"]}'),
         **{"Content-Encoding": "gzip"})
    over = post("batch event over 32 KB", "/v1/batch",
                orjson.dumps({"batch": [small, {**event(), "type": "track", "properties": {"b": "z" * 33_000}}]}))
    assert over.json().get("index") == 1
    # a batch whose event crosses 32 KB only once the batch's context is merged into it
    post("batch event over 32 KB after the context merge", "/v1/batch",
         orjson.dumps({"batch": [{**event(), "type": "track", "properties": {"b": "w" * 25_000}}],
                       "context": {"page": {"title": "t" * 8_000}, "userAgent": "u" * 8_000}}))

    # a burst over the burst key's bucket (5 events/s, a bucket of 5): 429 with Retry-After
    burst: Counter[int] = Counter()
    retry_after: set[str] = set()
    for _ in range(30):
        response = client.post("/v1/track", json=event(), headers={"Authorization": basic(BURST_KEY)})
        burst[response.status_code] += 1
        if response.status_code == 429:
            retry_after.add(response.headers.get("retry-after", "missing"))
            assert response.json()["code"] == "rate_limited"
    big = client.post("/v1/batch", json={"batch": [{**event(), "type": "track"} for _ in range(50)]},
                      headers={"Authorization": basic(BURST_KEY)})
    burst[big.status_code] += 1
    figure("11 collector abuse: over-limit", f"{len(answers)} over-limit requests, a burst of 31 on a 5/s key",
           over_limit={k: v[0] for k, v in answers.items()}, burst=dict(sorted(burst.items())),
           retry_after=sorted(retry_after))
    assert {name: a for name, a in answers.items() if a != (413, "payload_too_large")} == {}
    # how many pass depends on the machine's speed (the bucket refills while we send): only the classes are asserted
    assert burst[429] > 0 and burst[200] > 0 and set(burst) <= {200, 429}, burst
    assert retry_after and all(v.isdigit() and int(v) >= 1 for v in retry_after), retry_after


# -- 4. a legitimate key under an abusive key's flood ----------------------------------------------------------------

FLOOD = textwrap.dedent('''
    import base64, json, sys, threading, time, uuid
    from collections import Counter
    import httpx

    base, key, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    counts, lock = Counter(), threading.Lock()
    stop = time.monotonic() + seconds

    def flood(i):
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": auth}) as client:
            n = 0
            while time.monotonic() < stop:
                n += 1
                ev = {"messageId": uuid.uuid4().hex, "anonymousId": f"flood-{i}", "event": "Flood"}
                try:
                    if n % 4:
                        status = client.post("/v1/track", json=ev).status_code
                    else:  # a 100-event batch: parsed before its 429
                        batch = [{**ev, "type": "track", "messageId": uuid.uuid4().hex} for _ in range(100)]
                        status = client.post("/v1/batch", json={"batch": batch}).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    counts[status] += 1

    print("flooding", flush=True)
    workers = [threading.Thread(target=flood, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({str(k): v for k, v in counts.items()}), flush=True)
''')


def legitimate_traffic(base: str, seconds: float, rate: float) -> tuple[list[float], Counter[int | str]]:
    """The legitimate key at a modest, steady rate: latencies (ms) and statuses."""
    latencies: list[float] = []
    statuses: Counter[int | str] = Counter()
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": basic(LEGIT_KEY)}) as legit:
        legit.get("/healthz")  # connect outside the measurement
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            i += 1
            sent = time.perf_counter()
            try:
                status: int | str = legit.post("/v1/track", json=event(anonymousId="legit-device")).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append((time.perf_counter() - sent) * 1000)
            statuses[status] += 1
    return latencies, statuses


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")


def test_a_legitimate_key_gets_only_2xx_under_another_keys_flood(stack: str) -> None:
    rate = RATE_PER_S / 2  # well inside its own bucket (the same limit as the flood's)
    base_lat, base_status = legitimate_traffic(stack, SECONDS, rate)
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, stack, FLOOD_KEY, str(SECONDS + 2), "16"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert flood.stdout is not None
        assert flood.stdout.readline().strip() == "flooding", flood.stderr.read() if flood.stderr else ""
        time.sleep(1.0)  # the flood's connections are up and its bucket is empty
        flood_lat, flood_status = legitimate_traffic(stack, SECONDS, rate)
        out, err = flood.communicate(timeout=SECONDS + 60)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait(timeout=10)
    flooded = Counter({k: v for k, v in json.loads(out.strip().splitlines()[-1]).items()})
    flood_total = sum(flooded.values())
    figure("11 collector abuse: legitimate key under a flood",
           f"legitimate key at {rate:g} req/s for {SECONDS} s alone, then {SECONDS} s under a 16-connection flood "
           f"of another key (limit {RATE_PER_S} events/s)",
           alone_p50_ms=pct(base_lat, 0.5), alone_p99_ms=pct(base_lat, 0.99), alone_max_ms=pct(base_lat, 1.0),
           alone_statuses=dict(base_status), flooded_p50_ms=pct(flood_lat, 0.5),
           flooded_p99_ms=pct(flood_lat, 0.99), flooded_max_ms=pct(flood_lat, 1.0),
           flooded_statuses=dict(flood_status), flood_requests=flood_total,
           flood_req_per_s=round(flood_total / (SECONDS + 2), 1), flood_statuses=dict(sorted(flooded.items())),
           flood_429_share=round(flooded["429"] / max(1, flood_total), 3))
    assert set(base_status) == {200} and set(flood_status) == {200}, (base_status, flood_status)
    assert flooded["429"] > 0 and set(flooded) <= {"200", "429"}, (flooded, err[-2000:])


# -- 5. a bounded atheris run on the event parsers -------------------------------------------------------------------

def test_fuzzing_the_event_parsers_finds_no_crash(tmp_path: Path) -> None:
    crashes = tmp_path / "crashes"
    cmd = [sys.executable, str(Path(__file__).with_name("fuzz_parser.py")), "--corpus", str(tmp_path / "corpus"),
           "--crashes", str(crashes), "--", f"-runs={FUZZ_RUNS}", "-seed=11", "-print_final_stats=1",
           "-max_len=34000", "-timeout=30", "-rss_limit_mb=3072", f"-max_total_time={max(600, FUZZ_RUNS // 50)}"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=max(900, FUZZ_RUNS // 40),
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    seconds = time.monotonic() - started
    log = proc.stdout + proc.stderr
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
    done = re.findall(r"DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", log)
    found = json.loads((crashes / "stats.json").read_text()) if (crashes / "stats.json").exists() else {}
    artifacts = sorted(p.name for p in crashes.glob("*") if p.name.startswith(("crash-", "timeout-", "oom-",
                                                                               "slow-unit-")))
    runs = int(stats.get("number_of_executed_units", 0))
    figure("11 collector abuse: atheris", f"{runs} runs on parse_raw, the collector's body path and from_segment "
           f"in {seconds:.0f} s", crashes=found.get("crash_inputs", "?"), signatures=found.get("signatures", {}),
           artifacts=len(artifacts), runs_per_s=round(runs / seconds) if seconds else None,
           libfuzzer_exec_per_s=stats.get("average_exec_per_sec"), coverage=done[-1][0] if done else None,
           features=done[-1][1] if done else None, corpus=done[-1][2] if done else None,
           new_units=stats.get("new_units_added"), exit_code=proc.returncode)
    details = "\n".join((crashes / a).read_text(errors="replace")[-1500:] for a in artifacts if a.endswith(".txt"))
    assert proc.returncode == 0, log[-4000:]
    assert found.get("crash_inputs") == 0 and not artifacts, details or log[-4000:]
    assert runs >= FUZZ_RUNS, log[-2000:]
