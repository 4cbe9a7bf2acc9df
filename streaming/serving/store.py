"""The serving process's local store and the thread that keeps it current.

:class:`ProfileStore` is a RocksDB database (``rocksdict``, which Quix Streams already ships for its state) holding,
per key prefix:

* ``p:`` the profile's answer, prepared when the view is applied (:class:`Served`): each served field's JSON
  fragment, the fields withheld for want of consent (and their fragments, for the inspector), the read-your-writes
  offsets and when this process applied it.
  A read is one point get, one small msgpack decode and a byte join: no JSON is parsed or written per request;
  what a caller may see (its scope, the publishable allow-list) is still decided per request, and the consent that
  decides what is withheld is the view's own — the view is the consent as granted now, so preparing at apply time
  and deciding at read time give the same answer. ``make bench-serving`` measured the difference: parsing the whole
  stored document (the last event's ledger included) cost 12-18 µs per request;
* ``r:`` its recent events (the last :data:`RECENT_EVENTS` ``last_event`` entries, ledgers included, as published:
  only the inspector reads them);
* ``d:`` device → profile, ``e:`` erased identifiers, ``o:`` the next offset per topic partition — so a restart
  resumes from where it was and serves the same answers once caught up.

An erasure deletes the identifier's entries and a later record for an erased identifier is not written, so a read
needs no erasure check of its own (the one exception, a lookup that resolves through an identity merge, checks the
id it was asked for: :meth:`ProfileStore.is_erased`).

RocksDB rather than DuckDB: point reads and writes by key are what it does; DuckDB is built for scans. Options for
a store of millions of profiles (:func:`store_options`): a bloom filter per table file (a lookup of an unknown id
or an is-erased check of a new view reads no data block), a block cache sized from settings, LZ4.

:class:`ServingReader` reads ``profiles``, ``profiles.devices``, ``control.erasure`` and ``control.identity`` (into
the workers' own :class:`~streaming.control_tables.ControlTables`: merges resolve in memory, chains included) outside
any consumer group from the stored offsets, applies them in batches (one RocksDB write per batch, not one per
record), and tells :class:`Changes` which profiles changed
(read-your-writes waits and server-sent event streams wake on it). ``caught_up`` is what ``/readyz`` answers.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options, Rdict, WriteBatch, WriteOptions

from streaming import settings as topics
from streaming.control_tables import IDENTITY, ControlTables
from streaming.errors import FirstmileError
from streaming.profile_view import FIELD_PURPOSES
from streaming.settings import StreamingSettings

logger = logging.getLogger(__name__)

#: Recent events kept per profile for the inspector.
RECENT_EVENTS = 20
#: The store's layout (``m:format``): a store in another one is emptied at start-up and read again from the topics.
FORMAT_KEY, FORMAT = b"m:format", b"2"
#: Records the reader applies in one RocksDB write at most (and asks the consumer for at once).
BATCH = 2000
#: Fields of the view that are bookkeeping, never served.
INTERNAL = frozenset({"last_event", "offsets", "decided_at"})
#: Always part of an answer: when, how fresh, what was withheld (the serving API adds the last three per request).
META = ("as_of", "staleness_ms", "stale", "withheld", "policy_version")
_PER_REQUEST = frozenset({"as_of", "staleness_ms", "stale", "withheld"})

#: One record of a serving topic: (table, topic, partition, offset, key, value).
Record = tuple[str, str, int, int, bytes | None, bytes | None]


class StoreError(FirstmileError, ValueError):
    """A record on a serving topic that cannot be applied (the message names topic[partition]@offset)."""


class Served(msgspec.Struct, array_like=True, frozen=True):
    """A profile's answer as prepared when its view was applied (the ``p:`` value, msgpack)."""

    applied_at: float
    #: ``events.raw`` partition → the last input offset the view reflects (``?after=``)
    offsets: dict[str, int]
    #: ``(field, b'"field":<json>')`` for every field served to a server key, in the view's order (``as_of`` too)
    fields: list[tuple[str, bytes]]
    #: ``b'"withheld":{"field":"purpose",...}'``: the fields left out because their purpose is not granted
    withheld: bytes
    #: the withheld fields' fragments and the bookkeeping ones but the last event: never served, the inspector's
    held: list[tuple[str, bytes]]

    def body(self, allowed: frozenset[str] | None) -> bytes:
        """The answer's JSON up to its per-request fields: ``b'{...,"withheld":{...}'`` (no closing brace);
        ``allowed``: the fields a publishable key may read (:data:`META` included), None for a server key."""
        if allowed is None:
            return b"{" + b",".join([f for _, f in self.fields] + [self.withheld])
        return b"{" + b",".join([f for name, f in self.fields if name in allowed] + [self.withheld])

    def view(self) -> dict[str, Any]:
        """The view as published without its last event (the inspector's live state; ``as_of`` too)."""
        return orjson.loads(b"{" + b",".join([f for _, f in self.fields] + [f for _, f in self.held]) + b"}")


