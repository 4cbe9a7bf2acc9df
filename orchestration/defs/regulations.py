"""Erasure requests in the loop: ``regulations_sensor`` → the ``erasure`` job.

The collector's ``POST /v1/regulations`` publishes the subjects to ``control.erasure`` (the edge drops their next
event) and the request to ``control.regulations`` (states ``received``, ``suppressed_at_edge``). For each
``SUPPRESS_WITH_DELETE`` request not finished, the sensor requests one run of ``erasure``, which takes it through:

1. its subjects become erasure requests for dbt (the erasure trail, ``stg_erasure_requests``); ``dbt build`` of the
   suppression list finds every identifier seen with them, and those the edge did not know are published to
   ``control.erasure`` at once;
2. ``lake_rewritten``: every lake file holding a row of an erased identifier rewritten without it;
3. ``warehouse_rebuilt``: ``dbt build`` of the whole project (incremental models rebuild when the erased set
   changes), so no relation but the suppression list and the requests hold the identifiers;
4. ``ml_artefacts_checked``: the MLflow store searched for them (runs, logged and registered models, their
   artefacts); a hit in a tag is removed, any other hit fails the request with where it is;
5. ``done``.

A step that raises marks the request ``failed`` with the step and the error's type (details in the run's log) and
fails the run; the sensor does not retry a failed request: re-run ``erasure`` from the launchpad with its
``request_id`` once the cause is fixed (every step is idempotent; states already reached keep their time).

The run key is the request id and its number of states, and the cursor remembers it: a request is requested once
per state it shows, never while a run for it is in flight. Runs of ``erasure`` and ``loop`` both write the DuckDB
file: their tag ``firstmile/duckdb=writer`` is limited to one run at a time by the instance's run queue
(``dagster.yaml``, :meth:`warehouse.layout.DataLayout.ensure`).
"""


import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource

from orchestration.defs.jobs import DUCKDB_WRITER_TAGS
from orchestration.resources import FirstmileResource

OWNER = "team:warehouse"
ERASURE_JOB = "erasure"
REGULATION_TAG = "firstmile/regulation"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


class ErasureRequestConfig(dg.Config):  # type: ignore[misc]
    """Which request to carry out (its id on ``control.regulations``)."""

    request_id: str


def _dbt_build(context: dg.OpExecutionContext, dbt: DbtCliResource, firstmile: FirstmileResource,
               select: list[str]) -> Iterator[Any]:
    """``dbt build`` (of ``select``, or everything), recorded as materializations of the dbt assets.

    Every erasure run on a data directory uses one target directory (runs of ``erasure`` never overlap: the run
    queue's DuckDB-writer limit), so only the first parses the project from scratch: dbt does whenever the profile
    changed since its last parse, and the DuckDB path is in it (~7 s per build saved)."""
    import hashlib
    import os

    from orchestration.defs.warehouse import FirstmileDbtTranslator
    from orchestration.environment import DBT_PROJECT_DIR, ensure_dbt_manifest

    settings = firstmile.settings()
    os.environ.update(settings.dbt_env())  # dagster-dbt gives dbt this process's environment
    args = ["build", *(["--select", *select, "--indirect-selection", "cautious"] if select else [])]
    place = hashlib.blake2b(str(settings.duckdb_path).encode(), digest_size=6).hexdigest()
    target = DBT_PROJECT_DIR / "target" / f"erasure-{place}"
    yield from dbt.cli(args, manifest=ensure_dbt_manifest(settings), dagster_dbt_translator=FirstmileDbtTranslator(),
                       context=context, target_path=target).stream()


