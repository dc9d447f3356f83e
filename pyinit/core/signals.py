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
default by exec, so children start clean.

What the parent left us (issue 7, items 9 and 10), as tini does: a signal
ignored when pyinit started stays ignored (pyinit does not catch it, so the
child inherits SIG_IGN), except SIGCHLD, which pyinit must see. Signals the
parent blocked are unblocked at start (a blocked SIGTERM would never be
forwarded), and the original mask is remembered for the child (`spawn`).
SIGPIPE and SIGXFSZ are ignored by Python itself at start-up, not by the
parent, so pyinit catches them and children get them at their default.

Overflow (item 8). A full pipe drops bytes (the C handler cannot block). Two
defences: the pipe is grown to /proc/sys/fs/pipe-max-size (1 MiB, so a
storm of 100,000 real-time signals fits), and the Python-level handler,
which runs at least once after any number of deliveries of a signal, records
which signals arrived since the last read. When a read finds the pipe was
full (it drained the pipe's whole capacity), bytes may have been dropped, and
the reader adds each recorded SIGCHLD or stop signal that is missing from
what it read: the reaper drains `waitpid` anyway, and a stop signal is never
lost. It then writes a 0 byte (no signal) to wake itself once more, for a
handler that ran just after the read, and checks again. In an overflow a
stop signal may so be handled twice (forwarded twice), never zero times.
Real-time signals beyond 1 MiB of backlog are still dropped.

Why not signalfd (through `_ctypes`)? It needs every signal blocked in
pyinit, and a mask survives exec: every spawn path would have to restore it,
and `subprocess.Popen` (services mode) does not. One forgotten path and a
service starts deaf to SIGTERM. The pipe has no such trap.

Our own SIGPIPE (item 7). A write of pyinit's to a pipe nobody reads raises
SIGPIPE in pyinit; forwarding that to the child would kill it. Writers call
`note_own_sigpipe()` on EPIPE, and `read_wakeup` drops that many SIGPIPE
bytes. A SIGPIPE sent by someone else (`kill -PIPE`) is still forwarded.

This module imports the C module `_signal` rather than `signal`: the latter
builds `enum` classes at import time, about 3 ms of start-up, a quarter of
pyinit's budget.
"""

import _signal
import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py

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


#: The signal mask pyinit started with (item 9); children get it back.
original_mask: frozenset[int] = frozenset()
#: The signals pyinit installed its handler for; exec resets exactly these.
caught: frozenset[int] = frozenset()
# Signals whose handler ran since the last read_wakeup (see "Overflow" above).
_arrived: set[int] = set()
# EPIPE results of pyinit's own writes whose SIGPIPE byte is still unread.
_own_sigpipes = 0
# Capacity of the wakeup pipe: a read of this much means it was full.
_capacity = 65536
_write_fd = -1  # the wakeup pipe's write end (for the re-check byte)
_rechecking = False  # an overflow was seen: the next read checks `_arrived` too
_MUST_NOT_LOSE = STOP_SIGNALS | {_signal.SIGCHLD}
# Python's own start-up ignores these; they are not the parent's choice.
_IGNORED_BY_PYTHON = frozenset({_signal.SIGPIPE, _signal.SIGXFSZ})
READ_SIZE = 65536  # per read(2): below malloc's mmap threshold, cheap to allocate
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, without importing fcntl


def _noop(signum: int, frame: object) -> None:
    """The whole handler: the C handler has already written `signum` to the
    wakeup fd; only remember that it came (see "Overflow" above)."""
    _arrived.add(signum)


def note_own_sigpipe() -> None:
    """A write of pyinit's failed with EPIPE: the SIGPIPE it raised is ours."""
    global _own_sigpipes
    _own_sigpipes += 1


def install_wakeup() -> int:
    """Route every catchable signal to a pipe; return its read end.

    Call before starting any child, so that a signal sent the instant a child
    exists is already waiting in the pipe when the loop starts reading.
    """
    global original_mask, caught, _write_fd
    read_fd, write_fd = posix.pipe2(posix.O_NONBLOCK | posix.O_CLOEXEC)
    _write_fd = write_fd
    _signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    handled = []
    for signum in catchable_signals():
        if (
            signum != _signal.SIGCHLD
            and signum not in _IGNORED_BY_PYTHON
            and _signal.getsignal(signum) == _signal.SIG_IGN
        ):
            continue  # ignored by our parent: stays ignored, for the child too
        _signal.signal(signum, _noop)
        handled.append(signum)
    caught = frozenset(handled)
    # Handlers first, then unblock: a pending signal is delivered to them.
    original_mask = frozenset(_signal.pthread_sigmask(_signal.SIG_SETMASK, ()))
    return read_fd


def grow_wakeup_pipe() -> None:
    """Make the wakeup pipe as large as the system allows (else keep 64 KiB).

    Called once the command runs (runner), not in install_wakeup(): it costs
    ~0.15 ms (reading the limit, fcntl's import, the kernel's resize), which
    then overlaps the command's own start instead of delaying it. Until then
    the default 64 KiB holds 65,536 signals, and the overflow defence above
    applies all the same.
    """
    global _capacity
    try:
        # posix.open, not open(): no buffered file object for 8 bytes.
        fd = posix.open("/proc/sys/fs/pipe-max-size", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            size = int(posix.read(fd, 32))
        finally:
            posix.close(fd)
        import fcntl  # a small C module; F_SETPIPE_SZ has no `os` spelling

        _capacity = fcntl.fcntl(_write_fd, F_SETPIPE_SZ, size)
    except (OSError, ValueError):
        pass  # no /proc, or a size we may not set: the 64 KiB default


def read_wakeup(fd: int) -> bytes:
    """Everything queued on the wakeup pipe: one byte per signal received.

    Drops the SIGPIPEs pyinit raised itself, and after a possible overflow
    adds the SIGCHLD and stop signals whose bytes were lost.
    """
    global _own_sigpipes, _arrived, _rechecking
    chunks = []
    total = 0
    while True:
        try:
            chunk = posix.read(fd, READ_SIZE)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if len(chunk) < READ_SIZE:
            break  # empty now; a later byte wakes epoll again (saves an EAGAIN per wakeup)
    # After reading: a handler that ran during the reads is in this set.
    arrived, _arrived = _arrived, set()
    data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    if b"\0" in data:
        data = data.replace(b"\0", b"")  # our own re-check byte, not a signal
    if _own_sigpipes and _signal.SIGPIPE in data:
        data, _own_sigpipes = _drop_own_sigpipes(data, _own_sigpipes)
    overflow = total >= _capacity
    if overflow or _rechecking:
        data += bytes(s for s in sorted(arrived & _MUST_NOT_LOSE) if s not in data)
    if overflow:
        # A handler whose byte was dropped may run just after the swap above:
        # wake the loop once more so the next read sees it (then, if that read
        # is clean, the episode ends).
        _rechecking = True
        try:
            posix.write(_write_fd, b"\0")
        except OSError:
            pass  # full again: it will wake us anyway
    else:
        _rechecking = False
    return data


def _drop_own_sigpipes(data: bytes, own: int) -> tuple[bytes, int]:
    """Remove up to `own` SIGPIPE bytes; return the rest and what is left of `own`."""
    kept = bytearray()
    for signum in data:
        if signum == _signal.SIGPIPE and own:
            own -= 1
        else:
            kept.append(signum)
    return bytes(kept), own


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
    the reaper. EAGAIN (a full real-time queue: RLIMIT_SIGPENDING) cannot be
    waited out without blocking the loop. EPERM (a group that changed owner,
    e.g. a setuid child) leaves nothing pyinit may do either.
    """
    if pid <= 0:
        return
    try:
        if group:
            posix.killpg(pid, signum)
        else:
            posix.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
    except BlockingIOError:
        pass  # EAGAIN: the target's real-time signal queue is full; the kernel drops it


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
