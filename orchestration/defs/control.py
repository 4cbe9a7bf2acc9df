"""What the warehouse learned about people, published to the edge in the loop: ``published_control``.

Reads the ``identity_merges`` and ``erasure_suppression_list`` marts and the control topics, runs the blocking checks
(no cycle among the merges, one survivor per merged profile, no merge into or out of an erased profile), and only
when they pass publishes what ``control.identity`` / ``control.erasure`` do not hold yet. The checks are evaluated
before anything is published: a failed one is recorded (the UI shows which merges and why) and the step fails
without publishing.
"""


from collections.abc import Generator, Iterator
from typing import Any

import dagster as dg

from orchestration.resources import FirstmileResource

OWNER = "team:warehouse"
IDENTITY_MERGES = dg.AssetKey("identity_merges")
SUPPRESSION_LIST = dg.AssetKey("erasure_suppression_list")

CHECKS = [
    dg.AssetCheckSpec("no_merge_cycle", asset="published_control", blocking=True,
                      description="The merges (with those control.identity holds) form chains ending in a "
                                  "survivor: no cycle."),
    dg.AssetCheckSpec("one_survivor_per_profile", asset="published_control", blocking=True,
                      description="No merged profile is sent into two survivors (the topic keeps one per key)."),
    dg.AssetCheckSpec("no_merge_of_erased_profile", asset="published_control", blocking=True,
                      description="No merge starts or ends at an erased identifier (the suppression list's or "
                                  "control.erasure's)."),
]


@dg.asset(deps=[IDENTITY_MERGES, SUPPRESSION_LIST], group_name="control", kinds={"kafka", "duckdb"},
          owners=[OWNER], check_specs=CHECKS)
def published_control(firstmile: FirstmileResource) -> Iterator[Any]:
    """Identity merges (with the merged profile's consent) to ``control.identity`` and erased identifiers to
    ``control.erasure``, only those the topics do not hold yet; every worker applies them before its next event."""
    from orchestration.control_publish import check_control, plan_control, publish_control, read_control_state
    from warehouse.control import read_erasures, read_merges

    settings = firstmile.streaming_settings()
    if settings.embedded:
        raise dg.Failure("KAFKA_BROKER_ADDRESS is not set: the publish step needs the platform's broker "
                         "(start it with `firstmile up`)")
    address = settings.kafka_broker_address
    duckdb_path = firstmile.settings().duckdb_path
    merges, erasures = read_merges(duckdb_path), read_erasures(duckdb_path)
    state = read_control_state(address, settings)
    checks = check_control(merges, erasures, state)
    failed = yield from _check_results(checks)
    if failed:
        raise dg.Failure(f"nothing published: blocking checks failed ({', '.join(failed)})",
                         metadata={"failed_checks": dg.MetadataValue.json(failed)})
    plan = plan_control(merges, erasures, state)
    published = publish_control(address, settings, plan)
    after = read_control_state(address, settings).offsets
    # Counts and offsets only: Dagster's event log and IO manager keep what an asset returns, and a profile named
    # there would outlive its erasure.
    summary = {"merges_published": published["identity"], "erasures_published": published["erasure"],
               "merges_already_present": plan.merges_present, "erasures_already_present": plan.erasures_present,
               "merges_in_warehouse": len(merges), "erasures_in_warehouse": len(erasures),
               "control_identity_offset": after["identity"], "control_erasure_offset": after["erasure"]}
    yield dg.Output(summary, metadata=summary)


def _check_results(checks: Any) -> Generator[dg.AssetCheckResult, None, list[str]]:
    """Yield the three checks' results; return the names of those that failed."""
    found = {
        "no_merge_cycle": [" -> ".join([*c, c[0]]) for c in checks.cycles],
        "one_survivor_per_profile": [f"{source} -> {', '.join(targets)}"
                                     for source, targets in sorted(checks.ambiguous.items())],
        # the erased side is not named: the event log would keep it after the erasure
        "no_merge_of_erased_profile": [f"{'<erased>' if m.from_profile_id in checks.erased else m.from_profile_id}"
                                       f" -> {'<erased>' if m.to_profile_id in checks.erased else m.to_profile_id}"
                                       for m in checks.touching_erased],
    }
    failed = []
    for name, problems in found.items():
        if problems:
            failed.append(name)
        yield dg.AssetCheckResult(check_name=name, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
                                  metadata={"violations": len(problems),
                                            "examples": dg.MetadataValue.json(problems[:20])})
    return failed
