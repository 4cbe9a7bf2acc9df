"""The serving process for real: an embedded Tansu broker, the worker, the collector and ``python -m
streaming.serving`` as subprocesses, HTTP in and out.

Read-your-writes (the collector's token, ``?after=``), consent at read (a revocation on one device hides fields
read through the profile's other device), the publishable key's limits and CORS, every status, server-sent
decision events, erasure (gone within one decision), identity merges from ``control.identity`` (a merged user id
reads its survivor), the cap on waiting reads, and a restarted serving process answering the same.

The store itself (no broker: a real RocksDB on ``tmp_path``): a batch that erases a profile between two of its
views, and a reopened store keeping its block cache and bloom filter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics, free_port
from streaming.control import publish_policy, publish_records
from streaming.control_tables import erasure_value, merge_value
from streaming.policy import bootstrap_policy
from streaming.serving.store import ProfileStore
from streaming.settings import StreamingSettings
from tests.streaming.test_collector import KEY, start_collector, stop_process, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER, PUBLISHABLE, SHOP = "srv-key-1", "pk-test-1", "https://shop.example"
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0 Safari/537.36")
US_IP, DE_IP = "8.8.8.8", "85.214.132.117"
GRANT_ALL = {"analytics": True, "marketing": True, "sales": True, "personalization": True}


class Served:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.broker = EmbeddedBroker.start()
        create_topics(self.broker.address, StreamingSettings(data_dir=data_dir, partitions=3))
        publish_policy(self.broker.address, topics.CONTROL_POLICY, bootstrap_policy())
        env = {**os.environ, "KAFKA_BROKER_ADDRESS": self.broker.address, "FIRSTMILE_DATA_DIR": str(data_dir)}
        self.worker = subprocess.Popen([sys.executable, "-m", "streaming.worker"], env=env, cwd=ROOT,
                                       stdout=(data_dir / "worker.log").open("wb"), stderr=subprocess.STDOUT)
        self.collector_port = free_port()
        self.collector = start_collector(self.broker.address, self.collector_port)
        self.port = free_port()
        self.serving = self.start_serving()
        self.seq = 0

    def start_serving(self, port: int | None = None, **settings: str) -> subprocess.Popen[bytes]:
        """A serving process (the fixture's own by default; ``settings``: more ``FIRSTMILE_*`` variables)."""
        port = port or self.port
        env = {**os.environ, "KAFKA_BROKER_ADDRESS": self.broker.address, "FIRSTMILE_DATA_DIR": str(self.data_dir),
               "FIRSTMILE_SERVING_PORT": str(port), "FIRSTMILE_SERVER_KEYS": SERVER,
               "FIRSTMILE_PUBLISHABLE_KEYS": f"{PUBLISHABLE}:{SHOP}", **settings}
        proc = subprocess.Popen([sys.executable, "-m", "streaming.serving"], env=env, cwd=ROOT,
                                stdout=(self.data_dir / f"serving-{port}.log").open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        wait_until(lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200, 60, "serving ready")
        return proc

    def track(self, anon: str, *, user: str | None = None, event: str = "Product Viewed", ip: str = US_IP,
              type_: str = "track", consent: dict[str, bool] | None = None) -> str:
        """One event through the collector; returns the collector's read-your-writes token."""
        self.seq += 1
        body: dict[str, Any] = {"messageId": f"s-{anon}-{self.seq}", "anonymousId": anon,
                                "timestamp": datetime.now(UTC).isoformat(),
                                "context": {"ip": ip, "userAgent": CHROME},
                                "properties": {"category": "shoes", "price": 40}}
        if user:
            body["userId"] = user
        if type_ == "track":
            body["event"] = event
        if consent is not None:
            body["consent"] = consent
        answer = httpx.post(f"http://127.0.0.1:{self.collector_port}/v1/{type_}", json=body, auth=(KEY, ""),
                            timeout=10)
        assert answer.status_code == 200, answer.text
        token = answer.json()["token"]
        assert token.count(".") == 1
        return token

    def get(self, path: str, *, key: str = SERVER, **headers: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", auth=(key, "") if key else None, headers=headers,
                         timeout=10)

    def close(self) -> None:
        for proc in (self.serving, self.collector):
            stop_process(proc)
        self.worker.terminate()
        self.worker.wait(timeout=30)
        self.broker.stop()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    platform = Served(tmp_path_factory.mktemp("serving"))
    try:
        token = platform.track("warm-up")
        answer = platform.get(f"/v1/profiles?anonymousId=warm-up&after={token}&wait_ms=5000")
        for _ in range(12):  # the worker joins its group first (a few seconds on Tansu)
            if answer.status_code == 200 and not answer.json()["stale"]:
                break
            answer = platform.get(f"/v1/profiles?anonymousId=warm-up&after={token}&wait_ms=5000")
        assert answer.status_code == 200 and not answer.json()["stale"], answer.text
        yield platform
    finally:
        platform.close()


def test_a_read_after_the_collectors_token_sees_the_event_it_wrote(served: Served) -> None:
    for i in range(3):
        token = served.track("dev-r", event="Product Added" if i == 2 else "Product Viewed")
        answer = served.get(f"/v1/profiles?anonymousId=dev-r&after={token}")
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["stale"] is False and doc["features"]["session_event_count"] == i + 1
    assert doc["segment"] == "cart_builder" and doc["action"] == "show_checkout_reminder"
    assert doc["profile_id"] == "dev-r" and doc["as_of"] and doc["staleness_ms"] >= 0 and doc["policy_version"] == 1
    assert doc["withheld"] == {}  # a US visitor: every purpose granted by default
    by_id = served.get("/v1/profiles/dev-r").json()
    assert by_id["segment"] == "cart_builder" and by_id["devices"] == ["dev-r"]


def test_a_token_for_an_event_not_yet_decided_answers_stale_after_the_bounded_wait(served: Served) -> None:
    served.track("dev-stale")
    started = time.monotonic()
    answer = served.get("/v1/profiles?anonymousId=dev-stale&after=0.999999999&wait_ms=300")
    assert answer.status_code == 200 and answer.json()["stale"] is True
    assert 0.3 <= time.monotonic() - started < 3


def test_a_revocation_on_one_device_hides_fields_read_through_the_other_device(served: Served) -> None:
    served.track("dev-a", user="u-both", ip=DE_IP, type_="identify")
    served.track("dev-a", user="u-both", ip=DE_IP, type_="consent", consent=GRANT_ALL)
    token = served.track("dev-b", user="u-both", ip=DE_IP, event="Product Added")
    seen = served.get(f"/v1/profiles?anonymousId=dev-b&after={token}").json()
    assert seen["profile_id"] == "u-both" and seen["segment"] == "cart_builder" and seen["withheld"] == {}
    revoked = served.track("dev-a", ip=DE_IP, type_="consent", consent={"personalization": False})
    after = served.get(f"/v1/profiles?anonymousId=dev-b&after={revoked}")
    doc = after.json()
    assert after.status_code == 200 and doc["stale"] is False, doc
    assert "segment" not in doc and "action" not in doc and "scores" not in doc
    assert doc["withheld"] == {"segment": "personalization", "action": "personalization",
                               "scores": "personalization"}
    assert doc["consent"]["personalization"] is False and "features" in doc


def test_a_publishable_key_reads_its_fields_by_anonymous_id_only_with_cors(served: Served) -> None:
    token = served.track("dev-p", event="Product Added")
    answer = served.get(f"/v1/profiles?anonymousId=dev-p&after={token}", key=PUBLISHABLE, origin=SHOP)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == SHOP
    assert set(answer.json()) <= {"segment", "action", "consent", "as_of", "staleness_ms", "stale", "withheld",
                                  "policy_version"}
    assert answer.json()["segment"] == "cart_builder"
    assert served.get("/v1/profiles?userId=u-both", key=PUBLISHABLE, origin=SHOP).status_code == 403
    assert served.get("/v1/profiles/dev-p", key=PUBLISHABLE, origin=SHOP).status_code == 403
    assert served.get("/v1/profiles?anonymousId=dev-p", key=PUBLISHABLE,
                      origin="https://evil.example").status_code == 403
    preflight = httpx.options(f"http://127.0.0.1:{served.port}/v1/profiles", headers={"origin": SHOP})
    assert preflight.status_code == 204 and "authorization" in preflight.headers["access-control-allow-headers"]


def test_every_status_for_bad_input(served: Served) -> None:
    assert served.get("/v1/profiles/nobody-here").status_code == 404
    assert served.get("/v1/profiles?anonymousId=dev-r&after=not-a-token").status_code == 400
    assert served.get("/v1/profiles?anonymousId=dev-r&wait_ms=99999999").status_code == 400
    assert served.get("/v1/profiles").status_code == 400
    assert served.get("/v1/profiles?anonymousId=" + "x" * 3000).status_code == 414
    assert served.get("/v1/profiles/dev-r", key="wrong-key").status_code == 401
    assert served.get("/v1/profiles/dev-r", key="").status_code == 401
    assert httpx.post(f"http://127.0.0.1:{served.port}/v1/profiles/dev-r", auth=(SERVER, "")).status_code == 405
    assert served.get("/v1/nothing").status_code == 404


def test_decision_changes_stream_as_server_sent_events(served: Served) -> None:
    served.track("dev-sse")
    url = f"http://127.0.0.1:{served.port}/v1/profiles/dev-sse/stream"
    events: list[str] = []
    with httpx.stream("GET", url, auth=(SERVER, ""), timeout=30) as stream:
        lines = stream.iter_lines()
        for line in lines:  # the current decision first
            if line.startswith("data:"):
                events.append(line)
                break
        served.track("dev-sse", event="Product Added")
        for line in lines:
            if line.startswith("data:"):
                events.append(line)
                break
    assert '"segment":null' in events[0] and '"segment":"cart_builder"' in events[1]


def test_an_erased_profile_is_gone_from_the_api_within_one_decision(served: Served) -> None:
    token = served.track("dev-x", user="u-gone")
    assert served.get(f"/v1/profiles?anonymousId=dev-x&after={token}").status_code == 200
    publish_records(served.broker.address, topics.CONTROL_ERASURE,
                    [("u-gone", erasure_value(request_id=None, at=None, source="test"))])
    deadline = time.monotonic() + 10
    while served.get("/v1/profiles/u-gone").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.get("/v1/profiles/u-gone").status_code == 404
    assert served.get("/v1/profiles?anonymousId=dev-x").status_code == 404


def test_a_user_id_merged_by_the_warehouse_reads_its_survivors_profile(served: Served) -> None:
    token = served.track("dev-surv", user="u-survivor", event="Product Added")
    survivor = served.get(f"/v1/profiles?userId=u-survivor&after={token}").json()
    assert survivor["profile_id"] == "u-survivor" and survivor["segment"] == "cart_builder"
    token = served.track("dev-old", user="u-merged")
    assert served.get(f"/v1/profiles?userId=u-merged&after={token}").json()["profile_id"] == "u-merged"
    assert served.get("/v1/profiles?userId=u-never-seen").status_code == 404
    # the warehouse found u-merged and u-never-seen to be the survivor's (a chain: u-never-seen -> u-merged)
    publish_records(served.broker.address, topics.CONTROL_IDENTITY,
                    [("u-merged", merge_value("u-survivor")), ("u-never-seen", merge_value("u-merged"))])
    wait_until(lambda: served.get("/v1/profiles?userId=u-never-seen").status_code == 200, 10, "the merge applied")
    for path in ("/v1/profiles?userId=u-merged", "/v1/profiles?userId=u-never-seen", "/v1/profiles/u-merged",
                 "/v1/profiles?anonymousId=dev-old"):
        doc = served.get(path).json()
        assert doc["profile_id"] == "u-survivor" and doc["segment"] == "cart_builder", (path, doc)
    assert "cart_builder" in served.get("/profiles/u-merged").text
    # an erased id answers 404 even though its survivor is still there
    publish_records(served.broker.address, topics.CONTROL_ERASURE,
                    [("u-never-seen", erasure_value(request_id=None, at=None, source="test"))])
    wait_until(lambda: served.get("/v1/profiles?userId=u-never-seen").status_code == 404, 10, "the erasure")
    assert served.get("/v1/profiles?userId=u-merged").json()["profile_id"] == "u-survivor"
    # a tombstone undoes the merge: u-merged reads its own profile again
    publish_records(served.broker.address, topics.CONTROL_IDENTITY, [("u-merged", None)])
    wait_until(lambda: served.get("/v1/profiles?userId=u-merged").json()["profile_id"] == "u-merged", 10,
               "the merge undone")


def test_waiting_reads_beyond_the_cap_answer_503_with_retry_after(served: Served) -> None:
    port = free_port()
    proc = served.start_serving(port, FIRSTMILE_SERVING_MAX_WAITING_READS="2",
                                FIRSTMILE_SERVING_STORE_DIR=str(served.data_dir / "serving-capped"))
    url = f"http://127.0.0.1:{port}/v1/profiles?anonymousId=dev-r&after=0.999999999&wait_ms=3000"
    try:
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(httpx.get, url, auth=(SERVER, ""), timeout=10) for _ in range(2)]
            time.sleep(1.0)  # both are waiting for an event that will not come
            refused = httpx.get(url, auth=(SERVER, ""), timeout=10)
            answers = [w.result() for w in waiting]
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == "too_many_waiting_reads"
        assert [(a.status_code, a.json()["stale"]) for a in answers] == [(200, True), (200, True)]
        # a read that needs no wait is never refused, and the cap frees up once the waits are over
        assert httpx.get(url.replace("0.999999999", "0.0"), auth=(SERVER, ""), timeout=10).status_code == 200
        assert httpx.get(url.replace("wait_ms=3000", "wait_ms=100"), auth=(SERVER, ""), timeout=10).status_code == 200
    finally:
        stop_process(proc)


def _view(profile_id: str, event_id: str, *, personalization: bool) -> bytes:
    return orjson.dumps({
        "profile_id": profile_id, "user_id": None, "devices": ["d1"], "segment": "s", "action": "a",
        "consent": {"analytics": True, "personalization": personalization}, "scores": {"propensity": 0.5},
        "features": {"n": 1}, "last_event": {"event_id": event_id, "ledger": {"why": event_id}},
        "last_event_at": "2026-01-01T00:00:00Z", "policy_version": 3, "offsets": {"0": 7}, "decided_at": "x"})


def test_a_batch_applies_an_erasure_between_two_views_of_the_profile_in_order(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "store")
    p, e = topics.PROFILES, topics.CONTROL_ERASURE
    changed = store.apply_many([
        (p, p, 0, 0, b"kept", _view("kept", "e1", personalization=False)),
        (p, p, 0, 1, b"kept", _view("kept", "e2", personalization=True)),
        (p, p, 0, 2, b"gone", _view("gone", "e3", personalization=True)),
        (e, e, 0, 0, b"gone", erasure_value(request_id=None, at=None, source="test")),
        (p, p, 1, 0, b"gone", _view("gone", "e4", personalization=True)),  # a late view of the erased profile
    ])
    assert changed == ["kept", "kept", "gone", "gone"]
    assert store.served("gone") is None and store.recent("gone") == []
    kept = store.served("kept")
    assert kept is not None and kept.offsets == {"0": 7}
    answer = orjson.loads(kept.body(None) + b"}")
    assert answer["segment"] == "s" and answer["withheld"] == {} and answer["as_of"] == "2026-01-01T00:00:00Z"
    assert "last_event" not in answer and "offsets" not in answer and "decided_at" not in answer
    assert orjson.loads(kept.body(frozenset({"segment", "withheld", "as_of"})) + b"}") == {
        "segment": "s", "as_of": "2026-01-01T00:00:00Z", "withheld": {}}
    assert [e["event_id"] for e in store.recent("kept")] == ["e1", "e2"]
    assert store.offsets() == {(p, 0): 3, (p, 1): 1, (e, 0): 1}
    store.apply(p, p, 0, 3, b"kept", _view("kept", "e5", personalization=False))
    kept = store.served("kept")
    assert kept is not None
    denied = orjson.loads(kept.body(None) + b"}")
    assert "segment" not in denied and denied["withheld"] == {
        "segment": "personalization", "action": "personalization", "scores": "personalization"}
    inspected = kept.view()  # the inspector still sees every field but the last event (it has its own table)
    assert inspected["segment"] == "s" and inspected["offsets"] == {"0": 7} and "last_event" not in inspected
    store.close()


def test_a_reopened_store_keeps_its_block_cache_and_bloom_filter(tmp_path: Path) -> None:
    for _ in range(2):  # rocksdict reopens with the options saved in the store unless told otherwise
        store = ProfileStore(tmp_path / "store", block_cache_mb=48)
        assert store.db.property_int_value("rocksdb.block-cache-capacity") == 48 * 2**20
        store.db.put(b"p:x", b"1")
        store.db.flush()
        store.close()
    options = max((tmp_path / "store").glob("OPTIONS-*")).read_text()
    assert "bloomfilter" in options


def test_a_store_in_an_older_format_is_emptied_so_the_topics_are_read_again(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    old = Rdict(str(tmp_path / "store"), Options(raw_mode=True))  # the layout before prepared answers
    old.put(b"p:u1", orjson.dumps({"view": {"profile_id": "u1"}, "applied_at": 1.0}))
    old.put(f"o:{topics.PROFILES}:0".encode(), b"42")
    old.close()
    store = ProfileStore(tmp_path / "store")
    assert store.offsets() == {} and store.served("u1") is None and len(store) == 0
    store.apply(topics.PROFILES, topics.PROFILES, 0, 0, b"u2", _view("u2", "e1", personalization=True))
    store.close()
    store = ProfileStore(tmp_path / "store")  # this layout's own store is kept
    assert store.offsets() == {(topics.PROFILES, 0): 1} and store.served("u2") is not None
    store.close()


def test_a_restarted_serving_process_answers_the_same_after_catching_up(served: Served) -> None:
    before = served.get("/v1/profiles/dev-r").json()
    stop_process(served.serving)
    served.serving = served.start_serving()
    after = served.get("/v1/profiles/dev-r").json()
    assert {k: v for k, v in after.items() if k != "staleness_ms"} == \
        {k: v for k, v in before.items() if k != "staleness_ms"}
    page = served.get("/profiles/dev-r")
    assert page.status_code == 200 and "cart_builder" in page.text and "dest.warehouse" in page.text
