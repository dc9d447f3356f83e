"""Starting COMMAND: vfork + exec, and the 126/127 errors users expect.

How: `_posixsubprocess.fork_exec`, the C half of `subprocess`, without
`subprocess` itself (importing that costs ~9 ms: `locale`, `re`, `enum`).
It uses vfork(): the child borrows pyinit's memory until it execs, so
nothing is copied. A fork() of a 10 MiB Python process cost 1.5 ms from
fork to the child's exec here, vfork 0.5 ms: a third of pyinit's start-up.
Its child runs no Python: it blocks every signal around the vfork, resets
each caught handler to the default, restores the signal mask pyinit had
when it called (the one pyinit started with: see `_with_mask`), setsid()s,
closes every descriptor but 0, 1 and 2 (SPEC 9, whatever the parent left
without close-on-exec), and execs each PATH candidate in turn as execvp
does. An exec failure comes back on a close-on-exec pipe as an errno, so
"command not found" is an error here (127/126), not a child that exits 127.
Its argument list is private but has been the same from 3.11 to 3.14; a
Python where it is not falls back to the fork path below (TypeError is
raised before anything is forked).

Why not `posix_spawn` (issue 7, items 10 and 11): glibc's sets its
internal signals 32 and 33 to SIG_IGN in every child (they cannot be named
in `setsigdef`), so each child would start with two signals ignored that
its parent never ignored. `fork_exec` resets handlers with raw sigaction.

The fork path, for handing the terminal over (TIOCSCTTY, as dumb-init does,
a step neither posix_spawn nor fork_exec can take) and as the fallback:
every signal is blocked around the fork (so no handler runs in the child
and no byte reaches pyinit's wakeup pipe from it), then the child sets up
its session, takes the terminal, restores the mask pyinit started with,
closes nothing (every descriptor pyinit holds is close-on-exec: `runner`)
and execs. Nothing returns from the child: `os._exit` in a `finally`.
Handlers pyinit installed are reset to the default by exec itself; signals
that were ignored when pyinit started stay ignored, on both paths.
"""

import _signal
import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py
import sys

from pyinit.core import signals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import NoReturn

#: Exit statuses for a command that could not be started, as shells and
#: tini report them: 127 "not found", 126 "found but cannot run".
EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126

TIOCSCTTY = 0x540E  # termios.TIOCSCTTY on Linux; termios itself is not needed
TIOCNOTTY = 0x5422
#: errno numbers (Linux, as all of pyinit): the errno module costs ~50 us to import.
ENOENT = 2
EINVAL = 22
DEFAULT_PATH = b"/bin:/usr/bin"  # os.defpath, for an environment without PATH


class SpawnError(Exception):
    """COMMAND could not be started; `status` is what pyinit exits with."""

    def __init__(self, command: str, error: OSError) -> None:
        self.status = EXIT_NOT_FOUND if error.errno == ENOENT else EXIT_CANNOT_RUN
        reason = error.strerror or str(error)
        # One line whatever the name holds (issue 7, item 21).
        shown = command.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(f"{shown}: {reason}")


def spawn(
    argv: list[str],
    *,
    new_session: bool,
    env: "Mapping[str, str] | None" = None,
    take_tty: bool = False,
) -> int:
    """Start `argv` (looked up on PATH) and return its pid.

    With `new_session` the child calls setsid(): it leads a new session and
    process group whose id is its pid, so the group can be signalled as one.
    With `take_tty` too, it makes stdin (a terminal) its controlling
    terminal, so an interactive shell gets job control and /dev/tty.
    The child starts with the signal mask and ignored signals pyinit started
    with, nothing of pyinit's own set-up, and `env` (default: pyinit's).
    """
    encoding = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    if env is None:
        environ: Mapping[bytes, bytes] = posix.environ  # bytes, as exec takes it
    else:
        environ = {k.encode(*encoding): v.encode(*encoding) for k, v in env.items()}
    candidates = _candidates(argv[0].encode(*encoding), environ.get(b"PATH", DEFAULT_PATH))
    if not take_tty:
        env_list = None if env is None else [k + b"=" + v for k, v in environ.items()]
        pid = _vfork_exec(argv, candidates, env_list, new_session)
        if pid is not None:
            return pid
    report_read, report_write = posix.pipe2(posix.O_CLOEXEC)
    everything = _signal.valid_signals()
    blocked = _signal.pthread_sigmask(_signal.SIG_BLOCK, everything)
    try:
        pid = posix.fork()
        if pid == 0:
            _child(argv, candidates, environ, new_session, take_tty, report_write)
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, blocked)
        posix.close(report_write)
    try:
        report = _read_all(report_read)
    finally:
        posix.close(report_read)
    if report:
        _failed(pid, argv[0], int(report))
    return pid


