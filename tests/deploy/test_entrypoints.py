"""The container commands, proven without a container engine: each hot-path service of docker-compose.yml runs as
a subprocess with the exact command and environment compose gives it (the `python` of the image replaced by this
interpreter, the broker by the embedded Tansu, /data by a temporary directory, the collector's port by a free one),
and events go all the way: collector and events.raw → worker → dest.warehouse → lake sink → Parquet in the lake.
The health-check commands of the compose file run against the same processes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.deploy import compose_files as cf

pytestmark = pytest.mark.integration

WRITE_KEY = "deploy-test-key"
#: A residential US address: region defaults grant analytics, so events route to dest.warehouse.
US_IP = "73.162.0.1"
BROWSER_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Safari/537.36")
DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    secrets = {name: f"test-{name.lower()}-value" for name in cf.required_variables()}
    secrets["FIRSTMILE_WRITE_KEYS"] = f"{WRITE_KEY}:deploy-test"
    return cf.load(secrets)


@pytest.fixture(scope="module")
def broker_address() -> Iterator[str]:
    from streaming.broker import EmbeddedBroker

    broker = EmbeddedBroker.start()
    try:
        yield broker.address
    finally:
        broker.stop()


def _argv(argv: list[str]) -> list[str]:
    """The image's `python` (first on PATH in /opt/venv/bin) is this interpreter here."""
    return [sys.executable, *argv[1:]] if argv[0] == "python" else argv


def _env(service: dict[str, Any], **overrides: str) -> dict[str, str]:
    """The container's environment: the image's ENV, the service's environment, then the test's overrides."""
    image_env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                 "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
                 "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return {**image_env, **{k: str(v) for k, v in service["environment"].items()}, **overrides}


def _free_port() -> int:
    from streaming.broker import free_port

    return free_port()


class Service:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path, logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        workdir.mkdir(parents=True, exist_ok=True)  # the image's WORKDIR /app: empty, no .env
        self.process = subprocess.Popen(_argv(argv), env=env, cwd=workdir, stdout=self.log.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return f"--- {self.name} (exit {self.process.poll()}) ---\n" + self.log.read_text(errors="replace")[-3000:]

    def stop(self, grace: float = 20.0) -> bool:
        """SIGTERM (what `docker stop` sends), then SIGKILL after ``grace``. True if it exited on SIGTERM."""
        if self.process.poll() is not None:
            return False
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            return False


def _segment_event(device: str, n: int) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "messageId": f"deploy-{uuid.uuid4()}",
            "anonymousId": device, "timestamp": datetime.now(UTC).isoformat(),
            "context": {"ip": US_IP, "userAgent": BROWSER_UA, "page": {"path": f"/p/{n}"}},
            "properties": {"sku": f"sku-{n}"}}


def _produce_raw(broker: str, topic: str, events: list[dict[str, Any]]) -> None:
    from confluent_kafka import Producer

    from streaming.contract import from_segment

    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for event in events:
        record = from_segment(event, source_id="deploy-test", received_at=datetime.now(UTC))
        producer.produce(topic, key=event["anonymousId"].encode(), value=orjson.dumps(record))
    assert producer.flush(30) == 0


