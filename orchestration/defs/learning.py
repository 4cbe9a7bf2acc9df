"""The learning tier's assets: propensity teacher/student → mined rules → candidate policy (backtested, gated) →
published policy. Bodies only call ml/ and streaming/; the gate's checks are blocking, so a failed check stops the
publish step and the UI shows why."""


from collections.abc import Iterator
from typing import Any

import dagster as dg

from orchestration.resources import FirstmileResource

OWNER = "team:learning"
TRAINING = dg.AssetKey("training_events")
BOT_LABELS = dg.AssetKey("bot_labels")


@dg.asset(deps=[TRAINING], group_name="learning", kinds={"sklearn", "mlflow"}, owners=[OWNER])
def propensity_model(firstmile: FirstmileResource) -> dg.Output[dict[str, Any]]:
    """Teacher (HistGradientBoosting, full history) and the distilled first-mile student, logged to MLflow."""
    from ml.loop import train_propensity_run

    settings = firstmile.settings()
    result = train_propensity_run(settings.layout.ensure(), tracking_uri=settings.tracking_uri)
    metrics = {k: dg.MetadataValue.float(float(v)) for k, v in result["metrics"].items() if v is not None}
    # a head without enough labels of each class keeps the champion's model: said here, in MLflow and in the gate
    skipped = {f"kept_champion_{head}": reason for head, reason in (result.get("skipped") or {}).items()}
    return dg.Output(result, metadata={"mlflow_run_id": result["run_id"], "rows": result["rows"], **metrics,
                                       **skipped})


@dg.asset(deps=[TRAINING, BOT_LABELS], group_name="learning", kinds={"sklearn"}, owners=[OWNER])
def mined_bot_rules(firstmile: FirstmileResource) -> dg.Output[list[dict[str, Any]]]:
    """Bot signatures the current policy missed, mined from hindsight labels, with their evidence."""
    from ml.loop import mine_rules

    rules = mine_rules(firstmile.layout)
    return dg.Output(rules, metadata={"rules": len(rules), "preview": dg.MetadataValue.json(
        [{"id": r["id"], "when": r["when"], "evidence": r["evidence"]} for r in rules][:10])})


class GateThresholds(dg.Config):  # type: ignore[misc]
    """The gate's thresholds, as run config (the launchpad shows them); defaults are ``ml.candidate.GateConfig``'s."""

    latency_budget_us: float = 50.0
    max_auc_gap: float = 0.02
    max_extra_human_fp_rate: float = 0.001


@dg.asset(
    group_name="learning", kinds={"duckdb", "mlflow"}, owners=[OWNER],
    check_specs=[
        dg.AssetCheckSpec("backtest_gate", asset="candidate_policy", blocking=True,
                          description="Candidate beats the champion on history; consent identical or stricter."),
        dg.AssetCheckSpec("student_latency_budget", asset="candidate_policy", blocking=True,
                          description="The student's per-event cost is within the hot path's budget."),
        dg.AssetCheckSpec("student_fidelity", asset="candidate_policy", blocking=True,
                          description="Student AUC within 0.02 of the teacher's."),
    ],
)
def candidate_policy(config: GateThresholds, firstmile: FirstmileResource, propensity_model: dict[str, Any],
                     mined_bot_rules: list[dict[str, Any]]) -> Iterator[Any]:
    """Champion + student + mined rules, replayed over the lake in DuckDB against the champion."""
    from ml.candidate import GateConfig
    from ml.loop import build_and_backtest, current_champion

    settings = firstmile.settings()
    layout, uri = settings.layout.ensure(), settings.tracking_uri
    gate_config = GateConfig(latency_budget_us=config.latency_budget_us, max_auc_gap=config.max_auc_gap,
                             max_extra_human_fp_rate=config.max_extra_human_fp_rate)
    outcome = build_and_backtest(layout, champion=current_champion(layout, tracking_uri=uri),
                                 training=propensity_model, mined=mined_bot_rules, gate_config=gate_config,
                                 tracking_uri=uri)
    bt, gate = outcome["backtest"], outcome["gate"]
    checks = gate["checks"]
    yield dg.Output(outcome, metadata={
        "policy_version": outcome["candidate"]["policy_version"],
        "description": outcome["candidate"]["description"],
        "backtest": dg.MetadataValue.json(bt), "gate_passed": gate["passed"],
        "gate_reasons": dg.MetadataValue.json(gate["reasons"]),
        "kept_champion_heads": dg.MetadataValue.json(outcome.get("kept_heads") or {})})
    gate_keys = {"backtest_gate": ["consent_identical_or_stricter", "bots_not_fewer", "humans_not_harmed",
                                   "better_than_champion"],
                 "student_latency_budget": ["student_latency_budget"], "student_fidelity": ["student_fidelity"]}
    for check_name, keys in gate_keys.items():
        failed = [k for k in keys if checks.get(k) is False]
        yield dg.AssetCheckResult(check_name=check_name, passed=not failed,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  metadata={"failed": dg.MetadataValue.json(failed),
                                            "reasons": dg.MetadataValue.json(gate["reasons"])})


@dg.asset(group_name="learning", kinds={"kafka", "mlflow"}, owners=[OWNER])
def published_policy(firstmile: FirstmileResource, propensity_model: dict[str, Any],
                     candidate_policy: dict[str, Any]) -> dg.Output[dict[str, Any]]:
    """Register the candidate, move MLflow's ``champion`` alias to it and publish it to ``control.policy``.

    Runs only when every blocking check on the candidate passed.
    """
    from ml.loop import register_and_promote
    from streaming.control import publish_policy
    from streaming.settings import CONTROL_POLICY

    settings = firstmile.streaming_settings()
    if settings.embedded:
        raise dg.Failure("KAFKA_BROKER_ADDRESS is not set: the publish step needs the platform's broker "
                         "(start it with `firstmile up`)")
    candidate = candidate_policy["candidate"]
    gate = candidate_policy["gate"]
    if not gate["passed"]:
        # Belt and braces: the blocking checks mirror the gate, but a gate check no asset check maps must not
        # let a rejected candidate through either.
        raise dg.Failure(f"candidate policy v{candidate['policy_version']} did not pass the gate: "
                         + "; ".join(gate["reasons"]))
    orchestration = firstmile.settings()
    registered = register_and_promote(orchestration.layout.ensure(), candidate=candidate, training=propensity_model,
                                      gate=gate, tracking_uri=orchestration.tracking_uri,
                                      kept_heads=candidate_policy.get("kept_heads"))
    version = publish_policy(settings.kafka_broker_address, settings.topic(CONTROL_POLICY), candidate)
    return dg.Output({**registered, "published_version": version, "policy": candidate},
                     metadata={"policy_version": version, "model_version": registered["model_version"],
                               "previous_model_version": str(registered["previous"]),
                               "rules": dg.MetadataValue.json([{"id": r["id"], "mode": r.get("mode")}
                                                               for r in candidate["rules"]])})