def _vfork_exec(
    argv: list[str], candidates: list[bytes], env_list: list[bytes] | None, new_session: bool
) -> int | None:
    """`fork_exec` (see the module docstring); None where this Python has none we know."""
    try:
        from _posixsubprocess import fork_exec as _fork_exec
    except ImportError:
        return None
    fork_exec: Callable[..., int] = _fork_exec  # typeshed has cwd and preexec_fn never None
    report_read, report_write = posix.pipe2(posix.O_CLOEXEC)
    # fork_exec hands the caller's signal mask to the child: make it the one
    # pyinit started with (usually empty, as pyinit's own: then no syscall).
    # A signal blocked meanwhile stays pending and is delivered right after.
    mask = signals.original_mask
    saved = _signal.pthread_sigmask(_signal.SIG_SETMASK, mask) if mask else None
    try:
        pid = fork_exec(
            argv, candidates, True, (report_write,), None, env_list,
            -1, -1, -1, -1, -1, -1, report_read, report_write,
            True, new_session, -1, None, None, None, -1, None, True,
        )  # fmt: skip
    except TypeError:
        posix.close(report_read)
        return None  # another argument list: this Python's fork_exec is not the one we know
    finally:
        if saved is not None:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, saved)
        posix.close(report_write)
    try:
        # vfork returned once the child exec'd or failed: EOF or the report, at once.
        report = _read_all(report_read)
    finally:
        posix.close(report_read)
    if report:
        # "OSError:<errno in hex>:[noexec]", or "SubprocessError:0:<text>".
        kind, _, rest = report.partition(b":")
        try:
            code = int(rest.partition(b":")[0], 16) if kind == b"OSError" else EINVAL
        except ValueError:
            code = EINVAL
        _failed(pid, argv[0], code or EINVAL)
    return pid


def _failed(pid: int, command: str, code: int) -> "NoReturn":
    """The child reported errno `code` and exited: reap it here, the error is
    the news (the loop's reaper never sees this pid)."""
    posix.waitpid(pid, 0)
    raise SpawnError(command, OSError(code, posix.strerror(code)))


def _candidates(file: bytes, path: bytes) -> list[bytes]:
    """Where execvp(3) would look for `file`, in order, PATH being `path`."""
    if b"/" in file:
        return [file]
    return [(directory or b".") + b"/" + file for directory in path.split(b":")]


def _child(
    argv: list[str],
    candidates: list[bytes],
    environ: "Mapping[bytes, bytes]",
    new_session: bool,
    take_tty: bool,
    report: int,
) -> None:
    """In the forked child: set up, exec; never returns."""
    code = EINVAL
    try:
        _signal.set_wakeup_fd(-1)
        if new_session:
            posix.setsid()
            if take_tty:
                _take_terminal()
        _signal.pthread_sigmask(_signal.SIG_SETMASK, signals.original_mask)
        # Only 0, 1 and 2 for the child, as on the fork_exec path (SPEC 9).
        posix.closerange(3, report)
        posix.closerange(report + 1, max(report + 1, posix.sysconf("SC_OPEN_MAX")))
        _exec_first(argv, candidates, environ)
    except OSError as error:
        code = error.errno or EINVAL
    finally:
        try:
            posix.write(report, str(code).encode())
        finally:
            posix._exit(EXIT_NOT_FOUND)


def _exec_first(argv: list[str], candidates: list[bytes], environ: "Mapping[bytes, bytes]") -> None:
    """execvp(3)'s search, without `os.execvpe` (it imports `warnings` in
    the child, ~0.7 ms before every COMMAND runs).

    Each candidate is tried in order, going on past "not there" (ENOENT,
    ENOTDIR) and "not allowed" (EACCES, reported if nothing else is found),
    as execvp and fork_exec do.
    """
    denied: OSError | None = None
    last: OSError = FileNotFoundError(ENOENT, posix.strerror(ENOENT), argv[0])
    for path in candidates:
        try:
            posix.execve(path, argv, environ)
        except (FileNotFoundError, NotADirectoryError) as error:
            last = error
        except PermissionError as error:
            denied = error
    raise denied or last


def _take_terminal() -> None:
    """Make stdin our controlling terminal; failing that, run without one."""
    import fcntl

    try:
        fcntl.ioctl(0, TIOCSCTTY, 0)
    except OSError:
        pass  # held by another session: the child runs without a terminal


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = posix.read(fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def release_terminal() -> bool:
    """Give up our controlling terminal, so the child can take it (dumb-init).

    Returns True when we were its session leader: then the kernel sends one
    SIGHUP and one SIGCONT to us, which must not be forwarded (dumb-init #136).
    """
    import fcntl

    try:
        fcntl.ioctl(0, TIOCNOTTY)
    except OSError:
        return False  # not our controlling terminal: nothing to release
    return posix.getsid(0) == posix.getpid()
