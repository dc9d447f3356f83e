"""Sockets held by pyinit: bound once, kept for pyinit's life, handed to every worker.

Why pyinit holds them (issue 9): while a worker restarts, the kernel's
listen queue of a socket that stays open keeps the connections that arrive,
where a server that binds its own port leaves a gap of "connection refused".
And pyinit binds as root, so a service running as `user = "app"` can serve
port 80.

Lifecycle. `Listeners.open(config)` binds every address the config lists
and has no socket yet, before any worker starts; a failure closes what that
call opened and raises ListenError (exit 2 at start, "reload failed" on
SIGHUP, with everything running kept). `close_unused(config)` closes what a
new config no longer lists, after the reload was applied. A socket is known
by its address's `key`, so a reload that keeps an address never re-binds it,
even when the entry moved to another service. Workers that still run with a
closed socket keep their own descriptor of it: the kernel closes it when
the last one goes.

The hand-over is systemd's socket-activation protocol (sd_listen_fds(3)):
the sockets at fds 3, 4, ... in `listen` order, `LISTEN_FDS`,
`LISTEN_FDNAMES` (the service name for each: systemd names them after the
unit, and ':' is its separator), and `LISTEN_PID`, the worker's own pid,
which gunicorn and sd_listen_fds() check. Popen fixes the environment before
it forks, so the pid cannot be put there by pyinit; a preexec_fn could not
change envp either (and runs Python after fork). So the worker starts as
`python -I -S -c EXEC_SHIM FDS ARGV...`: the shim moves the fds Popen passed
(`pass_fds`, open in that child only) to 3.., sets LISTEN_PID to its own pid
and execs ARGV, which keeps the pid. It costs one interpreter start (~9 ms)
and is used only by services with `listen`.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pyinit.config.listen import ListenAddress
    from pyinit.config.model import Config, ServiceSpec

#: The first fd of the protocol (SD_LISTEN_FDS_START).
FIRST_FD = 3

#: Run between Popen and the service: fds to 3.., LISTEN_PID, exec. argv[1] is
#: the comma-separated fds as Popen left them, argv[2:] the service's command.
#: They are first copied above every fd involved, so a source that is also a
#: target (fd 4 going to 3 while fd 3 goes to 4) is never overwritten early.
EXEC_SHIM = """\
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
floor = max(fds + [2 + len(fds)]) + 1
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
for fd in fds:
    os.close(fd)
for target, fd in enumerate(high, 3):
    os.dup2(fd, target)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
argv = sys.argv[2:]
try:
    os.execvp(argv[0], argv)
except OSError as error:
    shown = argv[0].replace("\\n", "\\\\n")
    os.write(2, f"pyinit: {shown}: {error.strerror}\\n".encode(errors="replace"))
    os._exit(127 if isinstance(error, FileNotFoundError) else 126)
