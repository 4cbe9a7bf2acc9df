"""The environment (local / ci / prod), resolved in one place. Nothing here runs at import time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from warehouse.layout import DataLayout

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


def environment() -> str:
    """``FIRSTMILE_ENV``: local (default), ci or prod."""
    value = os.environ.get("FIRSTMILE_ENV", "local")
    if value not in ("local", "ci", "prod"):
        raise ValueError(f"FIRSTMILE_ENV must be local, ci or prod, got {value!r}")
    return value


def dbt_env(layout: DataLayout) -> dict[str, str]:
    """Environment variables dbt reads (profiles.yml and dbt_project.yml)."""
    return {"FIRSTMILE_DUCKDB_PATH": str(layout.duckdb_path), "FIRSTMILE_LAKE_DIR": str(layout.lake)}


def dbt_executable() -> str:
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"


def manifest_path() -> Path:
    return DBT_PROJECT_DIR / "target" / "manifest.json"


def ensure_dbt_manifest(*, force: bool = False) -> Path:
    """dagster-dbt needs the manifest before definitions load (``dbt parse`` ≈ 7 s): prepare it once, not per import.

    Re-parses when a model, macro or project file is newer than the manifest.
    """
    manifest = manifest_path()
    if manifest.exists() and not force:
        newest = max((p.stat().st_mtime for p in DBT_PROJECT_DIR.rglob("*")
                      if p.suffix in (".sql", ".yml", ".csv") and "target" not in p.parts), default=0)
        if newest <= manifest.stat().st_mtime:
            return manifest
    layout = DataLayout.from_env()
    env = {**os.environ, **dbt_env(layout)}
    subprocess.run([dbt_executable(), "parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
                    str(DBT_PROJECT_DIR), "--quiet"], check=True, env=env, cwd=DBT_PROJECT_DIR)
    return manifest
