"""Process-tree helpers for tests that start the platform (read from /proc: no psutil in the venv)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of a live, non-zombie process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3])


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def platform_tree(root: int) -> set[int]:
    """Every live process started by ``root``: its children, and every member of a session a child leads
    (the platform starts each component in its own session, so grandchildren keep that session id)."""
    stats = {pid: s for pid in all_pids() if (s := _stat(pid)) is not None}
    children = {pid for pid, (ppid, _) in stats.items() if ppid == root}
    tree = set(children)
    tree |= {pid for pid, (_, sid) in stats.items() if sid in children}
    # descendants that moved to yet another session
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in tree and pid not in tree}
        tree |= more
        grew = bool(more)
    return tree


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if _stat(pid) is not None}
