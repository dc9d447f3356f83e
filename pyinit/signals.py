"""Signals: how they reach pyinit's loop, and their names.

Design: why a wakeup fd and no-op handlers
------------------------------------------
An init must never lose a signal and never busy-poll. The options in Python:

* A handler that does the work (kill, waitpid, log) runs between two
  bytecodes of whatever the loop was doing: re-entrancy bugs, and a storm of
  signals turns into a storm of nested work (gunicorn #2816).
* `sigwaitinfo`/`pthread_sigmask`: needs every signal blocked, and a blocked
  mask survives exec, so each child would start with its signals blocked
  unless every spawn path undoes it.
* signalfd: not in the standard library, and needs the same mask.
* `SIG_IGN`: survives exec too; and `SIG_IGN` on SIGCHLD makes the kernel
  reap children itself, so their exit statuses are lost.

So pyinit installs a Python handler that does nothing, and asks the
interpreter's C-level handler to write each signal's number to a
non-blocking pipe (`set_wakeup_fd`). The loop reads the pipe like any other
fd: `epoll` wakes up exactly when a signal arrived, with no timeout needed,
and the work happens in the loop, in order. A caught handler is reset to the
default by exec, so children start clean. If the pipe ever filled up (64 KiB
of unread signals) the extra bytes would be dropped; the kernel already
merges repeats of a pending standard signal, and SIGCHLD is handled by
draining `waitpid` until nothing is left, so no child is lost either way.

This module imports the C module `_signal` rather than `signal`: the latter
builds `enum` classes at import time, about 3 ms of start-up, a quarter of
pyinit's budget.
"""

from __future__ import annotations

import _signal
import os

SIGCHLD = _signal.SIGCHLD
SIGCONT = _signal.SIGCONT
SIGHUP = _signal.SIGHUP
SIGINT = _signal.SIGINT
SIGKILL = _signal.SIGKILL
SIGQUIT = _signal.SIGQUIT
SIGSTOP = _signal.SIGSTOP
SIGTERM = _signal.SIGTERM

#: Signals that ask pyinit (and what it runs) to stop: they start the grace timer.
STOP_SIGNALS = frozenset({_signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT})

#: Terminal stop signals. A child in a new session has no controlling
#: terminal, so the kernel would discard these for it (orphaned process
#: group); dumb-init turns them into SIGSTOP, and so do we.
JOB_CONTROL_SIGNALS = frozenset({_signal.SIGTSTP, _signal.SIGTTIN, _signal.SIGTTOU})

_UNCATCHABLE = frozenset({_signal.SIGKILL, _signal.SIGSTOP})

# Old aliases: accepted as input, never printed.
_ALIASES = {"SIGIOT", "SIGPOLL", "SIGCLD"}


def catchable_signals() -> list[int]:
    """Every signal a handler can be installed for, real-time ones included."""
    return sorted(s for s in _signal.valid_signals() if s not in _UNCATCHABLE)


def _noop(signum: int, frame: object) -> None:
    """The whole handler: the C handler has already written `signum` to the
    wakeup fd. No work here, by design (see the module docstring)."""


def install_wakeup() -> int:
    """Route every catchable signal to a pipe; return its read end.

    Call before starting any child, so that a signal sent the instant a child
    exists is already waiting in the pipe when the loop starts reading.
    """
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in catchable_signals():
        _signal.signal(signum, _noop)
    return read_fd


def read_wakeup(fd: int) -> bytes:
    """Everything queued on the wakeup pipe: one byte per signal received."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


_names: dict[str, int] = {}


def _name_table() -> dict[str, int]:
    """SIGTERM -> 15 for every name `_signal` defines (built on first use)."""
    if not _names:
        _names.update(_build_name_table())
    return _names


def _build_name_table() -> dict[str, int]:
    return {
        name: int(value)
        for name, value in vars(_signal).items()
        if name.startswith("SIG")
        and not name.startswith("SIG_")
        and name not in ("SIGRTMIN", "SIGRTMAX")
    }


def signal_name(signum: int) -> str:
    """`15` -> `SIGTERM`; real-time signals as `SIGRTMIN+N`."""
    for name, value in _name_table().items():
        if value == signum and name not in _ALIASES:
            return name
    if _signal.SIGRTMIN <= signum <= _signal.SIGRTMAX:
        return f"SIGRTMIN+{signum - _signal.SIGRTMIN}"
    return f"signal {signum}"


def send(pid: int, signum: int, *, group: bool = False) -> None:
    """kill(2) or killpg(2), where "no such process" is not an error.

    A process that is already gone is not an event here: its exit reaches
    the reaper. EPERM (a group that changed owner, e.g. a setuid child) leaves
    nothing pyinit may do either.
    """
    if pid <= 0:
        return
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def parse_signal(text: str, *, allow_zero: bool = False) -> int:
    """`TERM`, `SIGTERM`, `term`, `15`, `RTMIN+2` -> a signal number.

    Raises ValueError with a message fit for `pyinit: error: ...`.
    """
    word = text.strip()
    if word.isdigit():
        number = int(word)
        if number == 0 and allow_zero:
            return 0
        if number in _signal.valid_signals():
            return number
        raise ValueError(f"no such signal number: {word}")
    upper = word.upper()
    if not upper.startswith("SIG"):
        upper = "SIG" + upper
    for base, value in (("SIGRTMIN", _signal.SIGRTMIN), ("SIGRTMAX", _signal.SIGRTMAX)):
        if upper == base:
            return int(value)
        if upper.startswith(base + "+") or upper.startswith(base + "-"):
            offset = upper[len(base) + 1 :]
            if offset.isdigit():
                number = value + int(offset) if upper[len(base)] == "+" else value - int(offset)
                if _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
                    return int(number)
    number = _name_table().get(upper, 0)
    if number:
        return number
    raise ValueError(f"unknown signal: {word!r}")
