"""Readiness probes: has a started service become ready? (SPEC 3 `ready`, SPEC 4)

One `Probe` per starting worker, driven entirely by the loop:

    tcp:HOST:PORT   a non-blocking connect(); the loop says when it is done
                    (writable). Refused, or not done within the attempt
                    timeout: try again `interval` later.
    file:PATH       os.path.exists() now, then every `interval`.
    exec [...]      run the command (the supervisor spawns it, since only its
                    reaper may wait for children, and hands the exit back
                    through `child_exited`); exit 0 is ready, anything else
                    tries again `interval` after the exit. One check at a
                    time: the next starts only once the last has exited, and
                    one that outlives the attempt timeout is killed.
    none, notify    nothing to do here: the supervisor marks `none` ready at
                    once, and READY=1 for `notify` arrives on the notify
                    socket (pyinit.supervise.notify_socket.Downstream).

A probe calls `on_ready` at most once. From then on, and after `cancel()`, it
holds no timer, no socket and no check process: nothing polls once nothing
needs checking, and a worker that is ready costs no wakeups at all.
"""

from __future__ import annotations

import errno
import os
import signal
import socket

from pyinit.config.model import ReadinessKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.config.model import Readiness
    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop, Timer
    from pyinit.core.model import ExitStatus

#: An attempt (a connect, an exec check) may take max(interval, this) seconds.
#: A connect to a host that drops SYNs would otherwise hang for ~2 minutes.
MIN_ATTEMPT_TIMEOUT = 5.0


