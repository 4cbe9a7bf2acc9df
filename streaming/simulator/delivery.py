"""Sending simulated traffic: to Kafka (as the collector would produce it) or over HTTP through the collector,
paced; and the ground-truth file the demo and tests compare against.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streaming.errors import require_extra
from streaming.simulator.events import SimEvent, _iso
from streaming.simulator.scenario import SimulatorError

# --- delivery -------------------------------------------------------------------------------------------------------

def restamp(event: SimEvent, now: datetime) -> dict[str, Any]:
    """The payload as a client would send it at ``now``: ``sentAt`` = now on the device clock (its skew kept).

    The collector then computes ``timestamp - (sentAt - receivedAt)`` = the true simulated event time, whatever
    the real send time. Events without ``sentAt`` (server-side imports) are sent unchanged.
    """
    payload = event.payload
    if "sentAt" not in payload:
        return payload
    device_sent = datetime.fromisoformat(payload["sentAt"].replace("Z", "+00:00"))
    skew = device_sent - event.send_at
    return {**payload, "sentAt": _iso(now + skew)}


def _paced(events: Iterable[SimEvent], rate: float | None, progress: bool, desc: str) -> Iterator[SimEvent]:
    require_extra("tqdm", "simulator", "The traffic simulator's progress bar")
    from tqdm import tqdm

    total = len(events) if hasattr(events, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(events, total=total, unit="ev", desc=desc, disable=not progress, mininterval=0.5)
    start = time.monotonic()
    for i, ev in enumerate(bar):
        if rate:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        yield ev


def send_to_kafka(events: Iterable[SimEvent], *, broker_address: str, topic: str, source_id: str = "simulator",
                  rate: float | None = None, progress: bool = False, received_at: str = "now",
                  producer_config: dict[str, Any] | None = None, timeout: float = 60.0) -> int:
    """Normalize each wire event with :func:`contract.from_segment` (as the collector would) and produce it to
    ``topic`` keyed by ``anonymous_id`` (else ``user_id``), idempotent producer; flush; return the count delivered.

    ``received_at="now"``: the broker sees live traffic (sentAt is restamped to now, so event timestamps stay the
    simulated ones); ``received_at="send_at"``: backfilling simulated history, ``received_at`` is the simulated
    ``send_at``. ``rate`` in events/s (None: as fast as possible).
    """
    import orjson
    from confluent_kafka import Producer

    from streaming.contract import from_segment

    if received_at not in ("now", "send_at"):
        raise ValueError("received_at must be 'now' or 'send_at'")
    producer = Producer({"bootstrap.servers": broker_address, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 50, "compression.type": "lz4", **(producer_config or {})})
    delivered = 0
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered
        if err is not None:
            errors.append(str(err))
        else:
            delivered += 1

    for ev in _paced(events, rate, progress, "kafka"):
        if received_at == "now":
            now = datetime.now(UTC)
            record = from_segment(restamp(ev, now), source_id=source_id, received_at=now)
        else:
            record = from_segment(ev.payload, source_id=source_id, received_at=ev.send_at)
        key = (record.get("anonymous_id") or record.get("user_id") or "").encode()
        value = orjson.dumps(record)
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise SimulatorError(f"{remaining} events not delivered, {len(errors)} delivery errors"
                             + (f": {errors[0]}" if errors else ""))
    return delivered


class _Connections(threading.local):
    def __init__(self) -> None:
        self.by_host: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}


class KeepAliveHttp:
    """One keep-alive connection per thread and host (what an SDK holds), reopened after an error."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.local = _Connections()

    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict[str, str],
                                                                                                   bytes]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        key = (parts.scheme, parts.hostname, parts.port)
        conn = self.local.by_host.get(key)
        if conn is None:
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(parts.hostname, parts.port, timeout=self.timeout)
            self.local.by_host[key] = conn
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            del self.local.by_host[key]
            raise

    def close(self) -> None:
        """Close this thread's connections."""
        for conn in self.local.by_host.values():
            conn.close()
        self.local.by_host.clear()


def basic_auth(key: str) -> str:
    """HTTP Basic with the key as user and an empty password, as Segment's SDKs send a write key."""
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def batch_url(url: str) -> str:
    """The collector's ``/v1/batch`` for a base URL (or the batch URL itself)."""
    base = url.rstrip("/")
    return base if base.endswith("/v1/batch") else base + "/v1/batch"