class _Device(msgspec.Struct):
    profile_id: str


class _EventId(msgspec.Struct):
    event_id: str | None = None


_SERVED = msgspec.msgpack.Decoder(Served)
_ENCODE = msgspec.msgpack.Encoder()
_RECENT = msgspec.msgpack.Decoder(list[tuple[str, bytes]])
_VIEW = msgspec.json.Decoder(dict[str, msgspec.Raw])
_CONSENT = msgspec.json.Decoder(dict[str, bool] | None)
_OFFSETS = msgspec.json.Decoder(dict[str, int] | None)
_DEVICE = msgspec.json.Decoder(_Device)
_EVENT_ID = msgspec.json.Decoder(_EventId)


def prepare(view: bytes, applied_at: float) -> tuple[Served, bytes | None]:
    """A published view → (its prepared answer, the last event's JSON or None).

    The view is split at its top-level fields without parsing their values (``msgspec.Raw``); only ``consent`` and
    ``offsets`` are decoded."""
    doc = _VIEW.decode(view)
    consent = _CONSENT.decode(doc["consent"]) if "consent" in doc else None
    offsets = _OFFSETS.decode(doc["offsets"]) if "offsets" in doc else None
    withheld = {f: p for f, p in FIELD_PURPOSES.items() if f in doc and not (consent or {}).get(p)}
    fields: list[tuple[str, bytes]] = []
    held: list[tuple[str, bytes]] = []
    for name, raw in doc.items():
        if name == "last_event" or name in _PER_REQUEST:
            continue
        fragment = (name, _prefix(name) + raw)
        (held if name in withheld or name in INTERNAL else fields).append(fragment)
    as_of = doc.get("last_event_at")
    fields.append(("as_of", b'"as_of":' + (bytes(as_of) if as_of is not None else b"null")))
    last = doc.get("last_event")
    served = Served(applied_at=applied_at, offsets=offsets or {}, fields=fields,
                    withheld=b'"withheld":' + orjson.dumps(withheld), held=held)
    return served, (bytes(last) if last is not None and bytes(last) != b"null" else None)


@functools.cache
def _prefix(name: str) -> bytes:
    """``b'"name":'`` (a view has a dozen field names: each is encoded once per process)."""
    return orjson.dumps(name) + b":"


