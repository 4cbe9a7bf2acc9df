"""What the warehouse tells the edge about people: the rows of the ``identity_merges`` and ``erasure_suppression_list``
marts as the control topics carry them, and the checks they must pass before anything is published.

The record formats are the hot path's (``streaming/control_tables.py``); this module only reads DuckDB (the
warehouse does not know Kafka). ``orchestration/defs/control.py`` publishes what it returns.

* A merge is ``from_profile_id → to_profile_id`` with the merged profile's consent, ``{purpose: [granted,
  decided_at_ms]}``: its latest explicit decision per purpose (``int_consent_decisions``: the ledger's
  ``consent_changed``, or a flip of the stamped consent, e.g. a revocation whose own event was suppressed). The edge
  folds it into the survivor, latest wins and a denial wins a tie, so a merge never widens consent.
* An erasure is every ``identifier_value`` of the suppression list: the values events carry (profile, user,
  anonymous and device ids, hashed emails).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from warehouse.duck import connect, table_exists


@dataclass(frozen=True)
class Merge:
    """One row of ``identity_merges``: the profile merged (the record's key) and the survivor's id."""

    from_profile_id: str
    to_profile_id: str
    #: purpose → [granted, decided_at epoch ms]
    consent: dict[str, list[bool | int]] = field(default_factory=dict)
    first_seen_at: str | None = None


@dataclass(frozen=True)
class Erasure:
    """One identifier of ``erasure_suppression_list`` and the profile whose erasure found it."""

    identifier_type: str
    identifier_value: str
    erased_profile_id: str | None


def _consent(raw: str | None) -> dict[str, list[bool | int]]:
    doc = json.loads(raw) if raw else {}
    return {str(purpose): [bool(v[0]), int(v[1])] for purpose, v in doc.items()}


def read_merges(duckdb_path: Path | str) -> list[Merge]:
    """Every row of ``identity_merges`` (empty when the mart was never built), ordered by merged profile."""
    with connect(duckdb_path) as con:
        if not table_exists(con, "identity_merges"):
            return []
        rows = con.execute("""select from_profile_id, to_profile_id, consent, cast(first_seen_at as varchar)
                              from identity_merges order by from_profile_id, to_profile_id""").fetchall()
    return [Merge(f, t, _consent(c), s) for f, t, c, s in rows]


def read_erasures(duckdb_path: Path | str, *, profile_ids: Iterable[str] | None = None) -> list[Erasure]:
    """Rows of ``erasure_suppression_list`` (only those found for ``profile_ids`` when given), ordered by value."""
    with connect(duckdb_path) as con:
        if not table_exists(con, "erasure_suppression_list"):
            return []
        rows = con.execute("""select identifier_type, identifier_value, erased_profile_id
                              from erasure_suppression_list order by identifier_value, identifier_type""").fetchall()
    wanted = None if profile_ids is None else set(profile_ids)
    return [Erasure(t, v, p) for t, v, p in rows if wanted is None or p in wanted]


def merge_cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Cycles among ``from → to`` merge edges: each as the profiles around it, starting at its smallest id; empty
    when the merges form chains that end in a survivor (what the edge can apply). Every cycle through a back edge
    of a depth-first search is reported, so at least one per group of profiles that merge into each other."""
    graph: dict[str, set[str]] = {}
    for source, into in edges:
        graph.setdefault(source, set()).add(into)
    cycles: set[tuple[str, ...]] = set()
    colour: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if root in colour:
            continue
        path: list[str] = [root]
        stack = [iter(sorted(graph.get(root, ())))]
        colour[root] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                colour[path.pop()] = 2
                stack.pop()
                continue
            target: str = step
            if colour.get(target) == 1:
                cycle = path[path.index(target):]
                pivot = cycle.index(min(cycle))
                cycles.add(tuple(cycle[pivot:] + cycle[:pivot]))
            elif target not in colour:
                colour[target] = 1
                path.append(target)
                stack.append(iter(sorted(graph.get(target, ()))))
    return [list(c) for c in sorted(cycles)]


def ambiguous_merges(merges: Iterable[Merge]) -> dict[str, list[str]]:
    """Merged profiles the warehouse sends into more than one survivor (a compacted topic would keep only one)."""
    targets: dict[str, set[str]] = {}
    for merge in merges:
        targets.setdefault(merge.from_profile_id, set()).add(merge.to_profile_id)
    return {source: sorted(found) for source, found in targets.items() if len(found) > 1}


def merges_touching_erased(merges: Iterable[Merge], erased: Iterable[str]) -> list[Merge]:
    """Merges out of or into an erased identifier: publishing one would re-attach an erased person's events (or
    attach someone's to an erased profile)."""
    gone = set(erased)
    return [m for m in merges if m.from_profile_id in gone or m.to_profile_id in gone]