@dg.op(out=dg.Out(dg.Nothing), tags={"kind": "dbt"})
def erase_request(context: dg.OpExecutionContext, config: ErasureRequestConfig, firstmile: FirstmileResource,
                  dbt: DbtCliResource) -> Iterator[Any]:
    """One erasure request through lake, warehouse and model store (the module docstring lists the steps)."""
    from orchestration import erasure_request as steps

    streaming = firstmile.streaming_settings()
    if streaming.embedded:
        raise dg.Failure("KAFKA_BROKER_ADDRESS is not set: requests live on the platform's control.regulations")
    run = steps.ErasureRun(streaming.kafka_broker_address, streaming, firstmile.settings())
    reg = steps.load_request(run, config.request_id)
    step = "trail"
    try:
        steps.record_received(run, reg)
        step = "identifiers"
        yield from _dbt_build(context, dbt, firstmile, ["+erasure_suppression_list"])
        found = steps.publish_found_identifiers(run, reg)
        context.log.info(f"identifiers found: {found}")
        step = "lake"
        reg = steps.advance(run, reg, "lake_rewritten", {**steps.rewrite_lake(run), "identifiers": found})
        step = "warehouse"
        yield from _dbt_build(context, dbt, firstmile, [])
        reg = steps.advance(run, reg, "warehouse_rebuilt", {"dbt": "build"})
        step = "ml_artefacts"
        scan = steps.check_ml_artefacts(run, reg)
        if scan.remaining:
            steps.advance(run, reg, "failed", {"step": step, **scan.summary()})
            raise dg.Failure(f"regulation {reg.id}: {len(scan.remaining)} MLflow artefacts still hold the "
                             "subject's identifiers", metadata={"scan": dg.MetadataValue.json(scan.summary())})
        reg = steps.advance(run, reg, "ml_artefacts_checked", scan.summary())
        reg = steps.advance(run, reg, "done")
    except dg.Failure:
        raise
    except Exception as exc:
        steps.advance(run, reg, "failed", {"step": step, "error": type(exc).__name__})
        raise
    context.add_output_metadata({"request_id": reg.id, "status": reg.status,
                                 "states": dg.MetadataValue.json([[s.state, s.at] for s in reg.states])})


@dg.job(name=ERASURE_JOB, tags=DUCKDB_WRITER_TAGS,
        description="One SUPPRESS_WITH_DELETE request: lake rewritten → warehouse rebuilt → ML artefacts checked")
def erasure_job() -> None:
    erase_request()


def _in_flight(instance: dg.DagsterInstance, request_id: str) -> bool:
    return bool(instance.get_run_ids(dg.RunsFilter(job_name=ERASURE_JOB, tags={REGULATION_TAG: request_id},
                                                   statuses=IN_FLIGHT), limit=1))


def run_request_for(request_id: str, states: int) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"{request_id}:{states}", job_name=ERASURE_JOB,
                         run_config={"ops": {"erase_request": {"config": {"request_id": request_id}}}},
                         tags={REGULATION_TAG: request_id, "firstmile/trigger": "regulations", **DUCKDB_WRITER_TAGS})


@dg.sensor(job=erasure_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="SUPPRESS_WITH_DELETE requests on control.regulations that are not finished → erasure runs")
def regulations_sensor(context: dg.SensorEvaluationContext, firstmile: FirstmileResource
                       ) -> Iterator[dg.RunRequest | dg.SkipReason]:
    from streaming import settings as topics
    from streaming.regulations import read_regulations

    settings = firstmile.streaming_settings()
    if settings.embedded:
        yield dg.SkipReason("no broker configured (KAFKA_BROKER_ADDRESS): no regulations topic to read")
        return
    requested: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    open_requests = [r for r in read_regulations(settings.kafka_broker_address,
                                                 settings.topic(topics.CONTROL_REGULATIONS))
                     if r.regulation_type == "SUPPRESS_WITH_DELETE" and not r.finished]
    started = 0
    for reg in sorted(open_requests, key=lambda r: r.received_at):
        states = len(reg.states)
        if requested.get(reg.id) == states or _in_flight(context.instance, reg.id):
            continue
        requested[reg.id] = states
        started += 1
        yield run_request_for(reg.id, states)
    # only open requests stay in the cursor: it does not grow with the history
    context.update_cursor(json.dumps({k: v for k, v in requested.items() if k in {r.id for r in open_requests}},
                                     sort_keys=True))
    if not started:
        yield dg.SkipReason(f"{len(open_requests)} erasure requests open, none needs a new run")
