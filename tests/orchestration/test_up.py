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
