"""When a process that exited on its own is started again: the one rule ``firstmile up`` (orchestration/supervisor.py)
and the delivery service (``python -m streaming.delivery``, one process per destination and lane) both apply.

A child that exits is restarted after a backoff that doubles with each *rapid* failure in a row (an exit less than
``healthy_after_s`` after its start), from ``first_delay_s`` up to ``max_delay_s``; a child that ran at least
``healthy_after_s`` starts over at ``first_delay_s``. After ``max_rapid_failures`` rapid failures in a row the
supervisor gives up on that child only (a crash loop is a fault to fix, not to hide) and says so; the other children
keep running. Pure: the caller supplies the clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Defaults: first restart after 1 s, doubling to at most 30 s; an exit within 60 s of the start is rapid; give
    up after 5 rapid failures in a row (about 1 + 2 + 4 + 8 s of trying, plus the child's own start time)."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0
    max_rapid_failures: int = 5


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """``delay_s`` before the next start, or ``None``: give up. ``rapid_failures``: the streak, this exit
    included (0 after a child that had run long enough)."""

    delay_s: float | None
    rapid_failures: int


def decide_restart(policy: RestartPolicy, *, started_at: float, exited_at: float, rapid_failures: int) -> (
        RestartDecision):
    """What to do about a child that started at ``started_at`` and exited at ``exited_at`` after ``rapid_failures``
    rapid failures in a row before this start."""
    if exited_at - started_at >= policy.healthy_after_s:
        return RestartDecision(policy.first_delay_s, 0)
    failures = rapid_failures + 1
    if failures >= policy.max_rapid_failures:
        return RestartDecision(None, failures)
    return RestartDecision(min(policy.max_delay_s, policy.first_delay_s * 2 ** (failures - 1)), failures)
