"""Every catchable signal pyinit receives reaches its child exactly once.

The child is print_signals.py: it blocks every signal, collects them with
sigwaitinfo and prints one number a line, so "exactly once" is checked by
reading the *next* line after each signal, with a sentinel at the end.
TSTP/TTIN/TTOU are job control (test_job_control.py); KILL and STOP cannot be
caught and CHLD is pyinit's own.
"""

from __future__ import annotations

import os
import signal

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    SUBREAPER_ONLY,
    StartInit,
    base_env,
    find_descendant,
    print_signals,
    proc_stat,
    run_init,
    support_script,
)

JOB_CONTROL = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}
FORWARDED = [s for s in range(1, 32) if s not in JOB_CONTROL | UNCATCHABLE | {signal.SIGCHLD}]
READY = r"ready \(pid: \d+\)"
MODES = {"group": [], "single-child": ["-c"]}


@pytest.mark.parametrize("mode", MODES)
def test_each_signal_reaches_child_exactly_once(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, mode: str
) -> None:
    proc = start_init(
        [*pyinit_argv, *MODES[mode], "--grace", "60", "--", *print_signals()], prefix=as_pid1
    )
    proc.expect_line(READY)
    for signum in FORWARDED:
        proc.send(signum)
        line = proc.next_line()
        assert line == str(signum), f"sent {signal.Signals(signum).name}, child printed {line!r}"
    # A sentinel: had the last signal been delivered twice, its number would come first.
    proc.send(signal.SIGUSR1)
    assert proc.next_line() == str(int(signal.SIGUSR1))
    assert proc.poll() is None, "pyinit exited while forwarding"


@INSTALLED_ONLY
def test_signal_is_forwarded_under_the_variable_single_child(
    pyinit_argv: list[str], start_init: StartInit
) -> None:
    proc = start_init(
        [*pyinit_argv, "--", *print_signals()], env=base_env({"PYINIT_SINGLE_CHILD": "1"})
    )
    proc.expect_line(READY)
    child = proc.child_pid()
    assert proc_stat(child).session == proc_stat(proc.pid).session
    proc.send(signal.SIGHUP)
    assert proc.next_line() == str(int(signal.SIGHUP))


@INSTALLED_ONLY
@pytest.mark.parametrize("mode", MODES)
def test_child_session_and_group(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, mode: str
) -> None:
    """Group mode: the child leads a new session (setsid). -c: it stays in pyinit's."""
    proc = start_init([*pyinit_argv, *MODES[mode], "--", *print_signals()], prefix=as_pid1)
    proc.expect_line(READY)
    child, init = proc_stat(proc.child_pid()), proc_stat(proc.pid)
    if mode == "group":
        assert (child.session, child.pgrp) == (child.pid, child.pid)
    else:
        assert (child.session, child.pgrp) == (init.session, init.pgrp)


def pipeline_command() -> list[str]:
    """`sh` running `left | right` in the background, reporting the signals it traps.

    A trap runs only when `wait` is interrupted, hence the background pipeline.
    `left` writes to the original stdout through fd 3, since its own goes to the pipe.
    """
    left = " ".join(print_signals("--tag", "left"))
    right = " ".join(print_signals("--tag", "right"))
    script = (
        'exec 3>&1; trap "echo sh: 28" WINCH; trap "echo sh: 23" URG; '
        f"{left} >&3 | {right} & "
        "while ! wait; do :; done"
    )
    return ["sh", "-c", script]


