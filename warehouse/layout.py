"""Where every piece of local state lives: one data directory holds them all.

The data directory defaults to ``./data`` and is set with ``FIRSTMILE_DATA_DIR`` (read by each process's settings
at its entry point: streaming/settings.py, warehouse/settings.py, orchestration/settings.py; never here). Everything
the embedded runtime persists is under it, so deleting it resets the platform and pointing the UIs at it shows the
demo's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = "data"


@dataclass(frozen=True)
class DataLayout:
    """Paths under the data directory. Pure: building one creates nothing (call :meth:`ensure`)."""

    root: Path

    @property
    def lake(self) -> Path:
        """Landing zone: Parquet partitioned by stream and event date (see :mod:`warehouse.lake`)."""
        return self.root / "lake"

    @property
    def duckdb_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def state_dir(self) -> Path:
        """Quix Streams' local state (RocksDB); rebuilt from changelog topics when lost."""
        return self.root / "state"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def regulations(self) -> Path:
        """The erasure trail (:mod:`warehouse.erasure_trail`): the regulations API's erasure requests and the states
        they reached, which dbt reads (``stg_erasure_requests``, ``erasure_audit``)."""
        return self.root / "regulations"

    @property
    def policies(self) -> Path:
        """Every policy document ever built, by version: the audit trail beside the registry."""
        return self.root / "policies"

    def ensure(self) -> DataLayout:
        for path in (self.root, self.lake, self.mlflow_dir, self.mlflow_artifacts, self.dagster_home,
                     self.reports, self.policies, self.regulations):
            path.mkdir(parents=True, exist_ok=True)
        dagster_yaml = self.dagster_home / "dagster.yaml"
        if not dagster_yaml.exists() or dagster_yaml.read_text() == _DAGSTER_YAML_BEFORE_RUN_QUEUE:
            dagster_yaml.write_text(DAGSTER_YAML)
        return self


#: The embedded runtime's Dagster instance: an instance file silences Dagster's missing-instance warning
#: (STACK-FACTS.md); no telemetry; and the run queue runs one DuckDB writer at a time (the loop and the erasure
#: job, tagged ``firstmile/duckdb=writer``: a DuckDB file has one writer).
DAGSTER_YAML = """telemetry:
  enabled: false
run_queue:
  tag_concurrency_limits:
    - key: firstmile/duckdb
      value: writer
      limit: 1
"""
_DAGSTER_YAML_BEFORE_RUN_QUEUE = "telemetry:\n  enabled: false\n"
