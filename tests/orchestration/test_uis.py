"""The Dagster and MLflow UIs, rendered by a real headless Chromium on the demo's data.

Chromium flags from STACK-FACTS.md: without ``--virtual-time-budget=15000 --disable-dev-shm-usage`` the Dagster UI
renders blank. Both UIs are single-page apps: the asset names and the alias appear only in the rendered DOM, never
in the HTML the server sends (asserted, so the test cannot pass on a static page).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                  "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
#: The loop's lineage, from collection to the policy the workers read.
LINEAGE = ("events_raw", "landing_zone", "stg_events", "training_events", "candidate_policy", "published_policy",
           "control_policy")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium not found (install the Debian package: apt-get install -y chromium)")


def rendered_text(url: str, profile: Path) -> str:
    """The DOM after the app ran (``--dump-dom``), as visible text, from a fresh empty profile."""
    profile.mkdir(parents=True)
    out = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", out, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


def served_html(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8", "replace")


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not ready within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextmanager
def serve(argv: list[str], env: dict[str, str], log: Path, ready_url: str) -> Iterator[None]:
    """Run a UI server in its own process group; stop the whole group afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(ready_url, proc, log)
        yield
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def ui_env(demo_data):
    chromium()  # skip before running the demo or starting anything when there is no browser
    data_dir, _ = demo_data
    env = {**os.environ, "DAGSTER_HOME": str(data_dir / "dagster"), "FIRSTMILE_DATA_DIR": str(data_dir)}
    env.pop("KAFKA_BROKER_ADDRESS", None)
    return data_dir, env


@pytest.fixture(scope="module")
def dagster_server(ui_env, tmp_path_factory):
    from streaming.broker import free_port

    _, env = ui_env
    url = f"http://127.0.0.1:{free_port()}"
    bin_dir = Path(sys.executable).parent
    # the webserver alone (no daemon): the sensors must not start runs on the demo's data during the test
    with serve([str(bin_dir / "dagster-webserver"), "-m", "orchestration.definitions", "-h", "127.0.0.1",
                "-p", url.rsplit(":", 1)[1]], env, tmp_path_factory.mktemp("logs") / "dagster.log",
               f"{url}/server_info"):
        yield url


@pytest.fixture(scope="module")
def mlflow_server(ui_env, tmp_path_factory):
    from streaming.broker import free_port
    from warehouse.layout import DataLayout

    data_dir, env = ui_env
    url = f"http://127.0.0.1:{free_port()}"
    layout = DataLayout(data_dir)
    bin_dir = Path(sys.executable).parent
    with serve([str(bin_dir / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1", "--port",
                url.rsplit(":", 1)[1], "--backend-store-uri", layout.mlflow_tracking_uri, "--default-artifact-root",
                layout.mlflow_artifacts.as_uri()], {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
               tmp_path_factory.mktemp("logs") / "mlflow.log", f"{url}/health"):
        yield url


def test_dagster_asset_graph_shows_the_loop_from_collection_to_the_published_policy(dagster_server, tmp_path):
    url = dagster_server
    page = f"{url}/assets/control_policy?view=lineage&lineageScope=upstream&lineageDepth=20"
    text = rendered_text(page, tmp_path / "profile")
    missing = [name for name in LINEAGE if name not in text]
    assert missing == [], f"not in the rendered asset graph: {missing}\n{text[:2000]}"
    assert not any(name in served_html(page) for name in LINEAGE)  # rendered by the app, not sent as HTML

    overview = rendered_text(f"{url}/asset-groups", tmp_path / "profile2")
    for group in ("streaming", "warehouse", "learning", "reports"):
        assert group in overview


def test_mlflow_ui_shows_the_registered_model_with_its_champion_alias(mlflow_server, tmp_path):
    url = mlflow_server
    page = f"{url}/#/models/firstmile-propensity"
    text = rendered_text(page, tmp_path / "profile")
    assert "firstmile-propensity" in text
    assert re.search(r"\bchampion\b", text), text[:2000]
    assert "champion" not in served_html(page)
