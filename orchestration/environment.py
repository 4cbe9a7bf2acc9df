"""The environment (local / ci / prod), resolved in one place. Nothing here runs at import time."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from warehouse.layout import DataLayout

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


def environment() -> str:
    """``FIRSTMILE_ENV``: local (default), ci or prod."""
    value = os.environ.get("FIRSTMILE_ENV", "local")
    if value not in ("local", "ci", "prod"):
        raise ValueError(f"FIRSTMILE_ENV must be local, ci or prod, got {value!r}")
    return value


def env_or_default(name: str, default: str) -> str | dg.EnvVar:
    """``dg.EnvVar(name)`` when ``name`` is set (resolved when a run starts, shown as env-sourced in the UI), else
    ``default``. ``dg.EnvVar`` has no default and fails the run when its variable is unset; this is called when the
    definitions are built (never at import), in the same environment the runs get.
    """
    return dg.EnvVar(name) if os.environ.get(name) else default


def lake_uri(layout: DataLayout, environ: Mapping[str, str] | None = None) -> str:
    """Where dbt reads the landing zone: ``FIRSTMILE_LAKE_URI`` when set (e.g. ``s3://firstmile-lake/lake``, read by
    DuckDB through httpfs in the production shape), else the data directory's local lake."""
    env = os.environ if environ is None else environ
    uri = env.get("FIRSTMILE_LAKE_URI", "").strip()
    return uri.rstrip("/") if uri else str(layout.lake)


#: S3 settings passed through to dbt when the lake is on S3 (profiles.yml configures httpfs from them).
S3_ENV = ("FIRSTMILE_S3_ENDPOINT", "FIRSTMILE_S3_REGION", "FIRSTMILE_S3_URL_STYLE", "FIRSTMILE_S3_USE_SSL",
          "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


def dbt_env(layout: DataLayout, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables dbt reads (profiles.yml and dbt_project.yml): the DuckDB file and the lake
    (``FIRSTMILE_LAKE_URI`` when set, see :func:`lake_uri`), plus the S3 settings when the lake is remote."""
    env = os.environ if environ is None else environ
    lake = lake_uri(layout, env)
    out = {"FIRSTMILE_DUCKDB_PATH": str(layout.duckdb_path), "FIRSTMILE_LAKE_DIR": lake}
    if "://" in lake:
        out.update({k: env[k] for k in S3_ENV if env.get(k)})
    return out


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
