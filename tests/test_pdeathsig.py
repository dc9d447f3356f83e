"""--pdeathsig SIG / PYINIT_PDEATHSIG: when pyinit's parent dies, pyinit gets SIG.

pyinit treats it like any signal it receives: it forwards it to the child (and
a TERM is a stop request). The parent is killed for real; orphan_launcher.py
catches pyinit afterwards so its exit status can still be checked.
"""

from __future__ import annotations

import os
import signal

from support.helpers import (
    SUBREAPER_ONLY,
    InitProcess,
    StartInit,
    base_env,
    children_of,
    print_signals,
    proc_stat,
    support_script,
    wait_until,
)

READY = r"ready \(pid: \d+\)"


def start_below_parent(
    start_init: StartInit, argv: list[str], env: dict[str, str] | None = None
) -> tuple[InitProcess, int]:
    """pyinit (argv) below a killable parent; returns (InitProcess, parent pid)."""
    proc = start_init(argv, prefix=support_script("orphan_launcher.py"), depth=2, env=base_env(env))
    proc.expect_line(READY)
    (parent,) = wait_until(lambda: children_of(proc.popen.pid), 5, "the intermediate parent")
    assert proc_stat(proc.pid).ppid == parent
    return proc, parent


@SUBREAPER_ONLY
def test_parent_death_signal_is_forwarded(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc, parent = start_below_parent(
        start_init,
        [
            *pyinit_argv,
            "--pdeathsig",
            "USR1",
            "--",
            *print_signals("--exit-on", "15", "--exit-code", "4"),
        ],
    )
    os.kill(parent, signal.SIGKILL)
    assert proc.next_line() == "10", "pyinit did not get (or forward) its parent-death signal"
    wait_until(lambda: proc_stat(proc.pid).ppid == proc.popen.pid, 5, "pyinit re-parented")
    proc.send(signal.SIGTERM)
    assert proc.next_line() == "15"
    assert proc.wait(5) == 4


@SUBREAPER_ONLY
def test_parent_death_term_from_variable_stops_the_child(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc, parent = start_below_parent(
        start_init,
        [
            *pyinit_argv,
            "-p",
            "SIGTERM",
            "--",
            *print_signals("--exit-on", "15", "--exit-code", "4"),
        ],
    )
    os.kill(parent, signal.SIGKILL)
    assert proc.next_line() == "15"
    assert proc.wait(5) == 4
    proc2, parent2 = start_below_parent(
        start_init,
        [*pyinit_argv, "--", *print_signals("--exit-on", "15", "--exit-code", "5")],
        env={"PYINIT_PDEATHSIG": "TERM"},
    )
    os.kill(parent2, signal.SIGKILL)
    assert proc2.next_line() == "15"
    assert proc2.wait(5) == 5


@SUBREAPER_ONLY
def test_without_pdeathsig_parent_death_sends_nothing(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc, parent = start_below_parent(start_init, [*pyinit_argv, "--", *print_signals()])
    os.kill(parent, signal.SIGKILL)
    wait_until(lambda: proc_stat(proc.pid).ppid == proc.popen.pid, 5, "pyinit re-parented")
    proc.send(signal.SIGUSR2)
    assert proc.next_line() == "12", "a signal arrived although no --pdeathsig was given"