def store_options(*, block_cache_mb: int) -> Options:
    """RocksDB options for point reads over millions of profiles: whole-key bloom filters (10 bits a key: ~1 %
    false positives), a block cache of ``block_cache_mb`` MiB for data blocks (index and filter blocks stay with
    their table files, outside it: a few MiB per million profiles, and no cache lookups of their own per get),
    LZ4 (cheap to decompress on a cache miss)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(Cache(block_cache_mb * 2**20))
    options.set_block_based_table_factory(table)
    options.set_compression_type(DBCompressionType.lz4())
    # a bloom filter on the memtable too: most lookups are of keys not in it, and a seek in a skiplist of tens of
    # MiB costs more than the rest of the get
    options.set_memtable_prefix_bloom_ratio(0.1)
    options.set_memtable_whole_key_filtering(True)
    options.set_level_compaction_dynamic_level_bytes(True)
    return options


class ProfileStore:
    """Profiles, devices, erased ids and read offsets in one RocksDB database (one writer: the reader thread)."""

    def __init__(self, path: Path, *, block_cache_mb: int = 256) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = store_options(block_cache_mb=block_cache_mb)
        write = WriteOptions()
        # no write-ahead log: the topics are this store's log. A batch holds its records and their offsets, so a
        # crash loses both together (never a record without its offset) and the reader reads them again; a clean
        # close flushes the memtable (RocksDB does when the log is off)
        write.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; the stub says a method
        # rocksdict reopens an existing store with the column family options saved in its OPTIONS file unless they
        # are given: the bloom filter and the block cache are not saved there, so a restarted process would read
        # with neither (8 MiB of cache: the index block of a large table file no longer fits in a cache shard
        # and is read and decompressed again on every get, ~130 µs; measured on a 100k-profile store)
        self.db = Rdict(str(path), options, column_families={"default": options})
        self.db.set_write_options(write)
        if self.db.get(FORMAT_KEY) != FORMAT:
            if next(iter(self.db.keys()), None) is not None:
                # a copy of the topics in another layout (an older version's): emptied, the reader reads them again
                logger.warning("serving store %s is in another format: emptied, the topics are read again", path)
                self.db.close()
                Rdict.destroy(str(path), options)
                self.db = Rdict(str(path), options, column_families={"default": options})
                self.db.set_write_options(write)
            self.db.put(FORMAT_KEY, FORMAT)

    def close(self) -> None:
        self.db.close()

    def flush(self) -> None:
        """Write the memtable to a table file (the reader does once it caught up)."""
        self.db.flush()

    # ---- reads ----------------------------------------------------------------------------------------------
    def served(self, profile_id: str) -> Served | None:
        """The profile's prepared answer, or None (unknown or erased)."""
        raw = self.db.get(b"p:" + profile_id.encode())
        return None if raw is None else _SERVED.decode(raw)

    def recent(self, profile_id: str) -> list[dict[str, Any]]:
        raw = self.db.get(b"r:" + profile_id.encode())
        return [orjson.loads(event) for _, event in _RECENT.decode(raw)] if raw else []

    def profile_of_device(self, device_id: str) -> str | None:
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
        changed = self.apply_many([(table, topic, partition, offset, key, value)])
        return changed[0] if changed else None

    def apply_many(self, records: Iterable[Record]) -> list[str]:
        """Apply records in order in one RocksDB write; returns the profile ids whose answer changed."""
        return _Batch(self).apply(records)


