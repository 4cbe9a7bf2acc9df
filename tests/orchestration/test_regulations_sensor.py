"""``regulations_sensor`` on a real broker: one ``erasure`` run per ``SUPPRESS_WITH_DELETE`` request and state it
shows, none for a request that is finished, a plain ``SUPPRESS``, or one whose run is in flight; nothing without a
broker."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from orchestration.defs.regulations import ERASURE_JOB, REGULATION_TAG, erasure_job, regulations_sensor
from orchestration.resources import FirstmileResource
from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics
from streaming.regulations import new_regulation, publish_regulation, suppress_at_edge, with_state
from streaming.settings import StreamingSettings

pytestmark = pytest.mark.integration


def _evaluate(instance: dg.DagsterInstance, cursor: str | None, resource: FirstmileResource
              ) -> tuple[list[dg.RunRequest], str | None, list[str]]:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"firstmile": resource})
    result = list(regulations_sensor(context))
    return ([r for r in result if isinstance(r, dg.RunRequest)], context.cursor,
            [r.skip_message for r in result if isinstance(r, dg.SkipReason)])


def test_sensor_requests_one_erasure_run_per_new_state_of_an_open_deletion_request(tmp_path):
    broker = EmbeddedBroker.start(log_path=tmp_path / "broker.log")
    try:
        settings = StreamingSettings(data_dir=tmp_path, KAFKA_BROKER_ADDRESS=broker.address)  # type: ignore[call-arg]
        create_topics(broker.address, settings)
        erasure, regulations = settings.topic(topics.CONTROL_ERASURE), settings.topic(topics.CONTROL_REGULATIONS)
        resource = FirstmileResource(data_dir=str(tmp_path), kafka_broker_address=broker.address)
        with dg.DagsterInstance.ephemeral() as instance:
            requests, cursor, skips = _evaluate(instance, None, resource)
            assert requests == [] and "0 erasure requests open" in skips[0]

            delete = suppress_at_edge(broker.address, erasure, regulations,
                                      new_regulation("SUPPRESS_WITH_DELETE", "USER_ID", ["u-1"]))
            suppress_at_edge(broker.address, erasure, regulations, new_regulation("SUPPRESS", "USER_ID", ["u-2"]))
            requests, cursor, _ = _evaluate(instance, cursor, resource)
            assert [(r.run_key, r.job_name) for r in requests] == [(f"{delete.id}:2", ERASURE_JOB)]
            assert requests[0].run_config == {"ops": {"erase_request": {"config": {"request_id": delete.id}}}}
            assert requests[0].tags[REGULATION_TAG] == delete.id
            assert requests[0].tags["firstmile/duckdb"] == "writer"

            # nothing new: not requested again
            requests, cursor, _ = _evaluate(instance, cursor, resource)
            assert requests == []

            # a run for it is in flight: the states it publishes do not start another one
            instance.create_run_for_job(erasure_job, run_config={
                "ops": {"erase_request": {"config": {"request_id": delete.id}}}},
                tags={REGULATION_TAG: delete.id}, status=dg.DagsterRunStatus.STARTED)
            delete = with_state(delete, "lake_rewritten", {"rows_removed": 3})
            publish_regulation(broker.address, regulations, delete)
            requests, cursor, _ = _evaluate(instance, cursor, resource)
            assert requests == []

        with dg.DagsterInstance.ephemeral() as instance:
            # the run died at lake_rewritten: a new state the sensor has not requested for → one new run
            requests, cursor, _ = _evaluate(instance, cursor, resource)
            assert [r.run_key for r in requests] == [f"{delete.id}:3"]

            publish_regulation(broker.address, regulations, with_state(delete, "done"))
            requests, cursor, skips = _evaluate(instance, cursor, resource)
            assert requests == [] and json.loads(cursor or "{}") == {}  # finished requests leave the cursor

            requests, _, skips = _evaluate(instance, None, FirstmileResource(data_dir=str(tmp_path)))
            assert requests == [] and "no broker configured" in skips[0]
    finally:
        broker.stop()
