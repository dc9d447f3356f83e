"""pyinit's own NOTIFY_SOCKET: the manager side of sd_notify, for services mode.

Wire format: see pyinit/core/notify.py (one datagram of `KEY=VALUE` lines per
message). Split from there because only services mode listens: single-command
mode only ever sends, and must not import this.

Downstream (`Downstream`): the socket pyinit hands its services as
NOTIFY_SOCKET. The sender is identified by the kernel (SO_PASSCRED ->
SCM_CREDENTIALS), never by the message: a MAINPID= or a lie in the text
changes nothing. `resolve_sender` maps that pid to a worker. Any file
descriptors that arrive with a datagram are closed at once; that is also how
systemd answers `BARRIER=1`, which `systemd-notify` (v250+) sends after its
message and waits on, so it returns as soon as we have read it.

Where the downstream socket lives: not in the control socket's directory.
SPEC 6 wants that one owner-only (0700), but a service that drops to another
`user` must reach the notify socket, and connect() needs search permission
on every directory of the path plus write permission on the socket file.
So the socket gets its own directory next to it (`<base>/pyinit-notify`,
mode 0711: anyone may pass through, nobody else may list or create), and
the socket file is 0666. That is systemd's own arrangement
(/run/systemd/notify is 0777): access control is the sender's kernel
credentials, and anything not in a service's process tree is ignored. The
file name carries our pid so that a pyinit run as a service of another
pyinit (same base directory) never removes its parent's socket.

An existing directory is trusted only if it is a real directory (lstat: a
symlink planted in /tmp is never followed), ours or root's, and not writable
by others (issue 7.17). When it is not, or nothing is writable (a read-only
root file system, issue 7.19), the error is logged and the services get an
abstract address `@pyinit-notify-PID-XXXX` instead: no file system needed,
and the sender's credentials remain the access control.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TypeVar

    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop

    T = TypeVar("T")

#: Largest datagram read; systemd uses the same limit (NOTIFY_BUFFER_MAX = PIPE_BUF).
#: A longer message is dropped whole rather than read cut in half.
MAX_DATAGRAM = 4096
#: Datagrams read per wakeup, so that a flood cannot starve the rest of the loop
#: (epoll is level-triggered: what is left wakes us again at once).
MAX_BATCH = 64
_UCRED = struct.Struct("iII")  # pid_t pid; uid_t uid; gid_t gid
#: Room for SCM_CREDENTIALS plus SCM_MAX_FD (253) descriptors; fds that do not
#: fit are closed by the kernel, those that do are closed by us.
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(253 * 4)
#: Parent-chain walks stop after this many steps (pid trees are never this deep).
_MAX_DEPTH = 256


def runtime_base() -> str:
    """Where pyinit keeps its sockets: /run, else $XDG_RUNTIME_DIR, else /tmp.

    The order of SPEC 1's `--ctl-socket` default.
    """
    if os.access("/run", os.W_OK | os.X_OK):
        return "/run"
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/") and os.access(xdg, os.W_OK | os.X_OK):
        return xdg
    return "/tmp"


def default_directory() -> str:
    """The owner-only (0700) directory of the control socket.

    /run/pyinit, $XDG_RUNTIME_DIR/pyinit, or /tmp/pyinit-UID: in /tmp the
    name carries the uid, since another user may already own /tmp/pyinit.
    Create it with `private_directory(path, 0o700)`.
    """
    base = runtime_base()
    return f"{base}/pyinit-{os.geteuid()}" if base == "/tmp" else f"{base}/pyinit"


def default_notify_path() -> str:
    """The downstream socket's default path: `<base>/pyinit-notify[-UID]/notify-PID-XXXX.sock`.

    The random part matters: two pyinits that are each PID 1 of their own
    PID namespace but share /run would otherwise both claim notify-1.sock.
    """
    base = runtime_base()
    directory = f"{base}/pyinit-notify" + (f"-{os.geteuid()}" if base == "/tmp" else "")
    return f"{directory}/notify-{os.getpid()}-{os.urandom(4).hex()}.sock"


def private_directory(path: str, mode: int) -> None:
    """Make `path` a directory of ours with exactly `mode`, or raise OSError.

    An existing entry must be a real directory (not a symlink) owned by our
    euid: in /tmp someone else could have created it first to catch our
    socket.
    """
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(errno.EPERM, f"{path} exists and is not a directory of uid {os.geteuid()}")
    os.chmod(path, mode)  # mkdir's mode went through the umask


class Downstream:
    """pyinit's own NOTIFY_SOCKET: datagrams in, `on_message(sender_pid, fields)` out.

    `path` is a filesystem path (its directory is created 0711 if missing and
    must belong to us or root; the socket file is 0666, see the module
    docstring) or `@name`. When the path cannot be used (a directory we do
    not trust, a read-only file system) the error is logged and an abstract
    `@pyinit-notify-...` address is used instead: `path` then says which. A stale
    socket left at `path` by an earlier run is replaced. Messages without
    credentials, from a process outside our pid namespace (pid 0), with a
    NUL byte, or longer than MAX_DATAGRAM are dropped; lines that are not
    KEY=VALUE are skipped. `on_message` runs on the loop, and may raise:
    the error is logged and the next datagram is read.
    """

    def __init__(
        self,
        loop: Loop,
        path: str,
        on_message: Callable[[int, dict[str, str]], None],
        log: Log,
    ) -> None:
        self.path = path
        self._loop = loop
        self._on_message = on_message
        self._log = log
        try:
            sock = _bind(path)
        except OSError as error:
            if path.startswith("@"):
                raise
            # A squatted /tmp, or no writable file system at all (a read-only
            # root): the abstract namespace needs neither, and the sender's
            # kernel credentials stay the access control (issue 7.17, 7.19).
            fallback = abstract_notify_address()
            sock = _bind(fallback)
            log.error(
                f"notify socket: cannot use {path}: {error.strerror or error};"
                f" services get NOTIFY_SOCKET={fallback} instead"
            )
            path = self.path = fallback
        self._socket: socket.socket | None = sock
        self._bound_path = None if path.startswith("@") else path
        loop.add_reader(sock.fileno(), self._on_readable)

    def fileno(self) -> int:
        return -1 if self._socket is None else self._socket.fileno()

    def close(self) -> None:
        """Stop listening and remove the socket file (idempotent)."""
        if self._socket is None:
            return
        self._loop.remove_reader(self._socket.fileno())
        self._socket.close()
        self._socket = None
        if self._bound_path is not None:
            try:
                os.unlink(self._bound_path)
            except OSError:
                pass

    def _on_readable(self) -> None:
        for _ in range(MAX_BATCH):
            if self._socket is None:
                return  # on_message closed us
            try:
                data, ancillary, flags, _ = self._socket.recvmsg(
                    MAX_DATAGRAM, _ANCILLARY, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._log.warning(f"notify socket {self.path}: {error}")
                return
            pid, fds = _read_ancillary(ancillary)
            try:
                self._dispatch(pid, data, flags)
            finally:
                # Closed only now: a BARRIER=1 sender (systemd-notify) waits for
                # this, then exits; closing first would let it be reaped before
                # resolve_sender had placed it.
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def _dispatch(self, pid: int, data: bytes, flags: int) -> None:
        if flags & socket.MSG_TRUNC:
            self._log.debug(f"notify: dropped a datagram over {MAX_DATAGRAM} bytes (pid {pid})")
            return
        if pid <= 0:
            self._log.debug("notify: dropped a datagram with no sender pid in our namespace")
            return
        fields = parse_message(data)
        if fields is None:
            self._log.debug(f"notify: dropped a datagram with NUL or bad UTF-8 (pid {pid})")
            return
        if not fields:
            return
        try:
            self._on_message(pid, fields)
        except Exception:
            self._log.exception(f"notify: error handling a message from pid {pid}")


def abstract_notify_address() -> str:
    """An abstract-namespace NOTIFY_SOCKET (`@...`), unique to this pyinit."""
    return f"@pyinit-notify-{os.getpid()}-{os.urandom(4).hex()}"


def _bind(path: str) -> socket.socket:
    """A datagram socket bound at `path` (`@name`: abstract), credentials on; OSError if not."""
    sock = socket.socket(
        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    )
    try:
        # Before bind: a datagram queued earlier would carry no credentials.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if path.startswith("@"):
            sock.bind("\0" + path[1:])
        else:
            _socket_directory(os.path.dirname(path) or ".")
            _remove_stale_socket(path)
            sock.bind(path)
            os.chmod(path, 0o666)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_message(data: bytes) -> dict[str, str] | None:
    """`KEY=VALUE` lines -> dict (a later key wins), or None for a datagram systemd rejects.

    systemd refuses a datagram holding a NUL byte or invalid UTF-8 as a
    whole; a single line without `=`, or whose key is not [A-Za-z0-9_]+, is
    skipped.
    """
    if b"\0" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep and key and key.isascii() and key.replace("_", "a").isalnum():
            fields[key] = value
    return fields


def _read_ancillary(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, list[int]]:
    """The sender's pid from SCM_CREDENTIALS (0 if absent), and any fds passed along.

    FDSTORE=1 and BARRIER=1 carry descriptors; we keep none of them, but
    the caller must close them.
    """
    pid = 0
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            pid = _UCRED.unpack_from(data)[0]
        elif kind == socket.SCM_RIGHTS:
            count = len(data) // 4
            fds.extend(struct.unpack(f"{count}i", data[: count * 4]))
    return pid, fds


def _socket_directory(directory: str) -> None:
    """Create the socket's directory 0711 if missing; refuse one we cannot trust.

    Trusted: a real directory (lstat: a symlink is refused, never followed),
    owned by us or root, that nobody else may write to. In /tmp another user
    could have made it first (or a symlink by that name) to catch our socket
    and the READY=1 of our services (issue 7.17).
    """
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        private_directory(directory, 0o711)
        return
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise OSError(errno.EPERM, f"{directory} is not a directory (a symlink?); not following it")
    if info.st_uid not in (os.geteuid(), 0):
        raise OSError(errno.EPERM, f"{directory} belongs to uid {info.st_uid}, not to us or root")
    if info.st_mode & 0o022:
        mode = f"{stat.S_IMODE(info.st_mode):04o}"
        raise OSError(errno.EPERM, f"{directory} is writable by other users (mode {mode})")


def _remove_stale_socket(path: str) -> None:
    """Unlink a socket left at `path`; anything else there is an error for bind() to report."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def resolve_sender(sender_pid: int, groups: Mapping[int, T]) -> T | None:
    """The value in `groups` (keyed by worker pid) whose process tree holds `sender_pid`.

    Workers lead their own session and process group, so a descendant that
    kept either is found in two syscalls. One that called setsid() or
    setpgid() itself is found by walking its parents in /proc up to a
    worker, stopping at pyinit (or pid 1): an orphan reparented to pyinit
    has lost its ancestry, and only its session still tells. A sender that
    has already exited and been reaped by its parent cannot be placed
    (None); `systemd-notify` avoids this (see the module docstring).
    """
    if sender_pid <= 0:
        return None
    if sender_pid in groups:
        return groups[sender_pid]
    try:
        for leader in (os.getpgid(sender_pid), os.getsid(sender_pid)):
            if leader in groups:
                return groups[leader]
    except OSError:
        return None
    me = os.getpid()
    pid = sender_pid
    for _ in range(_MAX_DEPTH):
        pid = _parent_pid(pid)
        if pid in groups:
            return groups[pid]
        if pid <= 1 or pid == me:
            return None
    return None


def _parent_pid(pid: int) -> int:
    """PPid from /proc/PID/stat; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name may hold spaces and ')': the fields start after the last ')'.
    return int(stat[stat.rfind(b")") + 2 :].split()[1])
