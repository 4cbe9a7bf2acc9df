"""`firstmile up` starts every component, each answers on its address, and Ctrl-C stops every process it started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.orchestration.processes import alive, platform_tree

pytestmark = pytest.mark.integration

ADDRESS = re.compile(r"^\s+(Kafka broker|collector \(Segment HTTP API\)|serving \(live profile API\)|Dagster UI|"
                     r"MLflow UI|dev write key|server key \(profiles, erasure\))\s+(\S+)")


def _read_until_up(proc: subprocess.Popen[str], timeout: float) -> tuple[dict[str, str], list[str]]:
    """Read the platform's output on a thread until it prints its addresses."""
    found: dict[str, str] = {}
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            match = ADDRESS.match(line)
            if match:
                found[match.group(1)] = match.group(2)
            if line.startswith("Ctrl-C stops everything"):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"firstmile up did not come up (exit {proc.returncode}):\n" + "".join(lines))
    return found, lines


def _get(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def test_up_starts_every_component_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BROKER_ADDRESS", "FIRSTMILE_WRITE_KEYS", "FIRSTMILE_SERVER_KEYS")}
    env["FIRSTMILE_WRITE_KEYS"] = "test-key-123:web"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "--data-dir", str(tmp_path / "data"), "up",
                             "--workers", "2", "--collector-port", "0", "--serving-port", "0", "--dagster-port", "0",
                             "--mlflow-port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tree: set[int] = set()
    try:
        addresses, output = _read_until_up(proc, timeout=180)
        startup_s = time.monotonic() - started
        assert set(addresses) == {"Kafka broker", "collector (Segment HTTP API)", "serving (live profile API)",
                                  "Dagster UI", "MLflow UI", "dev write key", "server key (profiles, erasure)"}
        assert addresses["dev write key"] == "test-key-123"
        collector, dagster, mlflow = (addresses["collector (Segment HTTP API)"], addresses["Dagster UI"],
                                      addresses["MLflow UI"])

        assert _get(f"{collector}/healthz") == (200, b'{"status":"ok"}')
        import base64

        auth = base64.b64encode(b"test-key-123:").decode()
        status, body = _get(f"{collector}/v1/track", data=json.dumps({
            "type": "track", "event": "Product Viewed", "anonymousId": "anon-up-1", "messageId": "m-up-1",
            "timestamp": "2026-11-23T10:00:00Z", "context": {"ip": "8.8.8.8"}}).encode(),
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        assert status == 200 and json.loads(body)["success"] is True
        # the website reads the visitor's live profile once it reflects that event (read-your-writes)
        token = json.loads(body)["token"]
        server = base64.b64encode(f"{addresses['server key (profiles, erasure)']}:".encode()).decode()
        profile_url = f"{addresses['serving (live profile API)']}/v1/profiles?anonymousId=anon-up-1&after={token}"
        deadline = time.monotonic() + 60
        while True:  # the workers join their group first (a few seconds on Tansu)
            status, body = _get(profile_url + "&wait_ms=5000", headers={"Authorization": f"Basic {server}"})
            if (status == 200 and not json.loads(body)["stale"]) or time.monotonic() > deadline:
                break
        assert status == 200 and json.loads(body)["features"]["session_event_count"] == 1, body

        query = json.dumps({"query": "{ version assetNodes { assetKey { path } } }"}).encode()
        status, body = _get(f"{dagster}/graphql", data=query, headers={"Content-Type": "application/json"})
        data = json.loads(body)["data"]
        assert status == 200 and data["version"]
        keys = {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]}
        assert {"events_raw", "landing_zone", "published_policy", "control_policy"} <= keys

        assert _get(f"{mlflow}/health")[0] == 200
        status, body = _get(f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=10")
        assert status == 200 and "experiments" in json.loads(body)

        # the event went through the hot path and the lake sink into the landing zone
        lake = tmp_path / "data" / "lake"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(lake.rglob("*.parquet")):
            time.sleep(0.5)
        assert list(lake.rglob("*.parquet")), "the collected event never reached the lake"

        tree = platform_tree(proc.pid)
        # broker, collector, 2 workers, lake sink, dagster dev (+ webserver, daemon, code server), mlflow (+ uvicorn)
        assert len(tree) >= 8, tree
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
        time.sleep(0.5)  # let the reader thread drain the last lines
        out = "".join(output)
        assert proc.returncode == 0, out
        assert "firstmile stopped." in out
        deadline = time.monotonic() + 10
        while alive(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(tree) == set(), f"left running after Ctrl-C: {sorted(alive(tree))}"
        print(f"firstmile up ready in {startup_s:.1f}s with {len(tree)} processes")
    finally:
        if proc.poll() is None:
            tree = tree or platform_tree(proc.pid)
            proc.kill()
            proc.wait()
        for pid in alive(tree):
            os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _pids_running(root: int, module: str, *, lanes: bool = False) -> set[int]:
    """Live processes under ``root`` running ``python -m module`` (``lanes``: only the delivery lanes)."""
    found = set()
    for pid in alive(platform_tree(root)):
        argv = _cmdline(pid)
        if module in argv and ("--lane" in argv) == lanes:
            found.add(pid)
    return found


def test_up_restarts_a_killed_delivery_or_serving_child_while_the_collector_keeps_answering(tmp_path: Path) -> None:
    """kill -9 of the delivery service (with its lanes) and of the serving API under `firstmile up`: each comes back
    alone, the killed delivery's lanes do not run on beside the new ones, and the collector never stops answering.
    kill -9 of the embedded broker then stops the whole platform (exit 1), leaving no process behind."""
    destinations = tmp_path / "destinations.yml"
    destinations.write_text("destinations:\n  - {id: hook, type: webhook, topic: dest.sales, "
                            "url: 'http://127.0.0.1:9/none'}\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BROKER_ADDRESS", "FIRSTMILE_WRITE_KEYS", "FIRSTMILE_SERVER_KEYS")}
    env.update(FIRSTMILE_WRITE_KEYS="test-key-123:web", FIRSTMILE_DESTINATIONS_FILE=str(destinations))
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "--data-dir", str(tmp_path / "data"), "up",
                             "--collector-port", "0", "--serving-port", "0", "--no-dagster", "--no-mlflow"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tree: set[int] = set()
    failures: list[str] = []
    answered = 0
    polling = threading.Event()
    try:
        addresses, output = _read_until_up(proc, timeout=180)
        collector, serving = addresses["collector (Segment HTTP API)"], addresses["serving (live profile API)"]
        deadline = time.monotonic() + 60
        while len(_pids_running(proc.pid, "streaming.delivery", lanes=True)) < 2:  # fresh + retry lane
            assert time.monotonic() < deadline, "the delivery lanes never started:\n" + "".join(output)
            time.sleep(0.5)
        (delivery,) = _pids_running(proc.pid, "streaming.delivery")
        old_lanes = _pids_running(proc.pid, "streaming.delivery", lanes=True)
        (serving_pid,) = _pids_running(proc.pid, "streaming.serving")
        collector_pids = _pids_running(proc.pid, "streaming.collector")

        def poll_collector() -> None:
            nonlocal answered
            while not polling.is_set():
                try:
                    assert _get(f"{collector}/healthz")[0] == 200
                    answered += 1
                except Exception as exc:  # noqa: BLE001 - any failure to answer is what this test counts
                    failures.append(repr(exc))
                time.sleep(0.1)

        poller = threading.Thread(target=poll_collector, daemon=True)
        poller.start()
        os.kill(delivery, signal.SIGKILL)
        os.kill(serving_pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while True:
            new_delivery = _pids_running(proc.pid, "streaming.delivery") - {delivery}
            new_lanes = _pids_running(proc.pid, "streaming.delivery", lanes=True) - old_lanes
            new_serving = _pids_running(proc.pid, "streaming.serving") - {serving_pid}
            if new_delivery and len(new_lanes) == 2 and new_serving and _ok(f"{serving}/readyz"):
                break
            assert time.monotonic() < deadline and proc.poll() is None, "".join(output)
            time.sleep(0.5)
        time.sleep(2)
        polling.set()
        poller.join(5)
        out = "".join(output)
        assert f"delivery exited with {-signal.SIGKILL}" in out and f"serving exited with {-signal.SIGKILL}" in out
        assert "delivery restarted (pid" in out and "serving restarted (pid" in out
        assert alive(old_lanes) == set(), "the killed delivery service's lanes kept running"
        assert _pids_running(proc.pid, "streaming.collector") == collector_pids  # never restarted
        assert failures == [] and answered > 10, (failures, answered)
        print("".join(line for line in output if "exited with" in line or "restarted" in line)
              + f"collector answered {answered}/{answered} health checks meanwhile")
        assert proc.poll() is None, "firstmile up stopped"
        # the embedded broker is the one essential child: it held everything in memory, so its exit stops it all
        tree = platform_tree(proc.pid)
        (broker,) = {pid for pid in tree if any(a.endswith("tansu") for a in _cmdline(pid))}
        os.kill(broker, signal.SIGKILL)
        proc.wait(timeout=90)
        time.sleep(0.5)
        out = "".join(output)
        assert proc.returncode == 1, out
        assert "the embedded broker exited with -9" in out and "firstmile stopped." in out
        deadline = time.monotonic() + 10
        while alive(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(tree) == set(), f"left running after the broker died: {sorted(alive(tree))}"
    finally:
        polling.set()
        if proc.poll() is None:
            tree = tree or platform_tree(proc.pid)
            proc.kill()
            proc.wait()
        for pid in alive(tree):
            os.kill(pid, signal.SIGKILL)


def _ok(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except OSError:
        return False
