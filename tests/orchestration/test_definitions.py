"""The whole Dagster `Definitions` loads and its lineage reads from collection to the published policy."""

import dagster as dg

from orchestration.definitions import build_definitions


def test_definitions_load_with_lineage_from_events_raw_to_control_policy():
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = {"/".join(k.path) for k in graph.get_all_asset_keys()}
    assert {"events_raw", "landing_zone", "stg_events", "training_events", "propensity_model", "mined_bot_rules",
            "candidate_policy", "published_policy", "control_policy"} <= keys

    def upstream(key: str) -> set[str]:
        seen, todo = set(), [dg.AssetKey(key)]
        while todo:
            for parent in graph.get(todo.pop()).parent_keys:
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return {"/".join(k.path) for k in seen}

    assert {"events_raw", "landing_zone", "training_events", "candidate_policy"} <= upstream("control_policy")


def test_publication_is_gated_by_blocking_checks():
    from orchestration.defs.learning import candidate_policy, published_policy

    blocking = {spec.name for spec in candidate_policy.check_specs if spec.blocking}
    assert blocking == {"backtest_gate", "student_latency_budget", "student_fidelity"}
    assert dg.AssetKey("candidate_policy") in published_policy.asset_deps[dg.AssetKey("published_policy")]


def test_sensors_schedule_and_jobs_are_registered_and_the_loop_excludes_partitioned_and_report_assets():
    defs = build_definitions()
    assert {s.name for s in defs.sensors} == {"landing_zone_sensor", "quarantine_rate_sensor", "novelty_sensor",
                                              "regulations_sensor"}
    assert [s.name for s in defs.schedules] == ["daily_retrain"]
    loop_keys = {k.to_user_string() for k in defs.resolve_job_def("loop").asset_layer.executable_asset_keys}
    assert {"published_policy", "candidate_policy", "training_events", "published_control", "erasure_audit"} \
        <= loop_keys
    assert not {"landing_zone_day", "latency_impact_report", "landing_zone", "events_raw"} & loop_keys
    report = defs.resolve_assets_def("latency_impact_report")
    assert report.group_names_by_key[dg.AssetKey("latency_impact_report")] == "reports"


def test_control_publication_follows_the_identity_and_erasure_marts_and_is_gated_by_blocking_checks():
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("published_control")).parent_keys}
    assert {"identity_merges", "erasure_suppression_list"} <= parents
    children = {k.to_user_string() for k in graph.get(dg.AssetKey("published_control")).child_keys}
    assert children == {"control_identity", "control_erasure"}
    from orchestration.defs.control import published_control

    assert {spec.name for spec in published_control.check_specs if spec.blocking} == {
        "no_merge_cycle", "one_survivor_per_profile", "no_merge_of_erased_profile"}
    erasure = defs.resolve_job_def("erasure")
    assert erasure.tags["firstmile/duckdb"] == defs.resolve_job_def("loop").tags["firstmile/duckdb"] == "writer"