class _Batch:
    """One write of records: what the batch itself erased and the recent events it wrote are kept beside it, so
    a later record of the same batch sees them (RocksDB's ``WriteBatch`` is not readable)."""

    def __init__(self, store: ProfileStore) -> None:
        self.db = store.db
        self.batch = WriteBatch(raw_mode=True)
        self.erased: set[bytes] = set()
        self.recent: dict[bytes, list[tuple[str, bytes]]] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.changed: list[str] = []

    def apply(self, records: Iterable[Record]) -> list[str]:
        now = time.time()
        for table, topic, partition, offset, key, value in records:
            self.offsets[(topic, partition)] = offset + 1
            if not key:
                continue
            try:
                if table == topics.PROFILES:
                    self._view(key, value, now)
                elif table == topics.PROFILE_DEVICES:
                    self._device(key, value)
                elif table == topics.CONTROL_ERASURE and value is not None:
                    self._erase(key)
            except msgspec.DecodeError as exc:  # the worker wrote it: a bug to see, not a record to skip
                raise StoreError(f"{topic}[{partition}]@{offset}: not a {table} record: {exc}") from exc
        for (topic, partition), offset in self.offsets.items():
            self.batch.put(f"o:{topic}:{partition}".encode(), str(offset).encode())
        self.db.write(self.batch)
        return self.changed

    def _is_erased(self, key: bytes) -> bool:
        return key in self.erased or self.db.get(b"e:" + key) is not None

    def _view(self, key: bytes, value: bytes | None, now: float) -> None:
        if value is None:  # the worker's tombstone of an erased profile
            for prefix in (b"p:", b"r:"):
                self.batch.delete(prefix + key)
            self.recent.pop(key, None)
        elif self._is_erased(key):
            return  # a view that was on its way when the erasure landed
        else:
            served, last = prepare(value, now)
            self.batch.put(b"p:" + key, _ENCODE.encode(served))
            if last is not None:
                event_id = _EVENT_ID.decode(last).event_id or ""
                recent = [e for e in self._recent(key) if e[0] != event_id][-(RECENT_EVENTS - 1):]
                recent.append((event_id, last))
                self.recent[key] = recent
                self.batch.put(b"r:" + key, _ENCODE.encode(recent))
        self.changed.append(key.decode("utf-8", "replace"))

    def _recent(self, key: bytes) -> list[tuple[str, bytes]]:
        if key in self.recent:
            return self.recent[key]
        raw = self.db.get(b"r:" + key)
        return _RECENT.decode(raw) if raw else []

    def _device(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.batch.delete(b"d:" + key)
        elif not self._is_erased(key):
            profile_id = _DEVICE.decode(value).profile_id
            self.batch.put(b"d:" + key, profile_id.encode())
            # a new visitor's read waits for its device to be known: the view may have landed first
            self.changed.append(profile_id)

    def _erase(self, key: bytes) -> None:
        self.erased.add(key)
        self.recent.pop(key, None)
        self.batch.put(b"e:" + key, b"1")
        for prefix in (b"p:", b"r:", b"d:"):
            self.batch.delete(prefix + key)
        self.changed.append(key.decode("utf-8", "replace"))


class Changes:
    """Wakes the event loop's waiters when profiles' answers changed (called from reader threads, once a batch)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[list[str]], None]] = []

    def notify(self, profile_ids: list[str]) -> None:
        if profile_ids:
            for listener in self.listeners:
                listener(profile_ids)


class ServingReader(threading.Thread):
    """Reads the serving topics into the store from its offsets, and ``control.identity`` into ``merges`` (the
    workers' :class:`~streaming.control_tables.ControlTables`, resumed from ``merges_snapshot`` and saved there
    when the reader stops); a broadcast (no consumer group commits), one consumer for all four topics."""

    def __init__(self, broker_address: str, settings: StreamingSettings, store: ProfileStore, changes: Changes,
                 *, merges: ControlTables, merges_snapshot: Path) -> None:
        super().__init__(name="serving-reader", daemon=True)
        self.store, self.changes = store, changes
        self.merges, self.merges_snapshot = merges, merges_snapshot
        self.tables = {settings.topic(name): name for name in (topics.PROFILES, topics.PROFILE_DEVICES,
                                                               topics.CONTROL_ERASURE, topics.CONTROL_IDENTITY)}
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

    def _start_offset(self, topic: str, partition: int, stored: dict[tuple[str, int], int]) -> int:
        if self.tables[topic] == topics.CONTROL_IDENTITY:  # one partition; the snapshot knows where it was
            return self.merges.offsets.identity or OFFSET_BEGINNING
        return stored.get((topic, partition), OFFSET_BEGINNING)

    def run(self) -> None:
        try:
            stored = self.store.offsets()
            metadata = self.consumer.list_topics(timeout=10)
            assignment = [TopicPartition(t, p, self._start_offset(t, p, stored))
                          for t in self.tables if t in metadata.topics for p in metadata.topics[t].partitions]
            if not assignment:
                logger.warning("no serving topics on the broker yet: serving nothing")
                self._caught_up.set()
                return
            self.consumer.assign(assignment)
            pending = {(tp.topic, tp.partition) for tp in assignment}
            while not self._stop_event.is_set():
                first = self.consumer.poll(0.2)  # a lone record is applied at once (read-your-writes waits on it)
                messages = [first, *self.consumer.consume(BATCH - 1, 0)] if first is not None else []
                records: list[Record] = []
                merged: list[str] = []
                at_eof: list[tuple[str, int]] = []
                for msg in messages:
                    error = msg.error()
                    if error is None:
                        table = self.tables[msg.topic()]
                        if table == topics.CONTROL_IDENTITY:
                            key = msg.key().decode("utf-8", "replace") if msg.key() else ""
                            self.merges.apply(IDENTITY, key, msg.value(), msg.offset())
                            merged.append(key)
                        else:
                            records.append((table, msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                            msg.value()))
                    elif error.code() == KafkaError._PARTITION_EOF:
                        at_eof.append((msg.topic(), msg.partition()))
                    else:
                        logger.error("serving reader: %s", error)
                if records:  # written before an end of partition is believed: ready means applied
                    self.changes.notify(self.store.apply_many(records))
                self.changes.notify(merged)
                self.applied += len(records) + len(merged)
                pending.difference_update(at_eof)
                if not pending and (at_eof or not messages) and not self._caught_up.is_set():
                    self._caught_up.set()
                    # the catch-up's last tens of MiB out of the memtable: a get then seeks table files with bloom
                    # filters instead of a large skiplist (~1.5 µs of a 7-8 µs get at 100k profiles)
                    self.store.flush()
        except Exception:  # noqa: BLE001 - logged; /readyz then stays 503
            logger.exception("serving reader stopped")
            raise
        finally:
            self.consumer.close()
            self.merges.save(self.merges_snapshot)
