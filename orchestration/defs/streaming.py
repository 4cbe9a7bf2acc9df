"""The streaming tier as external assets: what the hot path produces, so lineage reads from collection to policy."""

from __future__ import annotations

import dagster as dg

OWNER = "team:first-mile"

events_raw = dg.AssetSpec("events_raw", description="Kafka topic events.raw: collected events, clear PII, short "
                          "retention. Keyed by device.", group_name="streaming", kinds={"kafka"}, owners=[OWNER])
hot_path_outputs = [
    dg.AssetSpec(name, deps=[events_raw], description=desc, group_name="streaming", kinds={"kafka"}, owners=[OWNER])
    for name, desc in [
        ("dest_warehouse", "Kafka topic dest.warehouse: consented (analytics), PII-hashed, decided events."),
        ("dest_marketing", "Kafka topic dest.marketing: product interest, marketing consent only."),
        ("dest_sales", "Kafka topic dest.sales: high-value sessions, sales consent only."),
        ("events_quarantine", "Kafka topic events.quarantine: bots, with the rules that caught them."),
        ("events_dlq", "Kafka topic events.dlq: invalid events with a machine-readable reason and original bytes."),
        ("events_suppressed", "Kafka topic events.suppressed: ledger-only records of events nobody may receive."),
        ("decisions", "Kafka topic decisions (compacted): per-profile personalization decision."),
    ]
]
landing_zone = dg.AssetSpec(
    "landing_zone", deps=[s.key for s in hot_path_outputs if s.key.path[0] != "decisions"],
    description="Parquet landing zone written by the lake sink, partitioned by stream and event date.",
    group_name="streaming", kinds={"parquet"}, owners=[OWNER])
control_policy = dg.AssetSpec(
    "control_policy", deps=["published_policy"], group_name="streaming", kinds={"kafka"}, owners=[OWNER],
    description="Compacted Kafka topic control.policy: every worker reads it as a broadcast and hot-swaps.")

control_identity = dg.AssetSpec(
    "control_identity", deps=["published_control"], group_name="streaming", kinds={"kafka"}, owners=[OWNER],
    description="Compacted Kafka topic control.identity: profile merges (key: the merged profile; value: the "
                "survivor and the merged profile's consent), applied by every worker before its next event.")
control_erasure = dg.AssetSpec(
    "control_erasure", deps=["published_control"], group_name="streaming", kinds={"kafka"}, owners=[OWNER],
    description="Compacted Kafka topic control.erasure: erased identifiers (from the warehouse's suppression list "
                "and POST /v1/regulations); every worker suppresses their events.")

STREAMING_SPECS = [events_raw, *hot_path_outputs, landing_zone, control_policy, control_identity, control_erasure]
