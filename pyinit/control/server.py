"""The server side of `pyinit ctl`: the control socket and its verbs.

The wire format and the verbs' synopses are in protocol.py, shared with
the client (client.py). Each verb's handler here gets the server and the
request's arguments and returns the reply's `result`, or raises VerbError.
The accept/read/reply machinery, shared with the health port (health.py),
is listener.py.

The file modes (0600 socket in a 0700 directory we own) keep other users
out; SO_PEERCRED is the second lock, for a socket whose modes someone
loosened.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from typing import TYPE_CHECKING

from pyinit.control.listener import (
    REQUEST_TIMEOUT,
    AlreadyListening,
    ControlError,
    Controlled,
    Listener,
)
from pyinit.control.protocol import (
    REQUEST_LIMIT,
    VerbError,
    abstract_address,
    check_arguments,
    socket_candidates,
    unix_address,
)
from pyinit.control.usage import process_usage
from pyinit.core.signals import parse_signal

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop

RELOAD_FAILED = "reload failed"  # how Supervisor.reload() words a refused reload

__all__ = ["AlreadyListening", "ControlError", "ControlServer", "Controlled", "VERBS"]


# -- where the socket lives ----------------------------------------------------------


def _owner_only_directory(directory: str) -> None:
    """Create `directory` 0700, or accept it only if it is ours and closed to others."""
    try:
        os.makedirs(os.path.dirname(directory) or ".", exist_ok=True)
        os.mkdir(directory, 0o700)
        os.chmod(directory, 0o700)  # mkdir's mode went through the umask
    except FileExistsError:
        pass
    except OSError as error:
        raise ControlError(f"cannot create {directory}: {error.strerror}") from None
    try:
        info = os.lstat(directory)  # lstat: a symlink is refused, not followed
    except OSError as error:
        raise ControlError(f"cannot use {directory}: {error.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ControlError(f"{directory} is not a directory; refusing to put a socket there")
    if info.st_uid != os.geteuid():
        raise ControlError(
            f"{directory} belongs to uid {info.st_uid}, not to pyinit (uid {os.geteuid()});"
            " refusing to put the control socket there"
        )
    if info.st_mode & 0o077:
        raise ControlError(
            f"{directory} is open to other users (mode {stat.S_IMODE(info.st_mode):04o});"
            " the control socket needs a directory only its owner can enter (0700)"
        )


def _clear_stale_socket(path: str) -> None:
    """Remove a socket left by a pyinit that died; refuse to replace a live one."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)  # nobody listens: stale
        except FileNotFoundError:
            pass
        except OSError as error:
            raise ControlError(f"cannot remove the stale socket {path}: {error.strerror}") from None
        return
    except OSError:
        pass  # EAGAIN (backlog full): someone listens
    finally:
        probe.close()
    raise AlreadyListening(f"another pyinit is already listening on {path}")


# -- verbs -----------------------------------------------------------------------------
# One handler per verb: (server, args) -> the reply's result, or VerbError.
# Their synopses and help are protocol.USAGE, which the client shares.


def _for_service(name: str, action: Callable[[str], str]) -> str:
    try:
        return action(name)
    except KeyError:
        raise VerbError(f"no such service: {name!r}") from None


def _status(server: ControlServer, args: list[str]) -> object:
    names = check_arguments("status", args)
    try:
        found = server.controlled.status(names) if names else server.controlled.status()
    except KeyError as error:  # every unknown name, not only the first
        raise VerbError("no such service: " + ", ".join(map(repr, error.args))) from None
    rows = [dict(row) for row in found]
    for row in rows:
        pid = row.get("pid")
        row["rss"], row["cpu"] = process_usage(pid if isinstance(pid, int) else 0, server.log)
    return rows


def _ready(server: ControlServer, args: list[str]) -> object:
    """Ready, or who is not: the workers that are not ok (status rows' `ok`; an
    older supervisor without it: not ready), so that a oneshot that is done or
    a periodic job between runs is never named."""
    check_arguments("ready", args)
    if server.controlled.is_ready():
        return {"ready": True, "detail": ""}
    waiting = [
        f"{row.get('service')}[{row.get('worker')}]"
        for row in server.controlled.status()
        if not row.get("ok", row.get("ready"))
    ]
    more = f", ... ({len(waiting)} in all)" if len(waiting) > 10 else ""
    detail = ", ".join(waiting[:10]) + more
    return {"ready": False, "detail": detail or "starting or shutting down"}


def _start(server: ControlServer, args: list[str]) -> object:
    (name,) = check_arguments("start", args)
    return _for_service(name, server.controlled.start)


def _stop(server: ControlServer, args: list[str]) -> object:
    (name,) = check_arguments("stop", args)
    return _for_service(name, server.controlled.stop)


def _restart(server: ControlServer, args: list[str]) -> object:
    (name,) = check_arguments("restart", args)
    return _for_service(name, server.controlled.restart)


