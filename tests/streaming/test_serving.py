"""The serving process for real: an embedded Tansu broker, the worker, the collector and ``python -m
streaming.serving`` as subprocesses, HTTP in and out.

Read-your-writes (the collector's token, ``?after=``), consent at read (a revocation on one device hides fields
read through the profile's other device), the publishable key's limits and CORS, every status, server-sent
decision events, erasure (gone within one decision), and a restarted serving process answering the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics, free_port
from streaming.control import publish_policy, publish_records
from streaming.control_tables import erasure_value
from streaming.policy import bootstrap_policy
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

    def start_serving(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "KAFKA_BROKER_ADDRESS": self.broker.address, "FIRSTMILE_DATA_DIR": str(self.data_dir),
               "FIRSTMILE_SERVING_PORT": str(self.port), "FIRSTMILE_SERVER_KEYS": SERVER,
               "FIRSTMILE_PUBLISHABLE_KEYS": f"{PUBLISHABLE}:{SHOP}"}
        proc = subprocess.Popen([sys.executable, "-m", "streaming.serving"], env=env, cwd=ROOT,
                                stdout=(self.data_dir / "serving.log").open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        wait_until(lambda: _status(f"http://127.0.0.1:{self.port}/readyz") == 200, 60, "serving ready")
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


def test_a_restarted_serving_process_answers_the_same_after_catching_up(served: Served) -> None:
    before = served.get("/v1/profiles/dev-r").json()
    stop_process(served.serving)
    served.serving = served.start_serving()
    after = served.get("/v1/profiles/dev-r").json()
    assert {k: v for k, v in after.items() if k != "staleness_ms"} == \
        {k: v for k, v in before.items() if k != "staleness_ms"}
    page = served.get("/profiles/dev-r")
    assert page.status_code == 200 and "cart_builder" in page.text and "dest.warehouse" in page.text
