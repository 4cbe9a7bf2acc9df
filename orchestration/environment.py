"""Where the dbt project is and how it is prepared. Nothing here runs at import time or reads settings: the entry
point's settings (orchestration/settings.py, where ``FIRSTMILE_ENV`` is resolved) are passed in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from warehouse.settings import WarehouseSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


def env_or_default(name: str, default: str) -> str | dg.EnvVar:
    """``dg.EnvVar(name)`` when ``name`` is set (resolved when a run starts, shown as env-sourced in the UI), else
    ``default``. ``dg.EnvVar`` has no default and fails the run when its variable is unset; this is called when the
    definitions are built (the code location's entry point, never a library import), in the same environment the
    runs get.
    """
    return dg.EnvVar(name) if os.environ.get(name) else default


def dbt_executable() -> str:
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"


def manifest_path() -> Path:
    return DBT_PROJECT_DIR / "target" / "manifest.json"


def ensure_dbt_manifest(settings: WarehouseSettings, *, force: bool = False) -> Path:
    """dagster-dbt needs the manifest before definitions load (``dbt parse`` ≈ 7 s): prepare it once, not per import.

    Re-parses when a model, macro or project file is newer than the manifest, with the variables dbt's runs get
    from ``settings`` (:meth:`WarehouseSettings.dbt_env`).
    """
    manifest = manifest_path()
    if manifest.exists() and not force:
        newest = max((p.stat().st_mtime for p in DBT_PROJECT_DIR.rglob("*")
                      if p.suffix in (".sql", ".yml", ".csv") and "target" not in p.parts), default=0)
        if newest <= manifest.stat().st_mtime:
            return manifest
    # The child inherits this process's environment (PATH, HOME, ...) with dbt's own variables on top.
    env = {**os.environ, **settings.dbt_env()}
    subprocess.run([dbt_executable(), "parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
                    str(DBT_PROJECT_DIR), "--quiet"], check=True, env=env, cwd=DBT_PROJECT_DIR)
    return manifest


def start_dbt_parse(settings: WarehouseSettings) -> subprocess.Popen[bytes]:
    """``dbt parse`` with ``settings``' variables, in the background. dbt parses a project from scratch whenever the
    profile changed since the last parse (the DuckDB path is in it: every data directory is a new profile), and
    dagster-dbt copies the project's ``partial_parse.msgpack`` into each run's target: once this parse is done, every
    dbt invocation on that data directory parses partially (~7 s saved on each). The demo starts it while its first
    day of traffic flows."""
    env = {**os.environ, **settings.dbt_env()}
    return subprocess.Popen([dbt_executable(), "parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
                             str(DBT_PROJECT_DIR), "--quiet"], env=env, cwd=DBT_PROJECT_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
