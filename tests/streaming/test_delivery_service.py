"""``python -m streaming.delivery`` (run_all), as ``firstmile up`` and docker-compose run it: one process per
destination and lane on a real broker. A lane killed with -9 is restarted alone — the other destinations' lanes keep
their processes (restarting them too is what took the healthy destinations' p99 from 0.3 s to 14-20 s in make
bench-delivery) — and the restarted lane delivers what was routed meanwhile; SIGTERM stops every lane."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml  # type: ignore[import-untyped]
from confluent_kafka import Producer

from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics
from streaming.delivery.app import create_delivery_topics
from streaming.delivery.config import load_destinations
from streaming.settings import StreamingSettings
from tests.orchestration.processes import alive
from tests.streaming import http_destination as http

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _lanes(service: int) -> dict[str, int]:
    """'destination/lane' → pid of the service's live lane processes."""
    out = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if int(fields[1]) == service and fields[0] != "Z" and "--lane" in argv:
            out[f"{argv[argv.index('--destination') + 1]}/{argv[argv.index('--lane') + 1]}"] = pid
    return out


def _wait(check, what: str, timeout: float, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}; service log:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def test_the_service_restarts_a_killed_lane_alone_and_it_delivers_what_was_routed_meanwhile(tmp_path: Path) -> None:
    server = http.Destination()
    httpd, url = http.start(server)
    broker = EmbeddedBroker.start()
    service = None
    log = tmp_path / "service.log"
    try:
        settings = StreamingSettings(data_dir=tmp_path, partitions=3)
        create_topics(broker.address, settings)
        fast = {"max_events": 10, "max_wait_ms": 200}
        file = tmp_path / "destinations.yml"
        file.write_text(yaml.safe_dump({"destinations": [
            {"id": "one", "type": "webhook", "topic": "dest.sales", "url": url + "/one", "batching": fast},
            {"id": "two", "type": "webhook", "topic": "dest.sales", "url": url + "/two", "batching": fast}]}))
        create_delivery_topics(broker.address, settings, load_destinations(file))
        env = {**os.environ, "KAFKA_BROKER_ADDRESS": broker.address, "FIRSTMILE_DATA_DIR": str(tmp_path),
               "FIRSTMILE_PARTITIONS": "3", "FIRSTMILE_DESTINATIONS_FILE": str(file)}
        with log.open("ab") as out:
            service = subprocess.Popen([sys.executable, "-m", "streaming.delivery"], env=env, cwd=ROOT, stdout=out,
                                       stderr=subprocess.STDOUT)
        _wait(lambda: len(_lanes(service.pid)) == 4, "four lanes", 60, log)
        before = _lanes(service.pid)
        producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 5})

        def route(ids: range) -> None:
            for i in ids:
                event = {"event_id": f"e{i}", "profile_id": f"p-{i % 7}", "type": "track",
                         "event_name": "Order Completed", "event_ts": "2026-11-02T12:00:00Z"}
                producer.produce(settings.topic(topics.DEST_SALES), key=event["profile_id"].encode(),
                                 value=orjson.dumps(event))
            producer.flush(10)

        def ids_at(path: str) -> set[str]:
            return {e["event_id"] for r in server.on(path) for e in r.json()["batch"]}

        route(range(20))
        _wait(lambda: {f"e{i}" for i in range(20)} <= ids_at("/one") & ids_at("/two"), "first events delivered",
              120, log)
        os.kill(before["one/fresh"], signal.SIGKILL)
        route(range(20, 40))
        _wait(lambda: _lanes(service.pid).get("one/fresh", before["one/fresh"]) != before["one/fresh"],
              "the killed lane restarted", 30, log)
        _wait(lambda: {f"e{i}" for i in range(40)} <= ids_at("/one") & ids_at("/two"),
              "events routed while the lane was down delivered", 120, log)
        after = _lanes(service.pid)
        assert service.poll() is None, "the service exited with its lane"
        # the other destination's lanes and one's retry lane never stopped
        assert {k: v for k, v in after.items() if k != "one/fresh"} == \
               {k: v for k, v in before.items() if k != "one/fresh"}
        assert f"lane one/fresh exited with {-signal.SIGKILL}" in log.read_text()
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=60) == 0
        assert alive(set(after.values())) == set(), "lanes left running after SIGTERM"
    finally:
        if service is not None and service.poll() is None:
            service.kill()
            service.wait()
        broker.stop()
        httpd.shutdown()
