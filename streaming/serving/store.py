"""The serving process's local store and the thread that keeps it current.

:class:`ProfileStore` is a RocksDB database (``rocksdict``, which Quix Streams already ships for its state) holding,
per key prefix: ``p:`` the profile's view as published (JSON bytes, plus when this process applied it), ``r:`` its
recent events (the last :data:`RECENT_EVENTS` ``last_event`` entries, for the inspector), ``d:`` device → profile,
``e:`` erased identifiers, and ``o:`` the next offset per topic partition — so a restart resumes from where it was
and serves the same answers once caught up. RocksDB rather than DuckDB: point reads and writes by key are what it
does (a few µs each, ``make bench-serving`` measures them); DuckDB is built for scans.

:class:`ServingReader` reads ``profiles``, ``profiles.devices`` and ``control.erasure`` outside any consumer group
from the stored offsets, applies each record, and tells :class:`Changes` which profiles changed (read-your-writes
waits and server-sent event streams wake on it). ``caught_up`` is what ``/readyz`` answers.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from streaming import settings as topics
from streaming.settings import StreamingSettings

logger = logging.getLogger(__name__)

#: Recent events kept per profile for the inspector.
RECENT_EVENTS = 20


class ProfileStore:
    """Profiles, devices, erased ids and read offsets in one RocksDB database."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.db = Rdict(str(path), options)
        self._lock = threading.Lock()  # one writer thread; the lock only orders erasure against a late view

    def close(self) -> None:
        self.db.close()

    # ---- reads ----------------------------------------------------------------------------------------------
    def profile(self, profile_id: str) -> tuple[dict[str, Any], float] | None:
        """(the view, the wall-clock time this process applied it) or None (unknown or erased)."""
        raw = self.db.get(b"p:" + profile_id.encode())
        if raw is None or self.is_erased(profile_id):
            return None
        doc = orjson.loads(raw)
        return doc["view"], doc["applied_at"]

    def recent(self, profile_id: str) -> list[dict[str, Any]]:
        raw = self.db.get(b"r:" + profile_id.encode())
        return orjson.loads(raw) if raw else []

    def profile_of_device(self, device_id: str) -> str | None:
        if self.is_erased(device_id):
            return None
        raw = self.db.get(b"d:" + device_id.encode())
        return raw.decode() if raw else None

    def is_erased(self, identifier: str | None) -> bool:
        return bool(identifier) and self.db.get(b"e:" + identifier.encode()) is not None  # type: ignore[union-attr]

    def offsets(self) -> dict[tuple[str, int], int]:
        out = {}
        for key, value in self._prefixed(b"o:"):
            topic, _, part = key[2:].decode().rpartition(":")
            out[(topic, int(part))] = int(value)
        return out

    def __len__(self) -> int:
        return sum(1 for _ in self._prefixed(b"p:"))

    def _prefixed(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=prefix):
            assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
            if not key.startswith(prefix):
                return
            yield key, value

    # ---- writes (the reader thread) -------------------------------------------------------------------------
    def apply(self, table: str, topic: str, partition: int, offset: int, key: bytes | None,
              value: bytes | None) -> str | None:
        """Apply one record; returns the profile id whose answer changed (None if none did)."""
        batch = WriteBatch(raw_mode=True)
        changed: str | None = None
        k = key.decode("utf-8", "replace") if key else ""
        with self._lock:
            if table == topics.PROFILES and k:
                changed = k
                if value is None:
                    batch.delete(b"p:" + key)  # type: ignore[operator]
                    batch.delete(b"r:" + key)  # type: ignore[operator]
                else:
                    view = orjson.loads(value)
                    batch.put(b"p:" + key, orjson.dumps({"view": view, "applied_at": time.time()}))  # type: ignore[operator]
                    last = view.get("last_event")
                    if last:
                        recent = [e for e in self.recent(k) if e.get("event_id") != last.get("event_id")]
                        batch.put(b"r:" + key, orjson.dumps([*recent[-(RECENT_EVENTS - 1):], last]))  # type: ignore[operator]
            elif table == topics.PROFILE_DEVICES and k:
                if value is None:
                    batch.delete(b"d:" + key)  # type: ignore[operator]
                else:
                    profile_id = orjson.loads(value)["profile_id"]
                    batch.put(b"d:" + key, profile_id.encode())  # type: ignore[operator]
                    # a new visitor's read waits for its device to be known: the view may have landed first
                    changed = profile_id
            elif table == topics.CONTROL_ERASURE and k and value is not None:
                batch.put(b"e:" + key, b"1")  # type: ignore[operator]
                for prefix in (b"p:", b"r:", b"d:"):
                    batch.delete(prefix + key)  # type: ignore[operator]
                changed = k
            batch.put(f"o:{topic}:{partition}".encode(), str(offset + 1).encode())
            self.db.write(batch)
        return changed


class Changes:
    """Wakes the event loop's waiters when a profile's answer changed (called from the reader thread)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str], None]] = []

    def notify(self, profile_id: str) -> None:
        for listener in self.listeners:
            listener(profile_id)


class ServingReader(threading.Thread):
    """Reads the serving topics into the store from its offsets; a broadcast (no consumer group commits)."""

    def __init__(self, broker_address: str, settings: StreamingSettings, store: ProfileStore,
                 changes: Changes) -> None:
        super().__init__(name="serving-reader", daemon=True)
        self.store, self.changes = store, changes
        self.tables = {settings.topic(name): name
                       for name in (topics.PROFILES, topics.PROFILE_DEVICES, topics.CONTROL_ERASURE)}
        self._stop_event = threading.Event()
        self._caught_up = threading.Event()
        self.applied = 0
        self.consumer = Consumer({
            "bootstrap.servers": broker_address, "group.id": f"firstmile-serving-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 10,
            "auto.offset.reset": "earliest",
        })

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float) -> bool:
        return self._caught_up.wait(timeout)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            stored = self.store.offsets()
            metadata = self.consumer.list_topics(timeout=10)
            assignment = [TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING))
                          for t in self.tables if t in metadata.topics for p in metadata.topics[t].partitions]
            if not assignment:
                logger.warning("no serving topics on the broker yet: serving nothing")
                self._caught_up.set()
                return
            self.consumer.assign(assignment)
            pending = {(tp.topic, tp.partition) for tp in assignment}
            while not self._stop_event.is_set():
                msg = self.consumer.poll(0.2)
                if msg is None:
                    if not pending:
                        self._caught_up.set()
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard((msg.topic(), msg.partition()))
                        if not pending:
                            self._caught_up.set()
                    else:
                        logger.error("serving reader: %s", msg.error())
                    continue
                changed = self.store.apply(self.tables[msg.topic()], msg.topic(), msg.partition(), msg.offset(),
                                           msg.key(), msg.value())
                self.applied += 1
                if changed is not None:
                    self.changes.notify(changed)
        except Exception:  # noqa: BLE001 - logged; /readyz then stays 503
            logger.exception("serving reader stopped")
            raise
        finally:
            self.consumer.close()