def _post_batch(port: int, events: list[dict[str, Any]]) -> int:
    body = json.dumps({"batch": events, "sentAt": datetime.now(UTC).isoformat()}).encode()
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/batch", data=body, method="POST",
                                     headers={"content-type": "application/json", "authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def _read_topic_from_start(broker: str, topic: str, wanted: set[str], services: list[Service]) -> set[str]:
    """Event ids seen on ``topic``, read by assign() from the beginning (no consumer group to form)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"deploy-test-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen: set[str] = set()
        deadline = time.monotonic() + DEADLINE_S
        while not wanted <= seen and time.monotonic() < deadline:
            assert all(s.alive() for s in services), "\n".join(s.tail() for s in services)
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = orjson.loads(message.value())
            if isinstance(value, dict) and isinstance(value.get("event_id"), str):
                seen.add(value["event_id"])
        return seen
    finally:
        consumer.close()


def _lake_event_ids(lake: Path) -> set[str]:
    import polars as pl

    ids: set[str] = set()
    for path in lake.glob("events/**/*.parquet"):
        ids.update(pl.read_parquet(path, columns=["event_id"])["event_id"].to_list())
    return ids


def _healthcheck(service: dict[str, Any], env: dict[str, str], workdir: Path, *,
                 replace: tuple[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The compose health check of ``service``, with /app/healthcheck.py taken from docker/."""
    argv = list(service["healthcheck"]["test"])[1:] if "healthcheck" in service else None
    if argv is None:  # the image's HEALTHCHECK
        argv = ["python", "/app/healthcheck.py", "kafka"]
    argv = [str(cf.REPO / "docker" / "healthcheck.py") if a == "/app/healthcheck.py" else a for a in argv]
    if replace:
        argv = [a.replace(*replace) for a in argv]
    return subprocess.run(_argv(argv), env=env, cwd=workdir, capture_output=True, text=True, timeout=30)


def test_hot_path_services_run_exactly_as_compose_runs_them(compose: dict[str, Any], broker_address: str,
                                                             tmp_path: Path) -> None:
    services_cfg = compose["services"]
    logs = tmp_path / "logs"
    logs.mkdir()

    def data(name: str) -> Path:  # each container has its own /data
        return tmp_path / name / "data"

    # 1. The one-shot topic creation, as compose's init-topics runs it.
    init = services_cfg["init-topics"]
    result = subprocess.run(_argv(cf.command_argv(init["command"])), cwd=tmp_path, capture_output=True, text=True,
                            env=_env(init, KAFKA_BROKER_ADDRESS=broker_address, FIRSTMILE_DATA_DIR=str(data("init"))),
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created:" in result.stdout and "events.raw" in result.stdout

    # 2. Worker (the image's default CMD, which compose's worker command equals), lake sink, collector.
    worker_cmd = cf.final_cmd(cf.REPO / "docker" / "worker.Dockerfile")
    assert cf.command_argv(services_cfg["worker"]["command"]) == worker_cmd
    collector_port = _free_port()
    envs = {
        "worker": _env(services_cfg["worker"], KAFKA_BROKER_ADDRESS=broker_address,
                       FIRSTMILE_DATA_DIR=str(data("worker"))),
        "lake-sink": _env(services_cfg["lake-sink"], KAFKA_BROKER_ADDRESS=broker_address,
                          FIRSTMILE_DATA_DIR=str(data("lake-sink"))),
        "collector": _env(services_cfg["collector"], KAFKA_BROKER_ADDRESS=broker_address,
                          FIRSTMILE_DATA_DIR=str(data("collector")), FIRSTMILE_COLLECTOR_PORT=str(collector_port)),
    }
    commands = {"worker": worker_cmd, "lake-sink": cf.command_argv(services_cfg["lake-sink"]["command"]),
                "collector": cf.command_argv(services_cfg["collector"]["command"])}
    running: list[Service] = []
    stopped_on_sigterm: dict[str, bool] = {}
    try:
        for name in ("worker", "lake-sink", "collector"):
            running.append(Service(name, commands[name], envs[name], tmp_path / name / "app", logs))

        # 3. The compose health checks pass against the running processes.
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline:
            assert all(s.alive() for s in running), "\n".join(s.tail() for s in running)
            ready = _healthcheck(services_cfg["collector"], envs["collector"], tmp_path,
                                 replace=("127.0.0.1:8080", f"127.0.0.1:{collector_port}"))
            if ready.returncode == 0:
                break
            time.sleep(0.5)
        assert ready is not None and ready.returncode == 0, ready.stderr if ready else "no health check ran"
        for name in ("worker", "lake-sink"):
            check = _healthcheck(services_cfg[name], envs[name], tmp_path)
            assert check.returncode == 0, f"{name}: {check.stderr}"

        # 4. Events in: three straight onto events.raw (internal schema), two through the collector's HTTP API.
        direct = [_segment_event(f"device-direct-{i}", i) for i in range(3)]
        via_http = [_segment_event(f"device-http-{i}", 10 + i) for i in range(2)]
        _produce_raw(broker_address, compose["services"]["worker"]["environment"]["FIRSTMILE_TOPIC_PREFIX"]
                     + "events.raw", direct)
        assert _post_batch(collector_port, via_http) == 200
        wanted = {e["messageId"] for e in direct + via_http}

        # 5. Out: every event decided by the worker on dest.warehouse, and written to the lake by the lake sink.
        seen = _read_topic_from_start(broker_address, "dest.warehouse", wanted, running)
        assert wanted <= seen, f"missing on dest.warehouse: {wanted - seen}\n" + "\n".join(s.tail() for s in running)
        lake = data("lake-sink") / "lake"
        deadline = time.monotonic() + 30
        while not wanted <= _lake_event_ids(lake) and time.monotonic() < deadline:
            assert all(s.alive() for s in running), "\n".join(s.tail() for s in running)
            time.sleep(0.5)
        assert wanted <= _lake_event_ids(lake), "\n".join(s.tail() for s in running)
    finally:
        for service in reversed(running):
            stopped_on_sigterm[service.name] = service.stop()

    # 6. `docker stop` sends SIGTERM and waits stop_grace_period (30 s): each service must exit on it in time.
    assert stopped_on_sigterm == {"collector": True, "lake-sink": True, "worker": True}, stopped_on_sigterm
