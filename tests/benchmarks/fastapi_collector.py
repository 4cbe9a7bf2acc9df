"""The collector written the idiomatic FastAPI way, for ``bench_collector.py``'s side-by-side comparison only.

Same work per request as ``streaming.collector`` (the raw ASGI app): the write key from HTTP Basic, every event
through ``streaming.contract.from_segment``, ``orjson`` and the worker's own ``parse_raw`` check, produced keyed by
device through the same acked idempotent ``KafkaSink``, 200 only once the broker acknowledged every event. What
differs is the framework: FastAPI routing and dependency injection, a pydantic body model per endpoint (validated
before the contract runs, as an idiomatic FastAPI service does), the write key as a ``Depends``, the answer as a
returned dict serialized by FastAPI. Served by uvicorn with the collector's options (httptools, uvloop, no access
log). Not part of the product; nothing imports it but the benchmark.

    KAFKA_BROKER_ADDRESS=... FIRSTMILE_WRITE_KEYS=key:src .venv/bin/python tests/benchmarks/fastapi_collector.py
"""

import asyncio
import base64
import binascii
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streaming.collector.config import CollectorSettings, WriteKey, load_collector_settings  # noqa: E402
from streaming.collector.sink import BrokerUnavailable, KafkaSink  # noqa: E402
from streaming.contract import InvalidEvent, from_segment, parse_raw  # noqa: E402
from streaming.settings import RAW  # noqa: E402


class Page(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    title: str | None = None


class Context(BaseModel):
    model_config = ConfigDict(extra="allow")
    ip: str | None = None
    userAgent: str | None = None
    locale: str | None = None
    timezone: str | None = None
    page: Page | None = None


class Event(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["track", "page", "screen", "identify", "alias", "group"] | None = None
    event: str | None = None
    messageId: str = Field(min_length=1)
    anonymousId: str | None = None
    userId: str | None = None
    timestamp: datetime | None = None
    sentAt: datetime | None = None
    context: Context | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    writeKey: str | None = None


class Batch(BaseModel):
    batch: list[Event] = Field(min_length=1)
    context: dict[str, Any] | None = None
    sentAt: datetime | None = None
    writeKey: str | None = None


class Success(BaseModel):
    success: bool = True


def create_app(settings: CollectorSettings | None = None) -> FastAPI:
    settings = settings or load_collector_settings()
    keys = settings.keys
    basic = {"Basic " + base64.b64encode(f"{k}:".encode()).decode(): wk for k, wk in keys.items()}
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        assert settings.kafka_broker_address, "KAFKA_BROKER_ADDRESS is required"
        sink = KafkaSink(settings.kafka_broker_address, settings.topic(RAW), linger_ms=settings.collector_linger_ms,
                         ack_timeout_ms=settings.collector_ack_timeout_ms)
        state["sink"] = sink
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sink.probe, 10.0)  # warm the producer, as the raw collector does

        async def probe_loop() -> None:
            while True:
                await asyncio.sleep(settings.collector_probe_interval_s if sink.ready else 0.25)
                await loop.run_in_executor(None, sink.probe, 2.0)

        task = asyncio.create_task(probe_loop())
        yield
        task.cancel()
        await loop.run_in_executor(None, sink.close, 5.0)

    app = FastAPI(title="firstmile collector (FastAPI, benchmark only)", lifespan=lifespan)

    def write_key(authorization: Annotated[str | None, Header()] = None) -> WriteKey:
        if authorization is None:
            raise HTTPException(401, "missing write key")
        wk = basic.get(authorization)
        if wk is not None:
            return wk
        scheme, _, token = authorization.partition(" ")
        try:
            user = base64.b64decode(token, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            raise HTTPException(401, "the Authorization header is not valid base64") from None
        if scheme.lower() != "basic" or user not in keys:
            raise HTTPException(401, "unknown write key")
        return keys[user]

    async def produce(events: list[Event], wk: WriteKey, *, kind: str | None, batch: Batch | None = None) -> None:
        received_at = datetime.now(UTC)
        batch_sent_at = batch.sentAt.isoformat() if batch is not None and batch.sentAt else None
        messages = []
        for index, event in enumerate(events):
            payload = event.model_dump(mode="json", exclude_none=True)
            if kind is not None:
                payload["type"] = kind
            if batch is not None and batch.context:
                payload["context"] = {**batch.context, **payload.get("context", {})}
            try:
                record = from_segment(payload, source_id=wk.source_id, received_at=received_at,
                                      batch_sent_at=batch_sent_at)
                value = orjson.dumps(record)
                parse_raw(value)
            except InvalidEvent as exc:
                raise HTTPException(400, f"batch[{index}]: {exc.detail or exc.reason}" if batch else
                                    exc.detail or exc.reason) from None
            messages.append(((record.get("anonymous_id") or record["user_id"]).encode(), value))
        try:
            await state["sink"].send(messages)
        except BrokerUnavailable as exc:
            raise HTTPException(503, f"events not acknowledged by the broker ({exc})",
                                headers={"Retry-After": "1"}) from None

    @app.post("/v1/track")
    async def track(event: Event, wk: Annotated[WriteKey, Depends(write_key)]) -> Success:
        await produce([event], wk, kind="track")
        return Success()

    @app.post("/v1/page")
    async def page(event: Event, wk: Annotated[WriteKey, Depends(write_key)]) -> Success:
        await produce([event], wk, kind="page")
        return Success()

    @app.post("/v1/identify")
    async def identify(event: Event, wk: Annotated[WriteKey, Depends(write_key)]) -> Success:
        await produce([event], wk, kind="identify")
        return Success()

    @app.post("/v1/batch")
    async def batch(body: Batch, wk: Annotated[WriteKey, Depends(write_key)]) -> Success:
        await produce(body.batch, wk, kind=None, batch=body)
        return Success()

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        sink = state.get("sink")
        if sink is not None and sink.ready:
            return JSONResponse({"status": "ready", "last_broker_ok_s":
                                 round(time.monotonic() - max(sink.last_probe_ok, sink.last_ack), 3)})
        return JSONResponse({"status": "not_ready"}, status_code=503)

    return app


def main() -> int:
    import uvicorn

    settings = load_collector_settings()
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(create_app(settings), host=settings.collector_host, port=settings.collector_port, loop="uvloop",
                    http="httptools", lifespan="on", access_log=False, log_level="info", proxy_headers=False,
                    server_header=False, date_header=False, timeout_keep_alive=75, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