@pytest.mark.parametrize("mode", MODES)
def test_pipeline_delivery(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, mode: str
) -> None:
    """Group mode: the shell and both ends of its pipeline get the signal. -c: the shell only."""
    proc = start_init([*pyinit_argv, *MODES[mode], "--", *pipeline_command()], prefix=as_pid1)
    proc.expect_lines([f"left: {READY}", f"right: {READY}"], strict=True)
    members = {tag: find_descendant(proc.pid, ["--tag", tag]) for tag in ("left", "right")}
    for signum in (signal.SIGWINCH, signal.SIGURG):
        proc.send(signum)
        wanted = [f"sh: {signum:d}"]
        if mode == "group":
            wanted += [f"left: {signum:d}", f"right: {signum:d}"]
        proc.expect_lines(wanted, strict=True)
        # Sentinels sent straight to each end: whatever they print first must be the sentinel.
        for pid in members.values():
            os.kill(pid, signal.SIGUSR2)
        proc.expect_lines([f"{tag}: {signal.SIGUSR2:d}" for tag in members], strict=True)


@INSTALLED_ONLY
def test_spawned_grandchild_gets_group_signal(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    """A process the child starts itself (same group, no shell) gets forwarded signals too."""
    proc = start_init(
        [*pyinit_argv, "--", *print_signals("--tag", "child", "--spawn-child", "gc")],
        prefix=as_pid1,
    )
    proc.expect_lines([f"child: {READY}", f"gc: {READY}"], strict=True)
    proc.send(signal.SIGUSR1)
    proc.expect_lines(["child: 10", "gc: 10"], strict=True)


def test_support_script_paths_exist() -> None:
    """Guard: the harness points at real files (a typo would make other tests time out)."""
    assert os.path.isfile(support_script("print_signals.py")[-1])


@INSTALLED_ONLY
def test_sigchld_is_not_forwarded(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    """SIGCHLD is pyinit's own business: a SIGCHLD sent to pyinit never reaches the child."""
    proc = start_init([*pyinit_argv, "--", *print_signals("--catch-chld")], prefix=as_pid1)
    proc.expect_line(READY)
    proc.send(signal.SIGCHLD)
    proc.send(signal.SIGUSR1)
    assert proc.next_line() == str(int(signal.SIGUSR1)), "SIGCHLD was forwarded"


@INSTALLED_ONLY
def test_signal_storm_leaves_pyinit_working(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    """Thousands of signals as fast as we can send them: no crash, forwarding still works.

    Standard signals coalesce, so only the end state is checked: pyinit alive, a
    sentinel still forwarded, and the child's exit status still reported.
    """
    proc = start_init(
        [*pyinit_argv, "--", *print_signals("--exit-on", "15", "--exit-code", "9")],
        prefix=as_pid1,
    )
    proc.expect_line(READY)
    storm = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGWINCH, signal.SIGALRM]
    for i in range(5000):
        proc.send(storm[i % len(storm)])
    assert proc.poll() is None, "pyinit died in the signal storm"
    proc.send(signal.SIGTERM)
    allowed = {str(int(s)) for s in storm}
    while (line := proc.next_line()) != str(int(signal.SIGTERM)):
        assert line in allowed, f"unexpected line {line!r}"
    assert proc.wait(5) == 9


# glibc's posix_spawn sets its two internal signals (32, 33: SIGCANCEL, SIGSETXID) to
# SIG_IGN in the child, and that survives exec; glibc programs re-arm them on use.
# Every signal a program can use (1-31, SIGRTMIN-SIGRTMAX) must arrive at its default.
GLIBC_INTERNAL = {32, 33}


@pytest.mark.parametrize("mode", MODES)
@SUBREAPER_ONLY
def test_child_starts_with_default_signal_state(
    pyinit_argv: list[str], as_pid1: list[str], mode: str
) -> None:
    """No blocked signal and no SIG_IGN leaks from pyinit (Python ignores PIPE and XFSZ)."""
    command = ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"]
    result = run_init([*pyinit_argv, *MODES[mode], "--", *command])
    assert result.returncode == 0, result
    masks = dict(line.split(":\t") for line in result.stdout)
    for field in ("SigBlk", "SigIgn"):
        bits = int(masks[field], 16)
        leaked = [n for n in range(1, 65) if bits & (1 << (n - 1)) and n not in GLIBC_INTERNAL]
        assert not leaked, f"the child starts with {field} set for signals {leaked}"