"""


class ListenError(Exception):
    """A socket could not be opened: '<service>: cannot listen on <address>: <reason>'."""


class Listeners:
    """The sockets pyinit holds, by address key."""

    def __init__(self) -> None:
        self.sockets: dict[str, socket.socket] = {}
        self.addresses: dict[str, ListenAddress] = {}
        self._files: dict[str, tuple[int, int]] = {}  # key -> (st_dev, st_ino) of our socket file

    def open(self, config: Config) -> list[str]:
        """Bind what `config` lists and pyinit does not hold yet; returns their keys.

        All or nothing: on a failure, the sockets this call opened are closed,
        nothing held is changed, and ListenError names the service and the
        address. Then a kept socket file whose mode or owner changed gets
        them in place.
        """
        opened: list[str] = []
        try:
            for service, address in wanted(config.services.values()):
                if address.key not in self.sockets:
                    self._try(service, address, self._add)
                    opened.append(address.key)
            for service, address in wanted(config.services.values()):
                if address != self.addresses[address.key]:
                    self._try(service, address, self._own)
                    self.addresses[address.key] = address
        except BaseException:
            self._close(opened)
            raise
        return opened

    def _add(self, address: ListenAddress) -> None:
        self.sockets[address.key] = self._bind(address)
        self.addresses[address.key] = address

    @staticmethod
    def _try(service: str, address: ListenAddress, step: Callable[[ListenAddress], None]) -> None:
        """step(address), an OSError turned into ListenError naming service and address."""
        try:
            step(address)
        except OSError as error:
            reason = error.strerror or str(error)
            raise ListenError(f"{service}: cannot listen on {address.key}: {reason}") from None

    def close_unused(self, config: Config) -> list[str]:
        """Close the sockets `config` no longer lists; returns their keys."""
        keep = {address.key for _, address in wanted(config.services.values())}
        gone = [key for key in self.sockets if key not in keep]
        self._close(gone)
        return gone

    def close(self) -> None:
        """At exit: close every socket and remove the files pyinit created."""
        self._close(list(self.sockets))

    def fds(self, spec: ServiceSpec) -> list[int]:
        """The descriptors of `spec`'s sockets, in its `listen` order."""
        return [self.sockets[address.key].fileno() for address in spec.listen]

    # -- one socket --------------------------------------------------------------

    def _bind(self, address: ListenAddress) -> socket.socket:
        if address.kind == "unix":
            family = socket.AF_UNIX
        else:
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        kind = socket.SOCK_DGRAM if address.kind == "udp" else socket.SOCK_STREAM
        # Blocking, as systemd passes them: O_NONBLOCK belongs to the open
        # file, which every worker shares, so pyinit leaves it alone.
        sock = socket.socket(family, kind)
        try:
            if address.kind == "tcp":
                # A restarted pyinit binds again while old connections sit in TIME_WAIT.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address.kind == "unix":
                self._bind_file(sock, address)
            else:
                sock.bind((address.host, address.port))
            if kind == socket.SOCK_STREAM:
                # The deepest queue the kernel allows: it holds the connections
                # that arrive while no worker accepts (a restart, a deploy).
                sock.listen(socket.SOMAXCONN)
        except BaseException:
            sock.close()
            raise
        return sock

    def _bind_file(self, sock: socket.socket, address: ListenAddress) -> None:
        if not address.is_file:
            sock.bind("\0" + address.path[1:])  # abstract: no file, no mode
            return
        _remove_stale(address.path)
        parent = os.path.dirname(address.path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        sock.bind(address.path)
        info = os.stat(address.path)
        self._files[address.key] = (info.st_dev, info.st_ino)
        try:
            # Before listen(): until then a connect() is refused, so nobody
            # gets in through the umask's mode.
            self._own(address)
        except OSError:
            self._unlink(address.key, address.path)
            raise

    def _own(self, address: ListenAddress) -> None:
        """Apply a socket file's mode and owner (raises OSError)."""
        if not address.is_file:
            return
        try:
            uid = _uid(address.owner)
            gid = _gid(address.group)
        except KeyError as error:  # removed from /etc/passwd since the config was checked
            raise OSError(errno.EINVAL, f"unknown user or group {error}") from None
        os.chmod(address.path, address.mode)
        if uid != -1 or gid != -1:
            os.chown(address.path, uid, gid)

    def _close(self, keys: Iterable[str]) -> None:
        for key in list(keys):
            sock = self.sockets.pop(key, None)
            address = self.addresses.pop(key, None)
            if sock is not None:
                sock.close()
            if address is not None and address.is_file:
                self._unlink(key, address.path)

    def _unlink(self, key: str, path: str) -> None:
        """Remove the socket file, if it is still the one pyinit bound."""
        ours = self._files.pop(key, None)
        try:
            info = os.lstat(path)
            if ours == (info.st_dev, info.st_ino):
                os.unlink(path)
        except OSError:
            pass


def wanted(specs: Iterable[ServiceSpec]) -> list[tuple[str, ListenAddress]]:
    """(service name, address) of every `listen` entry, in the configured order."""
    return [(spec.name, address) for spec in specs for address in spec.listen]


def _remove_stale(path: str) -> None:
    """Unlink a socket file nobody listens on; refuse anything else that is in the way."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # left by a process that is gone
        return
    except OSError:
        return  # cannot tell: bind() will say what is wrong
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another process listens on {path}")


def _uid(owner: str | None) -> int:
    if owner is None:
        return -1
    return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid


def _gid(group: str | None) -> int:
    if group is None:
        return -1
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def hand_over(spec: ServiceSpec, fds: list[int], argv: list[str], env: dict[str, str]) -> list[str]:
    """The argv that starts `argv` with `fds` at 3.. (see EXEC_SHIM); sets env's LISTEN_*."""
    env["LISTEN_FDS"] = str(len(fds))
    env["LISTEN_FDNAMES"] = ":".join([spec.name] * len(fds))
    env.pop("LISTEN_PID", None)  # the shim sets it, to the worker's own pid
    python = sys.executable or "python3"
    return [python, "-I", "-S", "-c", EXEC_SHIM, ",".join(map(str, fds)), *argv]
