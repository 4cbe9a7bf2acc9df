"""The supervisor's restart rule with real processes: a child that exits is started again alone, with backoff, what
is left of its process group is stopped first, and a crash loop is given up on for that child only."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from orchestration.children import spawn
from orchestration.supervisor import Platform, PlatformOptions
from streaming.restarts import RestartPolicy, decide_restart
from tests.orchestration.processes import alive

FAST = RestartPolicy(first_delay_s=0.2, max_delay_s=1.0, healthy_after_s=3.0, max_rapid_failures=3)


def test_backoff_doubles_with_rapid_failures_and_starts_over_after_a_healthy_run() -> None:
    policy = RestartPolicy(first_delay_s=1, max_delay_s=30, healthy_after_s=60, max_rapid_failures=5)
    delays, failures = [], 0
    for _ in range(4):
        decision = decide_restart(policy, started_at=0, exited_at=5, rapid_failures=failures)
        delays.append(decision.delay_s)
        failures = decision.rapid_failures
    assert delays == [1, 2, 4, 8]
    assert decide_restart(policy, started_at=0, exited_at=5, rapid_failures=failures).delay_s is None  # 5th: give up
    # a child that ran a while before it exited is not in a crash loop: its streak starts over
    assert decide_restart(policy, started_at=0, exited_at=61, rapid_failures=4).delay_s == 1
    assert decide_restart(policy, started_at=0, exited_at=1, rapid_failures=3).delay_s == 8
    assert decide_restart(RestartPolicy(max_delay_s=3, max_rapid_failures=9), started_at=0, exited_at=1,
                          rapid_failures=6).delay_s == 3


def _supervise_until(platform: Platform, lines: list[str], done, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "\n".join(lines)
        platform.supervise(lines.append)
        time.sleep(0.05)


def test_a_crashing_child_is_restarted_then_given_up_on_alone_while_the_others_keep_running(tmp_path: Path) -> None:
    platform = Platform(options=PlatformOptions(data_dir=tmp_path, restart=FAST))
    env = dict(os.environ)
    crasher = spawn("crasher", [sys.executable, "-c", "import sys, time; time.sleep(0.2); sys.exit(3)"], env,
                     tmp_path)
    steady = spawn("steady", [sys.executable, "-c", "import time; time.sleep(120)"], env, tmp_path)
    platform.children += [crasher, steady]
    steady_pid = steady.process.pid
    lines: list[str] = []
    try:
        started = time.monotonic()
        _supervise_until(platform, lines, lambda: crasher.gave_up)
        took = time.monotonic() - started
        assert crasher.exits == [3, 3, 3]
        assert platform.gave_up() == [crasher]
        # backoff between the starts: 0.2 s then 0.4 s (plus each run's 0.2 s)
        assert took >= 0.2 + 0.4 + 3 * 0.2, took
        assert sum("crasher exited with 3" in line for line in lines) == 2, lines
        assert any(line.startswith("GAVE UP on crasher: exited with 3, 3 times in a row") for line in lines), lines
        assert steady.alive() and steady.process.pid == steady_pid and steady.exits == []
        assert (tmp_path / "crasher.log").read_text().count("restarting crasher (last exit 3)") == 2
        # given up: stays down
        for _ in range(10):
            platform.supervise(lines.append)
        assert not crasher.alive() and crasher.exits == [3, 3, 3]
    finally:
        platform.stop()
    assert not steady.alive()


def test_a_killed_child_comes_back_and_its_orphaned_group_is_stopped_first(tmp_path: Path) -> None:
    """kill -9 of a leader (``python -m streaming.delivery``, ``dagster dev``) orphans its children: they must not
    run on beside the new incarnation (twice the lanes; a webserver holding the port)."""
    platform = Platform(options=PlatformOptions(data_dir=tmp_path, restart=FAST))
    leader_code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
                   "'import time; time.sleep(120)']); time.sleep(120)")
    leader = spawn("leader", [sys.executable, "-c", leader_code], dict(os.environ), tmp_path)
    platform.children.append(leader)
    lines: list[str] = []
    try:
        first = leader.process.pid
        deadline = time.monotonic() + 10
        while not (grandchildren := _group_members(first) - {first}):
            assert time.monotonic() < deadline, "the leader never started its child"
            time.sleep(0.05)
        os.kill(first, signal.SIGKILL)
        _supervise_until(platform, lines, lambda: leader.process.pid != first and leader.alive())
        assert leader.exits == [-signal.SIGKILL]
        assert any(line.startswith(f"leader exited with {-signal.SIGKILL}") for line in lines), lines
        assert alive(grandchildren) == set(), "the killed leader's child outlived it"
    finally:
        platform.stop()
    assert _group_members(leader.process.pid) == set()


def _group_members(pgid: int) -> set[int]:
    members = set()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getpgid(pid) == pgid and alive({pid}):
                members.add(pid)
        except ProcessLookupError:
            pass
    return members
