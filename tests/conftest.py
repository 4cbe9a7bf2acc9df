"""One small demo run shared by every test that needs a whole platform's data (loop, report, gate, browser)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A data directory after ``firstmile demo`` with 60 users: lake, warehouse, MLflow with a champion, Dagster
    runs, truth.parquet and the latency-impact report. About two to three minutes on 2 cores.

    ``FIRSTMILE_TEST_DEMO_DIR=<dir>`` reuses a directory a previous ``firstmile --data-dir <dir> demo`` left (a
    shortcut while iterating on these tests; the tests only read it, the gate test works on a copy).
    """
    from orchestration.demo import DemoReport, run_demo

    reuse = os.environ.get("FIRSTMILE_TEST_DEMO_DIR")
    if reuse:
        import json

        data_dir = Path(reuse).resolve()
        doc = json.loads((data_dir / "reports" / "demo.json").read_text())
        return data_dir, DemoReport(**doc)
    data_dir = tmp_path_factory.mktemp("demo")
    report = run_demo(data_dir=data_dir, users=60, echo=False)
    return data_dir, report
