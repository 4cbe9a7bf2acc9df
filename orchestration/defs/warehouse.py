"""dbt models as Dagster assets (dagster-dbt); dbt tests become asset checks."""


import os
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from orchestration.environment import DBT_PROJECT_DIR, ensure_dbt_manifest
from orchestration.resources import FirstmileResource
from warehouse.settings import WarehouseSettings


class FirstmileDbtTranslator(DagsterDbtTranslator):
    """Group by tier, and make staging models depend on the landing zone (they read it with read_parquet)."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: Any) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id) or manifest.get("sources", {}).get(unique_id) or {}
        fqn = node.get("fqn", [])
        layer = fqn[1] if len(fqn) > 2 else "warehouse"
        spec = spec.replace_attributes(group_name="warehouse", owners=["team:warehouse"])
        spec = spec.merge_attributes(kinds={"duckdb"}, tags={"layer": layer})
        if node.get("resource_type") == "model" and layer == "staging":
            spec = spec.merge_attributes(deps=["landing_zone"])
        return spec


def build_dbt_assets(settings: WarehouseSettings) -> dg.AssetsDefinition:
    """The dbt models as assets; ``settings``: the code location's, used only if the manifest must be re-parsed
    (each run points dbt at its own resource's data directory and lake)."""
    manifest = ensure_dbt_manifest(settings)
    translator = FirstmileDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    @dbt_assets(manifest=manifest, dagster_dbt_translator=translator, name="warehouse_models")
    def warehouse_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                         firstmile: FirstmileResource) -> Iterator[Any]:
        # dbt reads where the lake and the DuckDB file are from the environment (profiles.yml, macros/lake.sql),
        # and dagster-dbt gives its dbt subprocess this process's environment only: set them there.
        run_settings = firstmile.settings()
        run_settings.layout.ensure()
        os.environ.update(run_settings.dbt_env())
        yield from dbt.cli(["build"], context=context).stream()

    return warehouse_models


def dbt_resource() -> DbtCliResource:
    from orchestration.environment import dbt_executable

    return DbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR),
                          dbt_executable=dbt_executable())
