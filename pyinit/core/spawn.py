"""Starting COMMAND: fork + exec, and the 126/127 errors users expect.

Why fork + exec and not `posix_spawn` (issue 7, items 10 and 11):

* glibc's `posix_spawn` sets its internal signals 32 and 33 to SIG_IGN in
  every child (they cannot be named in `setsigdef`), so each child started
  that way has two signals ignored that its parent never ignored. tini forks.
* Handing the terminal over (TIOCSCTTY, as dumb-init does) is a step
  `posix_spawn` cannot take.

Why not `subprocess.Popen`: importing `subprocess` costs about 9 ms (it
pulls in `locale`, `re`, `enum`), close to what the whole Python start-up
costs, and it does not restore the signal mask.

What runs between fork and exec is short and cannot reach pyinit's loop:
every signal is blocked around the fork (so no handler runs in the child and
no byte reaches pyinit's wakeup pipe from it), then the child sets up its
session, takes the terminal, restores the mask pyinit started with and
execs. Handlers pyinit installed are reset to the default by exec itself;
signals that were ignored when pyinit started stay ignored. An exec failure
travels back on a close-on-exec pipe as an errno, so "command not found" is
an error here (127/126) and not a child that exits 127. Nothing returns from
the child: `os._exit` in a `finally`.

Every descriptor pyinit opens is close-on-exec (Python's default), and
`runner` marks inherited ones close-on-exec at start, so children get stdin,
stdout and stderr only.
"""

from __future__ import annotations

import _signal
import errno
import os

from pyinit.core import signals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: Exit statuses for a command that could not be started, as shells and
#: tini report them: 127 "not found", 126 "found but cannot run".
EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126

TIOCSCTTY = 0x540E  # termios.TIOCSCTTY on Linux; termios itself is not needed
TIOCNOTTY = 0x5422


class SpawnError(Exception):
    """COMMAND could not be started; `status` is what pyinit exits with."""

    def __init__(self, command: str, error: OSError) -> None:
        self.status = EXIT_NOT_FOUND if error.errno == errno.ENOENT else EXIT_CANNOT_RUN
        reason = error.strerror or str(error)
        # One line whatever the name holds (issue 7, item 21).
        shown = command.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(f"{shown}: {reason}")


def spawn(
    argv: list[str],
    *,
    new_session: bool,
    env: Mapping[str, str] | None = None,
    take_tty: bool = False,
) -> int:
    """Start `argv` (looked up on PATH) and return its pid.

    With `new_session` the child calls setsid(): it leads a new session and
    process group whose id is its pid, so the group can be signalled as one.
    With `take_tty` too, it makes stdin (a terminal) its controlling
    terminal, so an interactive shell gets job control and /dev/tty.
    The child starts with the signal mask and ignored signals pyinit started
    with, nothing of pyinit's own set-up.
    """
    environ = os.environ if env is None else env
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    everything = _signal.valid_signals()
    blocked = _signal.pthread_sigmask(_signal.SIG_BLOCK, everything)
    try:
        pid = os.fork()
        if pid == 0:
            _child(argv, environ, new_session, take_tty, report_write)
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, blocked)
        os.close(report_write)
    try:
        report = _read_all(report_read)
    finally:
        os.close(report_read)
    if report:
        # The child wrote its errno and exited 127: reap it here, the error
        # is the news (the loop's reaper never sees this pid).
        os.waitpid(pid, 0)
        code = int(report)
        raise SpawnError(argv[0], OSError(code, os.strerror(code)))
    return pid


def _child(
    argv: list[str], environ: Mapping[str, str], new_session: bool, take_tty: bool, report: int
) -> None:
    """In the forked child: set up, exec; never returns."""
    code = errno.EINVAL
    try:
        _signal.set_wakeup_fd(-1)
        if new_session:
            os.setsid()
            if take_tty:
                _take_terminal()
        _signal.pthread_sigmask(_signal.SIG_SETMASK, signals.original_mask)
        _exec_on_path(argv, environ)
    except OSError as error:
        code = error.errno or errno.EINVAL
    finally:
        try:
            os.write(report, str(code).encode())
        finally:
            os._exit(EXIT_NOT_FOUND)


def _exec_on_path(argv: list[str], environ: Mapping[str, str]) -> None:
    """execvp(3)'s search, without `os.execvpe`: that one imports `warnings`
    (for `os.get_exec_path`) in the child, ~0.7 ms before every COMMAND runs.

    A name with a slash is run as it is; otherwise each PATH entry is tried
    in order, going on past "not there" (ENOENT, ENOTDIR) and "not allowed"
    (EACCES, reported if nothing else is found), as execvp does.
    """
    file = argv[0]
    if "/" in file:
        os.execve(file, argv, environ)
    denied: OSError | None = None
    last: OSError = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), file)
    for directory in environ.get("PATH", os.defpath).split(":"):
        try:
            os.execve(os.path.join(directory or ".", file), argv, environ)
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
            chunk = os.read(fd, 64)
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
    return os.getsid(0) == os.getpid()
