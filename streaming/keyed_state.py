"""The state a stage keeps per key: the interface the decisions read and write, and how it is stored.

Quix gives a stateful step a ``State`` scoped to the message key (the device in stage 1, the profile in stage 2);
tests and batch replays use :class:`DictState`. Either way a stage reads and writes one :class:`PackedState` entry.
"""

from __future__ import annotations

from typing import Any, Protocol


class State(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...


class DictState:
    """A plain-dict :class:`State` for tests and batch replays."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


class PackedState:
    """All of one key's state under a single state entry: one read and at most one write per event.

    Quix stores every entry in RocksDB and its changelog; five small keys cost five reads and up to three writes
    per event (≈ 15% of the worker's time, measured by bench_hotpath.py). A part set to None is dropped on
    :meth:`flush`; nothing is written before it, so an event that raised leaves the state as it was.
    """

    def __init__(self, state: State, name: str) -> None:
        self._state, self._name = state, name
        self.data: dict[str, Any] = dict(state.get(name) or {})
        self.dirty = False

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self._state.set(self._name, {k: v for k, v in self.data.items() if v is not None})
