"""The collector's producer over the process's life: created and warmed at start-up (a cold producer's first
requests wait ~750 ms, STACK-FACTS.md), probed while running (``/readyz`` answers from the probe), flushed at
shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

from streaming.collector.config import CollectorSettings
from streaming.collector.sink import KafkaSink

logger = logging.getLogger(__name__)


class SinkLifecycle:
    """Starts, warms, probes and closes the collector's :class:`KafkaSink` (the ASGI lifespan calls it)."""

    def __init__(self, settings: CollectorSettings, topic: str, sink: KafkaSink | None = None) -> None:
        self.settings = settings
        self.topic = topic
        self.sink = sink
        self._probe_task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        s = self.settings
        if self.sink is None:
            if not s.kafka_broker_address:
                raise RuntimeError("KAFKA_BROKER_ADDRESS is required by the collector")
            self.sink = KafkaSink(s.kafka_broker_address, self.topic, linger_ms=s.collector_linger_ms,
                                  ack_timeout_ms=s.collector_ack_timeout_ms)
        loop = asyncio.get_running_loop()
        # Warm the producer: connect, get the producer id and the topic's leaders before the first request.
        started = time.monotonic()
        ok = await loop.run_in_executor(None, self.sink.probe, 10.0)
        if ok:
            logger.info("collector warm in %.0f ms, producing to %s on %s", (time.monotonic() - started) * 1000,
                        self.topic, s.kafka_broker_address)
        else:
            logger.warning("broker %s not ready at start-up: /readyz answers 503 until it is",
                           s.kafka_broker_address)
        self._probe_task = asyncio.create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.collector_probe_interval_s
        while True:
            sink = self.sink
            assert sink is not None
            # Probe faster while the broker is down, so recovery is seen within a fraction of a second.
            await asyncio.sleep(interval if sink.ready else min(interval, 0.25))
            await loop.run_in_executor(None, sink.probe, 2.0)

    async def shutdown(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
        if self.sink is not None:
            left = await asyncio.get_running_loop().run_in_executor(None, self.sink.close, 5.0)
            if left:
                logger.warning("%d events were not flushed at shutdown (their requests got 503)", left)
