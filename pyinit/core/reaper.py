"""Reaping: the only module that calls `waitpid`.

One reaper for the whole process. Once anything calls `waitpid(-1)`,
`Popen.wait()`/`poll()` can no longer be trusted (they report a child reaped
here as exit 0), so nothing in pyinit uses them.
"""

import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py

from pyinit.core.model import ExitStatus

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def reap() -> list[tuple[int, ExitStatus]]:
    """Collect every child that has ended, without blocking.

    SIGCHLD is not queued: one signal may stand for many deaths, so drain
    until the kernel says nothing is left (0) or we have no children (ECHILD).
    Orphans reparented to us (as PID 1 or subreaper) are reaped here too.
    """
    return [(pid, ExitStatus.from_wait_status(status)) for pid, status in reap_raw()]


def reap_raw() -> list[tuple[int, int]]:
    """`reap()` with raw wait statuses: the per-orphan path of a zombie storm
    builds no object it does not need (issue 7, item 28)."""
    reaped = []
    waitpid = posix.waitpid
    nohang = posix.WNOHANG
    while True:
        try:
            pid, status = waitpid(-1, nohang)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, status))
    return reaped


def has_children() -> bool:
    """Does this process have any child, alive or zombie? (Reaps nothing.)

    As PID 1 or a subreaper, every descendant hangs below a living child of
    ours, so "no children" means "no descendants" without reading /proc.
    """
    try:
        posix.waitid(posix.P_ALL, 0, posix.WEXITED | posix.WNOHANG | posix.WNOWAIT)
    except ChildProcessError:
        return False
    return True


class ProcUnreadable(OSError):
    """/proc cannot be listed (not mounted, or hidden): descendants are unknown."""


def descendants(root: int) -> list[int]:
    """Every live process below `root`, from /proc (parents before children).

    Zombies are left out, since the reaper owns them. Raises ProcUnreadable
    (an OSError) when /proc cannot be listed: "none found" and "cannot look"
    must not read the same, or a sweep finishes while a daemon still runs.
    `signal_descendants()` needs no /proc when pyinit is PID 1.
    """
    children: dict[int, list[int]] = {}
    try:
        names = posix.listdir("/proc")
    except OSError as error:
        raise ProcUnreadable(error.errno, f"cannot list /proc: {error.strerror}") from None
    if "self" not in names:
        raise ProcUnreadable(0, "/proc is not a procfs")
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # it exited while we looked
        # Fields after the command name, which may itself hold ") ".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    queue = list(children.get(root, ()))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, ()))
    return found


def signal_descendants(signum: int) -> int:
    """Send `signum` to every process below us; return how many were reached.

    As PID 1, `kill(-1, signum)` reaches every process of the namespace but
    ourselves, with no /proc needed: returns 1 if it reached any, 0 if none
    is left (ESRCH). Otherwise each pid of `descendants(posix.getpid())` is
    signalled; raises ProcUnreadable when /proc cannot be listed.
    """
    if posix.getpid() == 1:
        try:
            posix.kill(-1, signum)
        except ProcessLookupError:
            return 0
        except PermissionError:
            return 1  # someone is there, and we may not signal them
        return 1
    reached = 0
    for pid in descendants(posix.getpid()):
        try:
            posix.kill(pid, signum)
            reached += 1
        except (ProcessLookupError, PermissionError):
            pass
    return reached


def _prctl(option: int, arg: int) -> None:
    """prctl(2) through `_ctypes`, the C half of ctypes.

    The standard library has no prctl. `import ctypes` costs ~1.4 ms (it
    builds dozens of types at import), `_ctypes` a third of that. Imported
    here, not at the top: as PID 1 (the container case) pyinit needs no
    prctl and start-up skips it entirely. One function type and no argument
    types (each ctypes type costs 15-35 us to create): without a restype the
    call returns a C int, and Python ints go as C ints, which libffi widens
    to the 64-bit registers prctl's variadic arguments are read from
    (x86_64 and aarch64), so small non-negative values arrive unchanged.
    """
    import _ctypes

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO

    libc = _ctypes.dlopen(None, posix.RTLD_NOW)  # type: ignore[arg-type]  # None: the process itself
    prctl = Function(_ctypes.dlsym(libc, "prctl"))
    if prctl(option, arg, 0, 0, 0) != 0:
        errno = _ctypes.get_errno()
        raise OSError(errno, posix.strerror(errno))


def become_subreaper() -> None:
    """Make orphans of our descendants ours (as PID 1 has them anyway).

    Without this, a double-forked grandchild is reparented to the host's
    init (or the container runtime's shim) and pyinit cannot reap or stop it.
    """
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send `signum` to us when our parent dies."""
    _prctl(PR_SET_PDEATHSIG, signum)
