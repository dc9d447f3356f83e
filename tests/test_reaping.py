"""pyinit reaps every orphan: as PID 1, and as a child subreaper when it is not.

The bar is tini's reaping test: the orphan must really have been re-parented
to pyinit (it reports its new parent), and then must disappear from /proc, not
linger as a zombie. A storm of 10,000 orphaned zombies must all be reaped, and
pyinit must still forward signals and exit correctly afterwards.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    StartInit,
    children_of,
    is_dead,
    is_gone,
    support_script,
    wait_until,
    zombie_children,
)

READY = r"ready \(pid: \d+\)"
ORPHAN = r"orphan (\d+) ppid (\d+)"


def only_live_child(pid: int) -> bool:
    """pyinit has exactly one child, alive: no orphan, zombie or not, is left with it."""
    kids = children_of(pid)
    return len(kids) == 1 and not is_dead(kids[0])


@pytest.mark.parametrize("count", [1, 20])
def test_double_fork_orphans_are_reaped(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, count: int
) -> None:
    proc = start_init(
        [*pyinit_argv, "--", *support_script("double_fork.py", str(count))], prefix=as_pid1
    )
    # `ready` and the orphans' reports come in any order.
    orphans, ready = [], False
    while len(orphans) < count or not ready:
        line = proc.next_line(15)
        if re.fullmatch(READY, line):
            ready = True
            continue
        match = re.fullmatch(ORPHAN, line)
        assert match, f"unexpected line {line!r}"
        orphans.append((int(match[1]), int(match[2])))
    new_parent = 1 if as_pid1 else proc.pid
    assert {ppid for _, ppid in orphans} == {new_parent}, "orphans were not re-parented to pyinit"
    # The orphans outlive their report by a moment: wait for pyinit's only child to be
    # the command itself (a zombie orphan would be listed as a child too).
    wait_until(
        lambda: only_live_child(proc.pid),
        5,
        lambda: f"pyinit to reap its orphans (zombies: {zombie_children(proc.pid)})",
    )
    if not as_pid1:  # host pids: each orphan is gone altogether
        assert all(is_gone(pid) for pid, _ in orphans)
    proc.send(signal.SIGTERM)
    assert proc.next_line() == "15"
    assert proc.wait(5) == 0


@INSTALLED_ONLY
def test_zombie_storm_is_reaped(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init(
        [*pyinit_argv, "--", *support_script("storm.py", "10000", "1000")], prefix=as_pid1
    )
    proc.expect_line("storm done 10000", timeout=60)
    done_at = time.monotonic()
    proc.expect_line(READY)
    wait_until(
        lambda: only_live_child(proc.pid),
        30,
        lambda: f"pyinit to reap 10,000 zombies ({len(zombie_children(proc.pid))} left)",
    )
    reaped_after = time.monotonic() - done_at
    # Still forwarding, and still exiting with the child's status.
    proc.send(signal.SIGUSR1)
    assert proc.next_line() == "10"
    proc.send(signal.SIGTERM)
    assert proc.next_line() == "15"
    assert proc.wait(10) == 3
    print(f"storm: all zombies reaped {reaped_after:.3f}s after the last spawner exited")
