"""Job control as dumb-init does it.

Group mode: SIGTSTP/SIGTTIN/SIGTTOU become SIGSTOP for the child's group (a
setsid group would ignore the tty stop signals), then pyinit stops itself;
SIGCONT resumes both. With -c they are forwarded as they are. As PID 1 the
kernel ignores the SIGSTOP pyinit sends itself, so only the group stops.
States are read from /proc (`T` = stopped).
"""

from __future__ import annotations

import signal

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    StartInit,
    find_descendant,
    print_signals,
    process_state,
    wait_until,
)

READY = r"ready \(pid: \d+\)"
STOPS = [signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU]
CONT = int(signal.SIGCONT)


def stopped(pid: int) -> bool:
    return process_state(pid) == "T"


def running(pid: int) -> bool:
    return process_state(pid) in ("R", "S", "D")


@INSTALLED_ONLY
@pytest.mark.parametrize("stop", STOPS, ids=lambda s: s.name)
def test_group_mode_stops_group_and_pyinit(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, stop: signal.Signals
) -> None:
    proc = start_init(
        [*pyinit_argv, "--", *print_signals("--tag", "child", "--spawn-child", "gc")],
        prefix=as_pid1,
    )
    proc.expect_lines([f"child: {READY}", f"gc: {READY}"], strict=True)
    child, grandchild = proc.child_pid(), find_descendant(proc.pid, ["--tag", "gc"])
    proc.send(stop)
    wait_until(lambda: stopped(child) and stopped(grandchild), 5, "the child's group to stop")
    if as_pid1:
        assert running(proc.pid), "pyinit as PID 1 cannot be stopped"
    else:
        wait_until(lambda: stopped(proc.pid), 5, "pyinit to stop itself")
    proc.send(signal.SIGCONT)
    wait_until(
        lambda: running(child) and running(grandchild) and running(proc.pid),
        5,
        "pyinit and the group to resume",
    )
    # The stop signal became SIGSTOP: the printers see SIGCONT, never the stop signal itself.
    proc.expect_lines([f"child: {CONT}", f"gc: {CONT}"], strict=True)
    proc.send(signal.SIGUSR1)
    proc.expect_lines(["child: 10", "gc: 10"], strict=True)


@INSTALLED_ONLY
@pytest.mark.parametrize("stop", STOPS, ids=lambda s: s.name)
def test_single_child_forwards_stop_signal_as_is(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, stop: signal.Signals
) -> None:
    proc = start_init([*pyinit_argv, "-c", "--", *print_signals()], prefix=as_pid1)
    proc.expect_line(READY)
    child = proc.child_pid()
    proc.send(stop)
    assert proc.next_line() == str(int(stop)), "the child gets the stop signal itself"
    if not as_pid1:
        wait_until(lambda: stopped(proc.pid), 5, "pyinit to stop itself")
    assert running(child), "a child that blocks the signal keeps running"
    proc.send(signal.SIGCONT)
    wait_until(lambda: running(proc.pid), 5, "pyinit to resume")
    assert proc.next_line() == str(CONT)


@pytest.mark.parametrize("as_pid1", ["subreaper"], indirect=True)
def test_stop_and_continue_with_both_builds(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init([*pyinit_argv, "--", *print_signals("--exit-on", "15", "--exit-code", "5")])
    proc.expect_line(READY)
    child = proc.child_pid()
    proc.send(signal.SIGTSTP)
    wait_until(lambda: stopped(child) and stopped(proc.pid), 5, "child and pyinit to stop")
    proc.send(signal.SIGCONT)
    assert proc.next_line() == str(CONT)
    assert running(child)
    # Still a working init afterwards: the child exits on TERM and so does pyinit.
    proc.send(signal.SIGTERM)
    assert proc.next_line() == str(int(signal.SIGTERM))
    assert proc.wait(5) == 5
