"""``python -m streaming.serving``: serve the profile API with uvicorn, settings from the environment."""

from __future__ import annotations

import logging
import sys

import uvicorn

from streaming.serving.config import load_serving_settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_serving_settings()
    if not settings.kafka_broker_address:
        print("KAFKA_BROKER_ADDRESS is required (host:port of the Kafka or embedded broker)", file=sys.stderr)
        return 2
    from streaming.serving.api import ServingApp

    uvicorn.run(ServingApp(settings), host=settings.serving_host, port=settings.serving_port, loop="uvloop",
                http="httptools", lifespan="on", access_log=False, log_level="info", server_header=False,
                date_header=False, timeout_keep_alive=75, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
