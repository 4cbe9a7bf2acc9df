"""The latency-impact report as an asset: first mile vs batch-only on the traffic in the landing zone."""


import dagster as dg

from orchestration.resources import FirstmileResource

#: The report reads decided events only through these warehouse models (one dedupe; orchestration/decided_events.py).
DECIDED_MODELS = [dg.AssetKey("stg_decided"), dg.AssetKey("stg_deliveries")]


@dg.asset(deps=DECIDED_MODELS, group_name="reports", kinds={"duckdb", "matplotlib"}, owners=["team:first-mile"])
def latency_impact_report(firstmile: FirstmileResource) -> dg.MaterializeResult:
    """Side by side, on the same traffic: what the first mile did and what decisions applied at the next nightly run
    would have done (consent after revocation, bots reaching analytics and marketing, in-session personalization
    and sales routing, time to enforce a new bot pattern). HTML with plots in ``<data_dir>/reports``."""
    from orchestration.report import METRICS, compute, write

    data_dir = firstmile.layout.root
    report = compute(data_dir)
    path = write(report, data_dir)
    metadata: dict[str, object] = {"path": dg.MetadataValue.path(str(path)), "events": report.events,
                                   "bot_labels": report.labels,
                                   "lake_files_pending": report.lake_files_pending, "summary": dg.MetadataValue.md(
                                       "```\n" + report.to_text().strip() + "\n```")}
    for key in METRICS:
        for side, value in report.metrics[key].items():
            metadata[f"{key}.{side}"] = value
    for side, seconds in report.enforcement_s.items():
        metadata[f"bot_pattern_enforcement_hours.{side}"] = dg.MetadataValue.float(
            float("nan") if seconds is None else round(seconds / 3600, 2))
    return dg.MaterializeResult(metadata=metadata)  # type: ignore[arg-type]
