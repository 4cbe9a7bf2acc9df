"""Run the real dbt CLI against a landing zone and a DuckDB file in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DBT = Path(sys.executable).with_name("dbt")


def run_dbt(command: list[str], *, lake: Path, workdir: Path, vars_yaml: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``dbt <command> --project-dir dbt_project --profiles-dir dbt_project`` with paths under ``workdir``."""
    env = dict(os.environ,
               FIRSTMILE_DUCKDB_PATH=str(workdir / "warehouse.duckdb"),
               FIRSTMILE_LAKE_DIR=str(lake),
               DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    args = [str(DBT), *command, "--project-dir", "dbt_project", "--profiles-dir", "dbt_project",
            "--target-path", str(workdir / "target"), "--log-path", str(workdir / "logs")]
    if vars_yaml:
        args += ["--vars", vars_yaml]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
