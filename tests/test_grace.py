"""The grace period: SIGKILL for what outstays it, never for what leaves in time.

- After SIGTERM/SIGINT/SIGQUIT, whatever is still alive in the child's group
  when --grace runs out gets SIGKILL (a child that ignores TERM => exit 137).
- --grace 0 waits forever.
- When the child exits, the rest of its group gets SIGTERM, then SIGKILL after
  the grace, and pyinit exits with the child's status. With -c nothing else is
  signalled.
The child is print_signals.py, which blocks (so survives) every catchable signal.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    SUBREAPER_ONLY,
    StartInit,
    base_env,
    find_descendant,
    is_dead,
    print_signals,
    stays_true,
    tagged_pids,
    wait_until,
)

READY = r"ready \(pid: \d+\)"


@INSTALLED_ONLY
def test_child_ignoring_term_is_killed_after_grace(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init([*pyinit_argv, "--grace", "1", "--", *print_signals()], prefix=as_pid1)
    proc.expect_line(READY)
    sent_at = time.monotonic()
    proc.send(signal.SIGTERM)
    assert proc.next_line() == "15"
    assert proc.wait(10) == 128 + signal.SIGKILL
    waited = proc.ended_at - sent_at
    assert 0.9 <= waited < 4, f"SIGKILL came {waited:.2f}s after SIGTERM, grace is 1s"


@INSTALLED_ONLY
@SUBREAPER_ONLY
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGQUIT], ids=lambda s: s.name)
def test_int_and_quit_start_the_grace_too(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, stop: signal.Signals
) -> None:
    proc = start_init([*pyinit_argv, "--grace", "0.5", "--", *print_signals()])
    proc.expect_line(READY)
    sent_at = time.monotonic()
    proc.send(stop)
    assert proc.next_line() == str(int(stop))
    assert proc.wait(10) == 137
    waited = proc.ended_at - sent_at
    assert 0.4 <= waited < 3, f"SIGKILL came {waited:.2f}s after {stop.name}, grace is 0.5s"


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_other_signals_do_not_start_the_grace(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init([*pyinit_argv, "--grace", "0.3", "--", *print_signals()])
    proc.expect_line(READY)
    child = proc.child_pid()
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGALRM):
        proc.send(signum)
        assert proc.next_line() == str(int(signum))
    stays_true(lambda: not is_dead(child), 1.0, "child alive: HUP/USR1/ALRM are not stop requests")


@SUBREAPER_ONLY
@pytest.mark.parametrize("how", ["-t", "variable", "single-child"])
def test_grace_spellings_and_single_child(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, how: str
) -> None:
    args, env = {
        "-t": (["-t", "0.5"], {}),
        "variable": ([], {"PYINIT_GRACE": "0.5"}),
        "single-child": (["-c", "--grace=0.5"], {}),
    }[how]
    proc = start_init([*pyinit_argv, *args, "--", *print_signals()], env=base_env(env))
    proc.expect_line(READY)
    sent_at = time.monotonic()
    proc.send(signal.SIGTERM)
    assert proc.next_line() == "15"
    assert proc.wait(10) == 137
    waited = proc.ended_at - sent_at
    assert 0.4 <= waited < 3, f"SIGKILL came {waited:.2f}s after SIGTERM, grace is 0.5s"


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_grace_zero_waits_forever(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init([*pyinit_argv, "--grace", "0", "--", *print_signals()])
    proc.expect_line(READY)
    child = proc.child_pid()
    proc.send(signal.SIGTERM)
    assert proc.next_line() == "15"
    stays_true(
        lambda: not is_dead(child) and proc.poll() is None,
        2.0,
        "child alive 2s after SIGTERM with --grace 0",
    )
    os.kill(child, signal.SIGKILL)
    assert proc.wait(5) == 137


@INSTALLED_ONLY
def test_leftover_group_member_gets_term_then_kill(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    """The child exits 7; its background process (ignores TERM) is TERMed, KILLed after 1s."""
    proc = start_init(
        [
            *pyinit_argv,
            "--grace",
            "1",
            "--",
            *print_signals(
                "--tag", "child", "--spawn-child", "bg", "--exit-on", "10", "--exit-code", "7"
            ),
        ],
        prefix=as_pid1,
    )
    proc.expect_lines([f"child: {READY}", f"bg: {READY}"], strict=True)
    bg = find_descendant(proc.pid, ["--tag", "bg"])
    proc.send(signal.SIGUSR1)  # the child exits 7 on it; bg just prints it
    proc.expect_lines(["child: 10", "bg: 10"], strict=True)
    assert proc.next_line() == "bg: 15", "the leftover did not get SIGTERM"
    termed_at = time.monotonic()
    assert proc.wait(10) == 7
    waited = proc.ended_at - termed_at
    assert 0.8 <= waited < 4, f"pyinit exited {waited:.2f}s after TERMing the leftover, grace 1s"
    wait_until(lambda: is_dead(bg), 2, "the leftover to be killed")


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_leftover_that_obeys_term_does_not_wait_for_grace(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init(
        [*pyinit_argv, "--grace", "5", "--", "sh", "-c", "sleep 60 & echo started; exit 4"]
    )
    proc.expect_line("started")
    assert proc.wait(4) == 4, "pyinit waited for the grace although the group had emptied"
    wait_until(lambda: not [p for p in tagged_pids(proc.tag)], 2, "nothing left behind")


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_single_child_exit_signals_nothing_else(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init(
        [
            *pyinit_argv,
            "-c",
            "--grace",
            "1",
            "--",
            *print_signals(
                "--tag", "child", "--spawn-child", "bg", "--exit-on", "10", "--exit-code", "7"
            ),
        ]
    )
    proc.expect_lines([f"child: {READY}", f"bg: {READY}"], strict=True)
    bg = find_descendant(proc.pid, ["--tag", "bg"])
    proc.send(signal.SIGUSR1)
    assert proc.next_line() == "child: 10"
    assert proc.wait(3) == 7
    assert proc.ended_at - proc.started_at < 3
    os.kill(bg, signal.SIGUSR2)
    assert proc.next_line() == "bg: 12", "with -c the leftover must not be signalled"


@INSTALLED_ONLY
def test_descendant_outside_the_group_is_stopped_before_pyinit_exits(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    """A daemon that left the group (setsid) still gets TERM, then KILL after the grace."""
    daemon = " ".join(print_signals("--tag", "daemon"))
    main = " ".join(print_signals("--tag", "main", "--exit-on", "10", "--exit-code", "3"))
    proc = start_init(
        [*pyinit_argv, "--grace", "1", "--", "sh", "-c", f"setsid {daemon} & exec {main}"],
        prefix=as_pid1,
    )
    proc.expect_lines([f"daemon: {READY}", f"main: {READY}"], strict=True)
    daemon_pid = find_descendant(proc.pid, ["--tag", "daemon"])
    proc.send(signal.SIGUSR1)  # only the main group gets it: main exits 3
    assert proc.next_line() == "main: 10"
    assert proc.next_line(2) == "daemon: 15", "the escaped descendant got no SIGTERM"
    assert proc.wait(10) == 3
    assert is_dead(daemon_pid), "the escaped descendant outlived pyinit"