class Probe:
    """Checks one worker's readiness until it is ready or cancelled.

    `spawn_check(argv)` starts an exec check and returns its pid (0 or an
    OSError: it could not start, which counts as a failed check). The
    supervisor must then call `child_exited(pid, status)` when its reaper
    collects that pid. `attempt_timeout` overrides max(interval,
    MIN_ATTEMPT_TIMEOUT).
    """

    def __init__(
        self,
        loop: Loop,
        readiness: Readiness,
        *,
        on_ready: Callable[[], None],
        spawn_check: Callable[[list[str]], int],
        log: Log,
        label: str = "",
        attempt_timeout: float | None = None,
    ) -> None:
        self.readiness = readiness
        self.ready = False
        self.attempts = 0  # attempts started: for logs and tests
        self._loop = loop
        self._on_ready = on_ready
        self._spawn_check = spawn_check
        self._log = log
        self._label = label or readiness.describe()
        self._timeout = (
            attempt_timeout
            if attempt_timeout is not None
            else max(readiness.interval, MIN_ATTEMPT_TIMEOUT)
        )
        self._started = False
        self._done = False  # ready or cancelled: nothing more may happen
        self._timer: Timer | None = None  # the retry, or the current attempt's deadline
        self._sock: socket.socket | None = None  # a connect in progress
        self._addresses: list[tuple[int, tuple[object, ...]]] = []  # left to try this attempt
        self._check_pid = 0  # the exec check running, 0 if none

    # -- public --------------------------------------------------------------

    def start(self) -> None:
        """Make the first attempt now (tcp, file, exec); a no-op for none and notify."""
        if self._started or self._done:
            return
        self._started = True
        if self.readiness.kind in (ReadinessKind.TCP, ReadinessKind.FILE, ReadinessKind.EXEC):
            self._attempt()

    def cancel(self) -> None:
        """Stop checking: no timer, no socket, and the running check (if any) is killed.

        The check's exit, reaped later, is then not ours (`child_exited`
        returns False).
        """
        self._done = True
        self._clear()
        if self._check_pid:
            _kill_check(self._check_pid)
            self._check_pid = 0

    def child_exited(self, pid: int, status: ExitStatus) -> bool:
        """The reaper collected `pid`; True if it was this probe's check."""
        if pid <= 0 or pid != self._check_pid:
            return False
        self._check_pid = 0
        self._cancel_timer()
        if status.signal is None and status.code == 0:
            self._succeed()
        else:
            self._failed(f"check {status.describe()}")
        return True

    # -- attempts --------------------------------------------------------------

    def _attempt(self) -> None:
        self._timer = None
        if self._done:
            return
        self.attempts += 1
        kind = self.readiness.kind
        if kind is ReadinessKind.TCP:
            self._tcp_attempt()
        elif kind is ReadinessKind.FILE:
            path = self.readiness.path or ""
            if os.path.exists(path):
                self._succeed()
            else:
                self._failed(f"{path} does not exist")
        elif kind is ReadinessKind.EXEC:
            self._exec_attempt()

    def _exec_attempt(self) -> None:
        try:
            pid = self._spawn_check(list(self.readiness.command))
        except OSError as error:
            pid, reason = 0, str(error)
        else:
            reason = "it could not start"
        if pid <= 0:
            self._failed(f"check not run: {reason}")
            return
        self._check_pid = pid
        self._timer = self._loop.call_later(self._timeout, self._check_too_slow)

    def _check_too_slow(self) -> None:
        """Kill a check that hangs; its exit (by SIGKILL) then counts as a failure."""
        self._timer = None
        if self._check_pid:
            self._log.debug(f"{self._label}: check still running after {self._timeout:g} s")
            _kill_check(self._check_pid)

    def _tcp_attempt(self) -> None:
        host, port = self.readiness.host, self.readiness.port
        try:
            self._addresses = _addresses(host, port or 0)
        except OSError as error:
            self._failed(f"cannot resolve {host}: {error}")
            return
        self._connect_next()

    def _connect_next(self) -> None:
        """Try the attempt's next address; all of them refused: retry later."""
        reason = "no address"
        while self._addresses:
            family, address = self._addresses.pop(0)
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            code = sock.connect_ex(address)
            if code == 0:  # possible on loopback
                sock.close()
                self._succeed()
                return
            if code == errno.EINPROGRESS:
                self._sock = sock
                self._loop.add_writer(sock.fileno(), self._on_connected)
                self._timer = self._loop.call_later(self._timeout, self._connect_too_slow)
                return
            sock.close()
            reason = os.strerror(code)
        self._failed(f"connect: {reason}")

    def _on_connected(self) -> None:
        """The connect finished (writable): SO_ERROR says how."""
        if self._sock is None:
            return
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._close_socket()
        self._cancel_timer()
        if code == 0:
            self._succeed()
        elif self._addresses:
            self._connect_next()
        else:
            self._failed(f"connect: {os.strerror(code)}")

    def _connect_too_slow(self) -> None:
        self._timer = None
        self._close_socket()
        if self._addresses:
            self._connect_next()
        else:
            self._failed(f"connect: no answer within {self._timeout:g} s")

    # -- outcomes --------------------------------------------------------------

    def _succeed(self) -> None:
        self.ready = True
        self._done = True
        self._clear()
        self._log.debug(f"{self._label}: ready after {self.attempts} attempt(s)")
        self._on_ready()

    def _failed(self, reason: str) -> None:
        """Not ready yet: the next attempt is one interval away."""
        if self._done:
            return
        self._log.debug(f"{self._label}: not ready ({reason})")
        self._timer = self._loop.call_later(self.readiness.interval, self._attempt)

    def _clear(self) -> None:
        self._cancel_timer()
        self._close_socket()
        self._addresses = []

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_socket(self) -> None:
        # Out of the loop before close(): the fd number is reused at once, and
        # a stale writer entry would fire for whatever gets it next.
        if self._sock is not None:
            self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None


def _addresses(host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
    """(family, sockaddr) for `host`, each once, in getaddrinfo's order.

    An address literal needs no resolver. A name goes through getaddrinfo,
    which blocks the loop while it runs: fast for /etc/hosts names such as
    localhost, a DNS round trip otherwise (write an address to avoid it).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[tuple[int, tuple[object, ...]]] = []
    for family, _, _, _, address in infos:
        entry = (int(family), tuple(address))
        if entry not in found:
            found.append(entry)
    return found


def _kill_check(pid: int) -> None:
    """SIGKILL a check and, if it leads its own process group (a `sh -c` and its
    children), the whole group. A pid already gone is not an error."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
