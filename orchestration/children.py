"""The platform's child processes: how one is started in its own process group, stopped with its whole group, and
waited for. :mod:`orchestration.supervisor` decides which to start, in what order, and when to restart one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streaming.errors import FirstmileError

logger = logging.getLogger(__name__)

#: How long a process group gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 15.0


class PlatformError(FirstmileError, RuntimeError):
    """A component did not start, or died while the platform was running."""


@dataclass
class Child:
    """A component's process, and what it takes to start it again."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    argv: list[str]
    env: dict[str, str]
    url: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    #: exits in a row, each soon after its start (streaming.restarts)
    rapid_failures: int = 0
    #: when the exited child is due to start again; None while it runs (or once given up on)
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)
    gave_up: bool = False

    def alive(self) -> bool:
        return self.process.poll() is None


def stop_group(process: subprocess.Popen[bytes], *, name: str, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, wait, then SIGKILL the group. The child leads its own group
    (``start_new_session``), so the group id is its pid, and the group outlives a leader that died: its members
    (a delivery service's lanes, ``dagster dev``'s webserver) are stopped too."""
    try:
        pgid: int | None = os.getpgid(process.pid)
    except ProcessLookupError:
        pgid = None
    if process.poll() is not None:
        pgid = process.pid  # the leader is gone (and reaped); its group may still have members
    if pgid is not None and pgid == process.pid:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if _group_gone(pgid, process, wait):
                break
    elif process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    try:
        process.wait(5.0)
    except subprocess.TimeoutExpired:
        logger.error("%s (pid %d) did not exit", name, process.pid)
    logger.info("%s stopped (exit %s)", name, process.returncode)


def _group_gone(pgid: int, leader: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader.poll()  # reap the leader, or the group keeps a zombie member
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        time.sleep(0.1)
    return False


def http_ok(url: str, *, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs we built
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(check: Callable[[], bool], *, what: str, timeout: float, watch: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if watch is not None and not watch.alive():
            raise PlatformError(f"{watch.name} exited with {watch.process.returncode} before it was ready; "
                                f"see {watch.log}")
        time.sleep(0.25)
    raise PlatformError(f"{what} was not ready within {timeout:.0f}s" + (f"; see {watch.log}" if watch else ""))


def spawn(name: str, argv: list[str], env: dict[str, str], logs: Path, *, url: str | None = None) -> Child:
    log = logs / f"{name}.log"
    out = log.open("ab")
    try:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    finally:
        out.close()  # the child holds its own descriptor
    logger.info("started %s (pid %d)", name, process.pid)
    return Child(name=name, process=process, log=log, argv=argv, env=env, url=url)
