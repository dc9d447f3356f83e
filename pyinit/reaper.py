"""Reaping: the only module that calls `waitpid`.

One reaper for the whole process. Once anything calls `waitpid(-1)`,
`Popen.wait()`/`poll()` can no longer be trusted (they report a child reaped
here as exit 0), so nothing in pyinit uses them.
"""

from __future__ import annotations

import os

from pyinit.model import ExitStatus

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def reap() -> list[tuple[int, ExitStatus]]:
    """Collect every child that has ended, without blocking.

    SIGCHLD is not queued: one signal may stand for many deaths, so drain
    until the kernel says nothing is left (0) or we have no children (ECHILD).
    Orphans reparented to us (as PID 1 or subreaper) are reaped here too.
    """
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, ExitStatus.from_wait_status(status)))
    return reaped


def _prctl(option: int, arg: int) -> None:
    # ctypes is imported here, not at the top: as PID 1 (the container case)
    # neither call below is needed and start-up skips the import.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def become_subreaper() -> None:
    """Make orphans of our descendants ours (as PID 1 has them anyway).

    Without this, a double-forked grandchild is reparented to the host's
    init (or the container runtime's shim) and pyinit cannot reap or stop it.
    """
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send `signum` to us when our parent dies."""
    _prctl(PR_SET_PDEATHSIG, signum)