def send_http(events: Iterable[SimEvent], *, url: str, write_key: str, batch_size: int = 100,
              rate: float | None = None, progress: bool = False, max_retries: int = 10,
              timeout: float = 30.0) -> int:
    """POST events to the collector's ``/v1/batch`` (``url`` is the base URL or the full batch URL) with HTTP Basic
    auth (write key as user, empty password), as Segment's SDKs do. Retries 429/503 (and connection errors)
    honouring ``Retry-After``; any other non-2xx raises :class:`SimulatorError`. Returns the count accepted."""
    import orjson

    client, target = KeepAliveHttp(timeout), batch_url(url)
    if urlsplit(target).scheme not in ("http", "https") or not urlsplit(target).hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    headers = {"Content-Type": "application/json", "Authorization": basic_auth(write_key),
               "User-Agent": "firstmile-simulator/1"}
    sent = 0

    def flush(batch: list[SimEvent]) -> int:
        now = datetime.now(UTC)
        body = orjson.dumps({"batch": [restamp(ev, now) for ev in batch], "sentAt": _iso(now)})
        for attempt in range(max_retries + 1):
            try:
                status, resp_headers, data = client.request("POST", target, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == max_retries:
                    raise SimulatorError(f"collector unreachable: {exc}") from exc
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
                continue
            if 200 <= status < 300:
                return len(batch)
            if status in (429, 503) and attempt < max_retries:
                try:
                    wait = float(resp_headers.get("retry-after", ""))
                except ValueError:
                    wait = min(5.0, 0.2 * 2 ** attempt)
                time.sleep(max(0.0, min(wait, 60.0)))
                continue
            raise SimulatorError(f"collector answered {status}: {data[:300].decode(errors='replace')}")
        raise SimulatorError("unreachable")

    batch: list[SimEvent] = []
    try:
        for ev in _paced(events, rate, progress, "http"):
            batch.append(ev)
            if len(batch) >= batch_size:
                sent += flush(batch)
                batch = []
        if batch:
            sent += flush(batch)
    finally:
        client.close()
    return sent


def truth_rows(events: Iterable[SimEvent]) -> Iterator[dict[str, Any]]:
    for ev in events:
        yield {**ev.truth, "send_at": _iso(ev.send_at), "type": ev.payload.get("type"),
               "event": ev.payload.get("event")}


def write_truth(events: Iterable[SimEvent], path: str | Path) -> None:
    """Write the ground truth side file: JSON lines for ``.jsonl``/``.json``/``.ndjson``, else Parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(truth_rows(events))
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        with path.open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, separators=(",", ":")) + "\n")
        return
    import polars as pl

    for row in rows:
        row["consent"] = json.dumps(row["consent"]) if row.get("consent") is not None else None
    schema = {"event_id": pl.Utf8, "actor": pl.Utf8, "actor_id": pl.Utf8, "bot_kind": pl.Utf8, "bot_name": pl.Utf8,
              "user_id": pl.Utf8, "region": pl.Utf8, "country": pl.Utf8, "intent": pl.Utf8,
              "will_convert": pl.Boolean, "day": pl.Int32, "device": pl.Int32, "session": pl.Utf8,
              "clock_skew_s": pl.Float64, "backfill": pl.Boolean, "consent": pl.Utf8, "provider": pl.Utf8,
              "original_timestamp": pl.Utf8, "send_at": pl.Utf8, "type": pl.Utf8, "event": pl.Utf8}
    frame = pl.DataFrame([{k: row.get(k) for k in schema} for row in rows], schema=schema, orient="row")
    frame.write_parquet(path)


def summarize(events: Iterable[SimEvent]) -> dict[int, dict[str, int]]:
    """Counts per day and actor kind (human, crawler, scraper, wave, backfill)."""
    out: dict[int, dict[str, int]] = {}
    for ev in events:
        kind = "backfill" if ev.truth.get("backfill") else ev.truth["bot_kind"] or ev.truth["actor"]
        row = out.setdefault(ev.truth["day"], {})
        row[kind] = row.get(kind, 0) + 1
    return out
