"""--rewrite SRC:DST / PYINIT_REWRITE: the signal pyinit forwards instead of the one it got.

The child prints each signal it receives; a sentinel signal after each check
shows that nothing else (the original signal, a duplicate) arrived.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    SUBREAPER_ONLY,
    InitProcess,
    StartInit,
    base_env,
    is_dead,
    print_signals,
    stays_true,
)

READY = r"ready \(pid: \d+\)"
USR1, USR2, TERM, INT, HUP, QUIT = (
    int(s)
    for s in (
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
    )
)
SENTINEL = int(signal.SIGWINCH)


def start_printer(
    start_init: StartInit,
    pyinit_argv: list[str],
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> InitProcess:
    """pyinit running print_signals, after its `ready` line."""
    proc = start_init(
        [*pyinit_argv, "--grace", "60", *args, "--", *print_signals()],
        env=base_env(env),
        prefix=prefix,
    )
    proc.expect_line(READY)
    return proc


def assert_delivers(proc: InitProcess, sent: int, received: int | None) -> None:
    """Send ``sent`` to pyinit; the child gets exactly ``received`` (None: nothing)."""
    proc.send(sent)
    if received is not None:
        assert proc.next_line() == str(received), f"sent {sent}"
    proc.send(SENTINEL)
    assert proc.next_line() == str(SENTINEL), f"sent {sent}, expected {received}"


@INSTALLED_ONLY
@pytest.mark.parametrize(
    "spec", ["TERM:USR1", "SIGTERM:SIGUSR1", "15:10", "SIGTERM:10", "15:USR1", "term:usr1"]
)
def test_rewrite_spellings(pyinit_argv: list[str], start_init: StartInit, spec: str) -> None:
    proc = start_printer(start_init, pyinit_argv, ["--rewrite", spec])
    assert_delivers(proc, TERM, USR1)
    assert_delivers(proc, USR2, USR2)  # other signals untouched


@INSTALLED_ONLY
def test_several_rewrites_and_short_flag(pyinit_argv: list[str], start_init: StartInit) -> None:
    proc = start_printer(
        start_init, pyinit_argv, ["-r", "USR1:USR2", "-r", "USR2:USR1", "--rewrite=HUP:QUIT"]
    )
    assert_delivers(proc, USR1, USR2)
    assert_delivers(proc, USR2, USR1)
    assert_delivers(proc, HUP, QUIT)


@INSTALLED_ONLY
def test_rewrite_to_zero_drops(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_printer(start_init, pyinit_argv, ["-r", "USR1:0", "-r", "HUP:0"], prefix=as_pid1)
    assert_delivers(proc, USR1, None)
    assert_delivers(proc, HUP, None)
    assert_delivers(proc, USR2, USR2)


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_dropped_term_does_not_start_grace(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    """With TERM dropped, the 0.5 s grace never runs out: the child lives on."""
    proc = start_init([*pyinit_argv, "--grace", "0.5", "-r", "TERM:0", "--", *print_signals()])
    proc.expect_line(READY)
    child = proc.child_pid()
    proc.send(TERM)
    stays_true(
        lambda: not is_dead(child) and proc.poll() is None,
        1.5,
        "child alive and pyinit running after a dropped SIGTERM",
    )
    assert_delivers(proc, USR1, USR1)
    assert proc.stdout_lines[1:] == [str(USR1), str(SENTINEL)], "the dropped TERM reached the child"


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_rewritten_term_still_starts_grace(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    """TERM rewritten to USR1 is still a stop request: after the grace, SIGKILL (137)."""
    proc = start_init([*pyinit_argv, "--grace", "0.5", "-r", "TERM:USR1", "--", *print_signals()])
    proc.expect_line(READY)
    proc.send(TERM)
    assert proc.next_line() == str(USR1)
    assert proc.wait(5) == 137


@INSTALLED_ONLY
def test_rewrite_from_variable(pyinit_argv: list[str], start_init: StartInit) -> None:
    proc = start_printer(
        start_init, pyinit_argv, env={"PYINIT_REWRITE": "TERM:USR1,INT:0,SIGHUP:12"}
    )
    assert_delivers(proc, TERM, USR1)
    assert_delivers(proc, INT, None)
    assert_delivers(proc, HUP, USR2)


@INSTALLED_ONLY
def test_rewrite_flag_replaces_variable(pyinit_argv: list[str], start_init: StartInit) -> None:
    """The flags replace the variable's whole list: TERM is no longer rewritten."""
    proc = start_printer(
        start_init, pyinit_argv, ["-r", "HUP:USR2"], env={"PYINIT_REWRITE": "TERM:USR1,INT:0"}
    )
    assert_delivers(proc, HUP, USR2)
    assert_delivers(proc, INT, INT)
    assert_delivers(proc, TERM, TERM)


@pytest.mark.parametrize("mode", [[], ["-c"]], ids=["group", "single-child"])
@SUBREAPER_ONLY
def test_rewrite_in_both_modes_and_builds(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, mode: list[str]
) -> None:
    proc = start_printer(start_init, pyinit_argv, [*mode, "-r", "QUIT:USR2", "-r", "USR1:0"])
    assert_delivers(proc, QUIT, USR2)
    assert_delivers(proc, USR1, None)
