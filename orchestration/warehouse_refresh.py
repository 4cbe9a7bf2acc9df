"""Bring the warehouse's decided-event models up to the landing zone before something reads them.

The loop builds the warehouse when it runs; traffic decided after that (the demo's second day) is in the lake but
not in ``stg_decided`` until the next build. A report on that traffic first materializes the decided-event
models with the loop's own dbt asset (:func:`orchestration.defs.warehouse.build_dbt_assets`: ``dbt build`` of the
selected models, their dbt tests as asset checks), in Dagster, so the run and its lineage show in the UI like the
loop's. The learning marts (``training_events``, ...) are left as the loop built them: they are what the loop
learned from, and the report replays the nightly learner on exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from streaming.errors import FirstmileError

#: The warehouse models that define a decided event and its deliveries (with everything they read, but the
#: streaming tier's external assets).
DECIDED_MODELS = ("stg_decided", "stg_deliveries", "stg_dlq")


class WarehouseBuildError(FirstmileError, RuntimeError):
    """The Dagster run that builds the decided-event models failed."""


def build_decided_models(defs: dg.Definitions, instance: dg.DagsterInstance, *,
                         run_config: Mapping[str, Any] | None = None) -> list[str]:
    """Materialize :data:`DECIDED_MODELS` and the dbt models and seeds they read, in-process, with ``defs`` (the
    code location, its ``firstmile`` resource pointing at the data directory) on ``instance`` (the data
    directory's, so the run shows in its UI). Returns the materialized asset keys; raises
    :class:`WarehouseBuildError` naming the run when it fails."""
    from orchestration.defs.streaming import STREAMING_SPECS

    selection = (dg.AssetSelection.assets(*DECIDED_MODELS).upstream()
                 - dg.AssetSelection.assets(*[spec.key for spec in STREAMING_SPECS]))
    keys = sorted(selection.resolve(defs.resolve_asset_graph()))
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=keys, run_config=dict(run_config or {}), raise_on_error=False)
    if not result.success:
        raise WarehouseBuildError(f"building {', '.join(DECIDED_MODELS)} failed in Dagster run {result.run_id}; "
                                  "see the run's logs in the Dagster UI")
    return sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
                   if e.asset_key is not None})
