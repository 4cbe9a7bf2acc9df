"""The warehouse tier's settings: what dbt and DuckDB access need. One frozen object, read when asked.

Every variable is listed in ``.env.example`` (tests/deploy/test_env_example.py holds that list to the fields).
Nothing is read at import time: an entry point reads them (as part of the orchestration tier's settings, which
extend these: orchestration/settings.py) and passes the object, or the values it needs, down; dbt, a child
process, gets them as environment variables (:meth:`WarehouseSettings.dbt_env`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from warehouse.layout import DEFAULT_DATA_DIR, DataLayout


class WarehouseSettings(BaseSettings):
    """Where the DuckDB file and the landing zone are, and where DuckDB finds a landing zone on S3.

    The DuckDB file is always ``<data_dir>/warehouse.duckdb`` (:class:`DataLayout`); the lake is the data
    directory's ``lake/`` unless ``FIRSTMILE_LAKE_URI`` points DuckDB elsewhere. S3 credentials are not settings of
    firstmile: DuckDB and the AWS SDKs read ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` themselves (the compose
    file sets them from ``FIRSTMILE_S3_ACCESS_KEY_ID`` / ``FIRSTMILE_S3_SECRET_ACCESS_KEY``), so no secret passes
    through this object.
    """

    # An empty variable counts as unset (compose passes `${FIRSTMILE_LAKE_URI:-}` through as an empty string).
    model_config = SettingsConfigDict(env_prefix="FIRSTMILE_", frozen=True, extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(default=Path(DEFAULT_DATA_DIR), description="FIRSTMILE_DATA_DIR: all local state.")
    lake_uri: str = Field(default="", description="FIRSTMILE_LAKE_URI: where dbt reads the landing zone, e.g. "
                          "s3://firstmile-lake/lake (DuckDB httpfs). Empty: <data_dir>/lake.")
    s3_endpoint: str = Field(default="", description="FIRSTMILE_S3_ENDPOINT: host:port DuckDB's httpfs uses.")
    s3_region: str = Field(default="", description="FIRSTMILE_S3_REGION.")
    s3_url_style: Literal["", "path", "vhost"] = Field(default="", description="FIRSTMILE_S3_URL_STYLE.")
    s3_use_ssl: bool | None = Field(default=None, description="FIRSTMILE_S3_USE_SSL; unset: DuckDB's default.")

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_dir.resolve())

    @property
    def duckdb_path(self) -> Path:
        return self.layout.duckdb_path

    @property
    def lake_location(self) -> str:
        """Where dbt reads the landing zone: ``lake_uri`` without its trailing slash when set, else the data
        directory's local lake."""
        uri = self.lake_uri.strip()
        return uri.rstrip("/") if uri else str(self.layout.lake)

    def dbt_env(self) -> dict[str, str]:
        """The variables dbt reads (profiles.yml, macros/lake.sql, macros/regulations.sql): the DuckDB file, the lake
        and the erasure trail (always the data directory's, :attr:`DataLayout.regulations`), plus the S3
        settings that are set when the lake is remote. dbt gets them on top of its parent's environment."""
        lake = self.lake_location
        out = {"FIRSTMILE_DUCKDB_PATH": str(self.duckdb_path), "FIRSTMILE_LAKE_DIR": lake,
               "FIRSTMILE_REGULATIONS_DIR": str(self.layout.regulations)}
        if "://" in lake:
            s3 = {"FIRSTMILE_S3_ENDPOINT": self.s3_endpoint, "FIRSTMILE_S3_REGION": self.s3_region,
                  "FIRSTMILE_S3_URL_STYLE": self.s3_url_style,
                  "FIRSTMILE_S3_USE_SSL": "" if self.s3_use_ssl is None else str(self.s3_use_ssl).lower()}
            out.update({name: value for name, value in s3.items() if value})
        return out
