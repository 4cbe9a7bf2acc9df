"""The HTTP collector: the Segment tracking API in, acknowledged events on ``events.raw`` out.

Run it with ``python -m streaming.collector`` (settings from the environment, ``KAFKA_BROKER_ADDRESS`` required).
"""

from streaming.collector.app import MAX_BATCH_BYTES, Collector, Reject, create_app
from streaming.collector.config import CollectorSettings, WriteKey, load_collector_settings, parse_write_keys
from streaming.collector.openapi import openapi_document
from streaming.collector.ratelimit import TokenBucket
from streaming.collector.sink import BrokerUnavailable, KafkaSink

__all__ = [
    "MAX_BATCH_BYTES", "BrokerUnavailable", "Collector", "CollectorSettings", "KafkaSink", "Reject", "TokenBucket",
    "WriteKey", "create_app", "load_collector_settings", "openapi_document", "parse_write_keys",
]
