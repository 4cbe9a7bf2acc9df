"""``python -m streaming.collector``: serve the collector with uvicorn (httptools + uvloop), settings from env."""

from __future__ import annotations

import logging
import sys

import uvicorn

from streaming.collector.config import load_collector_settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_collector_settings()
    if not settings.kafka_broker_address:
        print("KAFKA_BROKER_ADDRESS is required (host:port of the Kafka or embedded broker)", file=sys.stderr)
        return 2
    # keep-alive above a load balancer's idle timeout (AWS ALB: 60 s), so the LB never reuses a closed socket
    options = dict(host=settings.collector_host, port=settings.collector_port, loop="uvloop", http="httptools",
                   lifespan="on", access_log=False, log_level="info", proxy_headers=False, server_header=False,
                   date_header=False, timeout_keep_alive=75, timeout_graceful_shutdown=10)
    if settings.collector_workers > 1:
        # Each worker process builds its own app (and producer) from the environment.
        uvicorn.run("streaming.collector.app:create_app", factory=True, workers=settings.collector_workers,
                    **options)  # type: ignore[arg-type]
    else:
        from streaming.collector.app import Collector

        uvicorn.run(Collector(settings), **options)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
