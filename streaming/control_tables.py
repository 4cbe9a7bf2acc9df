"""What the warehouse (and the regulations API) learn about people, held by every worker: identity merges and erasures.

Two compacted topics keyed by identifier carry them, one partition each, so an offset names exactly the table a
decision was made under (the ledger's ``control``):

* ``control.identity``: key = a profile id; value = ``{"into": <profile id>, "at": <iso>, "consent": {purpose:
  [granted, at_ms]}, "source": ...}`` — the profile merged into another one, and the consent its decisions amounted
  to when the warehouse found the merge. A tombstone (no value) undoes the merge.
* ``control.erasure``: key = an identifier as events carry it (a user id, an anonymous id, a device id, after
  :func:`streaming.pii.pseudonymous_id`); value = ``{"request_id": ..., "at": <iso>, "source": ...}``. Erased ids
  are never un-erased by the hot path (a tombstone is ignored and logged: erasure is one-way).

Merge semantics (README, "Identity merges and erasure"):

* chains are resolved: ``a → b`` and ``b → c`` put ``a``'s events on ``c``; the survivor is the end of the chain
  and stays stable (a merge never moves the survivor's own id);
* a merge that would close a cycle is rejected (logged, counted in :attr:`ControlTables.rejected`, not applied);
* consent never widens: when a profile's events move to the survivor, the survivor's consent folds in each merged
  profile's decisions per purpose — the latest decision wins and a denial wins a tie
  (:func:`streaming.consent.ConsentState.fold`); stage 2 does this once per merged profile (its state remembers
  which it folded);
* identity and session state follow the survivor: a device keeps its own link and session; the profile it resolves
  to is the survivor, so stage 2's state (consent, segment) is the survivor's.

:class:`ControlTables` is written by one :class:`ControlReader` thread per topic and read by the decision code
without a lock: every update is a single dict or set operation (atomic under the GIL), and a merge's relabelling
of members happens before its offset is published, so a decision stamped with offset *n* saw every update below *n*.
A snapshot in the worker's state directory (:meth:`ControlTables.save`) lets a restart resume from its offsets
instead of re-reading the topics from the beginning.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import orjson

from streaming.decided import ControlOffsets
from streaming.errors import FirstmileError

logger = logging.getLogger(__name__)

IDENTITY = "identity"
ERASURE = "erasure"
SNAPSHOT_FORMAT = 1


class ControlError(FirstmileError, ValueError):
    """A control record that cannot be applied (the message names the key and why)."""


class _Snapshot(msgspec.Struct, kw_only=True):
    format: int
    offsets: ControlOffsets
    erased: list[str]
    merges: dict[str, str]
    consent: dict[str, dict[str, tuple[bool, int]]]


class ControlTables:
    """Erased identifiers and profile merges, with the offsets they were read up to."""

    def __init__(self) -> None:
        self._erased: set[str] = set()
        #: direct edges as published: merged profile → the profile it merged into
        self._edges: dict[str, str] = {}
        #: every merged profile → its survivor (the end of its chain)
        self._survivor: dict[str, str] = {}
        #: survivor → the profiles that resolve to it
        self._members: dict[str, set[str]] = {}
        #: merged profile → its consent when merged: purpose → (granted, at_ms)
        self._consent: dict[str, dict[str, tuple[bool, int]]] = {}
        self.offsets = ControlOffsets()
        self.rejected: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # writers only (two reader threads); decisions read without it

    # ---- reads (the hot path) -------------------------------------------------------------------------------
    @property
    def erased(self) -> set[str]:
        return self._erased

    def is_erased(self, identifier: str | None) -> bool:
        return identifier is not None and identifier in self._erased

    def survivor(self, profile_id: str) -> str:
        """The profile ``profile_id``'s events belong to now (itself unless it was merged)."""
        return self._survivor.get(profile_id, profile_id)

    def members_of(self, survivor: str) -> set[str] | None:
        """The profiles merged into ``survivor`` (None for the common case: none)."""
        return self._members.get(survivor)

    def merged_consent(self, profile_id: str) -> Mapping[str, tuple[bool, int]]:
        return self._consent.get(profile_id, {})

    def __len__(self) -> int:
        return len(self._erased) + len(self._edges)

    # ---- writes (the reader threads) ------------------------------------------------------------------------
    def apply(self, table: str, key: str, value: bytes | None, offset: int) -> None:
        """Apply one record of ``control.<table>`` at ``offset``; a bad record is logged and skipped."""
        with self._lock:
            try:
                if table == ERASURE:
                    self._apply_erasure(key, value)
                elif table == IDENTITY:
                    self._apply_merge(key, value)
                else:
                    raise ControlError(f"unknown control table {table!r}")
            except (ControlError, msgspec.DecodeError, orjson.JSONDecodeError, TypeError, KeyError) as exc:
                logger.error("control.%s record %r at offset %d not applied: %s", table, key, offset, exc)
                self.rejected.append((table, key))
            # published last: a decision that reads the new offset sees the update
            self.offsets = msgspec.structs.replace(self.offsets, **{table: offset + 1})

    def _apply_erasure(self, key: str, value: bytes | None) -> None:
        if not key:
            raise ControlError("control.erasure: a record without a key (the identifier)")
        if value is None:
            logger.warning("control.erasure tombstone for %r ignored: an erasure is never undone", key)
            return
        self._erased.add(key)

    def _apply_merge(self, key: str, value: bytes | None) -> None:
        if not key:
            raise ControlError("control.identity: a record without a key (the merged profile id)")
        if value is None:
            if self._edges.pop(key, None) is not None:
                self._consent.pop(key, None)
                self._rebuild()
            return
        doc = orjson.loads(value)
        into = doc.get("into") if isinstance(doc, dict) else None
        if not isinstance(into, str) or not into:
            raise ControlError(f"control.identity {key!r}: field 'into' must be a non-empty profile id")
        if into == key:
            raise ControlError(f"control.identity {key!r}: a profile cannot merge into itself")
        node = into  # follow the published edges from the target: reaching this key again is a cycle
        while node != key and node in self._edges:
            node = self._edges[node]
        if node == key:
            raise ControlError(f"control.identity {key!r} -> {into!r}: closes a cycle (rejected)")
        root = node
        consent = doc.get("consent") or {}
        if not isinstance(consent, dict):
            raise ControlError(f"control.identity {key!r}: field 'consent' must be an object")
        previous = self._edges.get(key)
        self._edges[key] = into
        if consent:
            self._consent[key] = {p: (bool(v[0]), int(v[1])) for p, v in consent.items()}
        else:
            self._consent.pop(key, None)  # most merges carry none: no dict per merge
        if previous is not None and previous != into:
            self._rebuild()  # re-pointing a merged profile: rare, recompute every chain
            return
        moved = {key} | self._members.pop(key, set())
        for member in moved:
            self._survivor[member] = root
        self._members.setdefault(root, set()).update(moved)

    def _rebuild(self) -> None:
        survivor: dict[str, str] = {}
        for start in self._edges:
            seen = [start]
            node = self._edges[start]
            while node in self._edges and node not in seen:
                seen.append(node)
                node = self._edges[node]
            survivor[start] = node
        members: dict[str, set[str]] = {}
        for member, root in survivor.items():
            members.setdefault(root, set()).add(member)
        self._survivor, self._members = survivor, members

    def load_many(self, table: str, records: Iterable[tuple[str, bytes | None]]) -> None:
        """Apply records in order (tests and benchmarks; offsets count from the current one)."""
        for key, value in records:
            self.apply(table, key, value, getattr(self.offsets, table))

    # ---- persistence ----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write a snapshot atomically (temp file + rename)."""
        with self._lock:
            snap = _Snapshot(format=SNAPSHOT_FORMAT, offsets=self.offsets, erased=list(self._erased),
                             merges=dict(self._edges), consent=dict(self._consent))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(msgspec.msgpack.encode(snap))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ControlTables:
        """A snapshot written by :meth:`save`; an empty table if there is none or it is unreadable."""
        tables = cls()
        if not path.exists():
            return tables
        try:
            snap = msgspec.msgpack.decode(path.read_bytes(), type=_Snapshot)
        except msgspec.DecodeError as exc:
            logger.warning("control snapshot %s unreadable (%s): reading the topics from the beginning", path, exc)
            return tables
        if snap.format != SNAPSHOT_FORMAT:
            return tables
        tables._erased = set(snap.erased)
        tables._edges = dict(snap.merges)
        tables._consent = snap.consent  # decoded as the declared tuple[bool, int] already
        tables._rebuild()
        tables.offsets = snap.offsets
        return tables


def merge_value(into: str, *, consent: Mapping[str, Any] | None = None, at: str | None = None,
                source: str = "warehouse") -> bytes:
    """The value of a ``control.identity`` record."""
    return orjson.dumps({"into": into, "consent": dict(consent or {}), "at": at, "source": source})


def erasure_value(*, request_id: str | None, at: str | None, source: str) -> bytes:
    """The value of a ``control.erasure`` record."""
    return orjson.dumps({"request_id": request_id, "at": at, "source": source})
