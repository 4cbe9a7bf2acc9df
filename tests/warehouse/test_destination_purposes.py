"""dbt's ``destination_purposes`` seed (what the consent audit checks each delivery against) is a copy of the policy's
routing purposes; it must not drift from the policy the hot path enforces."""

import csv
from pathlib import Path

from streaming.policy import bootstrap_policy

SEED = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds" / "destination_purposes.csv"


def test_the_seed_lists_exactly_the_bootstrap_policys_routing_purposes():
    with SEED.open(newline="") as fh:
        seeded = {(row["destination"], row["purpose"]) for row in csv.DictReader(fh)}
    routed = {(dest, purpose) for dest, spec in bootstrap_policy()["routing"].items()
              for purpose in spec.get("purposes", [])}
    assert seeded == routed