def _signal(server: ControlServer, args: list[str]) -> object:
    name, sig = check_arguments("signal", args)
    try:
        signum = parse_signal(sig)
    except ValueError as error:
        raise VerbError(str(error)) from None
    return _for_service(name, lambda n: server.controlled.send_signal(n, signum))


def _reload(server: ControlServer, args: list[str]) -> object:
    check_arguments("reload", args)
    result = server.controlled.reload()
    # A refused reload (invalid file: the old configuration keeps running) is
    # an error reply, so that `pyinit ctl reload` exits non-zero (issue 7.24).
    # The prefix is the one reconfigure.apply_new_config returns.
    if result.startswith(RELOAD_FAILED):
        raise VerbError(result)
    return result


#: The same verbs, in the same order, as protocol.USAGE.
VERBS: dict[str, Callable[[ControlServer, list[str]], object]] = {
    "status": _status,
    "ready": _ready,
    "start": _start,
    "stop": _stop,
    "restart": _restart,
    "signal": _signal,
    "reload": _reload,
}
#: Verbs that only look: logged at debug level (probes run every few seconds).
QUIET_VERBS = frozenset({"status", "ready"})


def _reply(ok: bool, value: object) -> bytes:
    body = {"ok": True, "result": value} if ok else {"ok": False, "error": value}
    return json.dumps(body, default=str).encode() + b"\n"


class ControlServer(Listener):
    """The ctl socket: see the module docstring. Raises ControlError if it cannot listen."""

    what = "control socket"

    def __init__(
        self,
        loop: Loop,
        path: str,
        controlled: Controlled,
        log: Log,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.controlled = controlled
        self._inode = 0
        try:
            sock = self._bind(path)
        except AlreadyListening:
            raise
        except ControlError as error:
            if path not in socket_candidates(os.environ):
                raise  # a path the user chose: the client looks only there
            # No usable default directory: a read-only /run and /tmp (issue
            # 7.19), or one another user squats. An abstract socket needs no
            # file system; admit() checks every peer's uid, which is all that
            # guards it. The client tries it after the default paths.
            fallback = abstract_address()
            try:
                sock = self._bind(fallback)
            except ControlError as second:
                raise ControlError(f"{error}; and {second}") from None
            log.warning(f"control socket: {error}; listening on {fallback} instead")
            path = fallback
        self.path = path
        super().__init__(loop, sock, log, timeout)
        log.debug(f"control socket listening on {path}")

    def _bind(self, path: str) -> socket.socket:
        """A socket bound at `path` (`@name`: abstract), or ControlError saying why not."""
        if not path.startswith("@"):
            _owner_only_directory(os.path.dirname(os.path.abspath(path)))
            _clear_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # close-on-exec by default
        try:
            sock.bind(unix_address(path))
            if not path.startswith("@"):
                # The 0700 directory covers the moment between bind and chmod.
                os.chmod(path, 0o600)
                self._inode = os.lstat(path).st_ino
        except OSError as error:
            sock.close()
            raise ControlError(f"cannot listen on {path}: {error.strerror or error}") from None
        return sock

    def admit(self, conn: socket.socket) -> tuple[str, bytes | None]:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        peer = f"pid {pid}, uid {uid}"
        if uid not in (0, os.geteuid()):
            self.log.warning(
                f"control socket: refused {peer}: only uid {os.geteuid()} and root may use it",
                pid=pid,
                event="ctl_refused",
            )
            return peer, _reply(False, "permission denied")
        return peer, None

    def complete(self, data: bytearray) -> bool:
        return b"\n" in data

    def too_large(self) -> bytes:
        return _reply(False, f"request too large (over {REQUEST_LIMIT} bytes)")

    def internal_error(self) -> bytes:
        return _reply(False, "internal error in pyinit (see its log)")

    def respond(self, request: bytes, peer: str) -> bytes:
        try:
            message = json.loads(request.split(b"\n", 1)[0])
        except Exception:  # ValueError, UnicodeDecodeError, RecursionError (deep nesting)
            return _reply(False, "malformed request: expected one line of JSON")
        verb = message.get("verb") if isinstance(message, dict) else None
        args = message.get("args", []) if isinstance(message, dict) else None
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return _reply(False, 'malformed request: expected {"verb": str, "args": [str, ...]}')
        if not isinstance(verb, str) or verb not in VERBS:
            return _reply(False, f"unknown verb {verb!r}; known: {', '.join(VERBS)}")
        level = self.log.debug if verb in QUIET_VERBS else self.log.info
        # Printable and short: a request must not forge or flood log lines.
        words = "".join(c if c.isprintable() else "?" for c in " ".join([verb, *args])[:200])
        level(f"ctl: {words} (from {peer})", event="ctl")
        try:
            return _reply(True, VERBS[verb](self, args))
        except VerbError as error:
            return _reply(False, str(error))

    def close(self) -> None:
        """Stop listening and remove the socket (unless another pyinit replaced it)."""
        super().close()
        if self.path.startswith("@"):
            return  # an abstract socket vanishes with its last descriptor
        try:
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
