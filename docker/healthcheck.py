"""Container health checks for the firstmile images (no curl in a slim image: stdlib + confluent-kafka).

    python /app/healthcheck.py http URL   healthy when URL answers 2xx within the timeout
    python /app/healthcheck.py kafka      healthy when KAFKA_BROKER_ADDRESS answers metadata and holds events.raw
                                          (with FIRSTMILE_TOPIC_PREFIX)

Exit 0 healthy, 1 unhealthy (the Docker HEALTHCHECK contract). HEALTHCHECK_TIMEOUT_S sets the timeout (default 5).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check_http(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - URL comes from our own config
            return None if 200 <= response.status < 300 else f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except OSError as exc:
        return f"{url}: {exc}"


def check_kafka(timeout: float) -> str | None:
    from confluent_kafka.admin import AdminClient

    address = os.environ.get("KAFKA_BROKER_ADDRESS", "")
    if not address:
        return "KAFKA_BROKER_ADDRESS is not set"
    topic = os.environ.get("FIRSTMILE_TOPIC_PREFIX", "") + "events.raw"
    try:
        metadata = AdminClient({"bootstrap.servers": address}).list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException on timeout: report it, the exit code is what Docker reads
        return f"broker {address}: {exc}"
    if topic not in metadata.topics:
        return f"broker {address} has no topic {topic}"
    return None


def main(argv: list[str]) -> int:
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "5"))
    if len(argv) == 2 and argv[0] == "http":
        problem = check_http(argv[1], timeout)
    elif len(argv) == 1 and argv[0] == "kafka":
        problem = check_kafka(timeout)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
