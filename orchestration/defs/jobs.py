"""Jobs: the loop (warehouse build → learning → gated publication) and the report."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.streaming import STREAMING_SPECS

LOOP_JOB = "loop"

#: Everything the loop materializes: the dbt models and the learning tier. Not the streaming tier's external
#: assets, not the day-partitioned landing summary (its own job), not the latency-impact report (run after the
#: traffic it measures, by the demo or by hand).
LOOP_SELECTION = (dg.AssetSelection.all()
                  - dg.AssetSelection.assets(*[s.key for s in STREAMING_SPECS])
                  - dg.AssetSelection.assets("landing_zone_day", "latency_impact_report"))

#: Runs with this tag write the DuckDB file; the instance's run queue runs one at a time (dagster.yaml, written by
#: warehouse.layout.DataLayout.ensure): the loop and the erasure job never build the warehouse at once.
DUCKDB_WRITER_TAGS = {"firstmile/duckdb": "writer"}

loop_job = dg.define_asset_job(LOOP_JOB, selection=LOOP_SELECTION, tags=DUCKDB_WRITER_TAGS,
                               description="Warehouse build → learning → gated publication (policy, identity "
                                           "merges, erasures)")

latency_impact_job = dg.define_asset_job("latency_impact", selection=["latency_impact_report"],
                                         description="First mile vs nightly batch on the same traffic")
