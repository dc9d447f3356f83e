"""The server side of `pyinit ctl`: the control socket and the health port.

The wire format and the verbs' synopses are in ctl_protocol.py, shared with
the client (ctl.py). Each verb's handler here gets the server and the
request's arguments and returns the reply's `result`, or raises VerbError.

Why this shape: everything runs as readers on pyinit's one loop (no thread
in PID 1, STYLE rule 8), so no callback may block: accepts, reads and writes
are non-blocking, and a deadline timer drops a client that stalls. One
request per connection means no framing state survives a request, and a
misbehaving client can only break its own connection. The file modes (0600
socket in a 0700 directory we own) keep other users out; SO_PEERCRED is the
second lock, for a socket whose modes someone loosened.

The health port is the same machinery speaking just enough HTTP/1.0 for a
kubelet's httpGet probe (`http.server` would cost more to import than this
whole module).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from typing import TYPE_CHECKING, Protocol

from pyinit.control.protocol import (
    REQUEST_LIMIT,
    VerbError,
    abstract_address,
    check_arguments,
    socket_candidates,
    unix_address,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop, Timer

HTTP_LIMIT = 8 * 1024  # bytes of one health request (line + headers)
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request and read the reply
MAX_CONNECTIONS = 32  # per listener; a new one past this closes the oldest still reading
RELOAD_FAILED = "reload failed"  # how Supervisor.reload() words a refused reload


class ControlError(OSError):
    """The control socket or health port cannot be set up; str() is a one-line message.

    An OSError, so that a caller's `except OSError` around setting up sockets
    catches both these refusals and the kernel's own errors.
    """


class AlreadyListening(ControlError):
    """Another live pyinit owns the socket: no fallback, it is that one's."""


class Controlled(Protocol):
    """What the server asks of the supervisor; every call comes from the loop.

    `status()` rows carry: service (str), worker (int), pid (int, 0 if none),
    state (str), ready (bool), uptime (float seconds or None), restarts (int),
    last_exit (str like "exit status 3", or None). The server adds rss and cpu.
    start/stop/restart/send_signal raise KeyError for an unknown service.
    """

    def status(self) -> list[dict[str, object]]: ...
    def is_ready(self) -> bool: ...
    def start(self, name: str) -> str: ...
    def stop(self, name: str) -> str: ...
    def restart(self, name: str) -> str: ...
    def send_signal(self, name: str, signum: int) -> str: ...
    def reload(self) -> str: ...


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


# -- resource usage for status rows ----------------------------------------------------

_psutil: ModuleType | None = None
_psutil_tried = False


def process_usage(pid: int, log: Log | None = None) -> tuple[int | None, float | None]:
    """(RSS bytes, CPU seconds user + system) of `pid`; (None, None) if unknown.

    psutil when it loads (imported on first use: only status needs it), else
    /proc, which says the same things on Linux.
    """
    global _psutil, _psutil_tried
    if pid <= 0:
        return None, None
    if not _psutil_tried:
        _psutil_tried = True
        from pyinit._bootstrap import import_psutil

        _psutil, why = import_psutil()
        if log is not None:
            log.debug(f"psutil {why}" if _psutil else f"psutil unavailable ({why}); reading /proc")
    if _psutil is not None:
        try:
            process = _psutil.Process(pid)
            with process.oneshot():
                times = process.cpu_times()
                return int(process.memory_info().rss), float(times.user + times.system)
        except _psutil.Error:
            return None, None
    return usage_from_proc(pid)


def usage_from_proc(pid: int) -> tuple[int | None, float | None]:
    """The /proc fallback of `process_usage`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            line = file.read()
        with open(f"/proc/{pid}/statm", "rb") as file:
            resident_pages = int(file.read().split()[1])
        # The command name (field 2) may hold spaces and ')': split after the last ')'.
        fields = line[line.rindex(b")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    except (OSError, ValueError, IndexError):
        return None, None
    return resident_pages * os.sysconf("SC_PAGE_SIZE"), ticks / os.sysconf("SC_CLK_TCK")


# -- verbs -----------------------------------------------------------------------------
# One handler per verb: (server, args) -> the reply's result, or VerbError.
# Their synopses and help are ctl_protocol.USAGE, which the client shares.


def _for_service(name: str, action: Callable[[str], str]) -> str:
    try:
        return action(name)
    except KeyError:
        raise VerbError(f"no such service: {name!r}") from None


def _status(server: ControlServer, args: list[str]) -> object:
    check_arguments("status", args)
    rows = [dict(row) for row in server.controlled.status()]
    for row in rows:
        pid = row.get("pid")
        row["rss"], row["cpu"] = process_usage(pid if isinstance(pid, int) else 0, server.log)
    return rows


def _ready(server: ControlServer, args: list[str]) -> object:
    check_arguments("ready", args)
    ready = server.controlled.is_ready()
    rows = server.controlled.status()
    waiting = [f"{row.get('service')}[{row.get('worker')}]" for row in rows if not row.get("ready")]
    detail = f"{len(rows) - len(waiting)}/{len(rows)} workers ready"
    if waiting:
        more = ", ..." if len(waiting) > 10 else ""
        detail += f" (not ready: {', '.join(waiting[:10])}{more})"
    return {"ready": ready, "detail": detail}


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
    from pyinit.core.signals import parse_signal

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


#: The same verbs, in the same order, as ctl_protocol.USAGE.
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


# -- the server side: one listener class, two protocols --------------------------------


class _Connection:
    """One accepted client: read one request (capped, with a deadline), write one reply."""

    def __init__(self, listener: _Listener, sock: socket.socket, peer: str) -> None:
        self.listener = listener
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.data = bytearray()
        self.out = memoryview(b"")
        loop = listener.loop
        self.timer: Timer = loop.call_later(listener.timeout, self.on_timeout)
        loop.add_reader(self.fd, self.on_readable)

    def on_readable(self) -> None:
        listener = self.listener
        try:
            chunk = self.sock.recv(listener.limit + 1 - len(self.data))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.data += chunk
        if len(self.data) > listener.limit:
            listener.log.debug(
                f"{listener.what}: request over {listener.limit} bytes from {self.peer}"
            )
            self.reply(listener.too_large())
        elif listener.complete(self.data) or (not chunk and self.data):
            self.reply(listener.answer(bytes(self.data), self.peer))
        elif not chunk:
            self.close()  # connected and left without a word

    def reply(self, payload: bytes) -> None:
        self.listener.loop.remove_reader(self.fd)
        self.out = memoryview(payload)
        self.on_writable()

    def on_writable(self) -> None:
        try:
            # MSG_NOSIGNAL: a client that hung up (an exec probe killed at its
            # timeout) gets EPIPE here, not a SIGPIPE that PID 1 would forward
            # to every service (issue 7.7).
            sent = self.sock.send(self.out, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()  # the client went away: its loss
            return
        self.out = self.out[sent:]
        if not self.out:
            self.close()
        elif self.fd not in self.listener.writing:
            self.listener.writing.add(self.fd)
            self.listener.loop.add_writer(self.fd, self.on_writable)

    def on_timeout(self) -> None:
        self.listener.log.debug(f"{self.listener.what}: dropped {self.peer}: too slow")
        self.close()

    def close(self) -> None:
        loop = self.listener.loop
        self.timer.cancel()
        loop.remove_reader(self.fd)
        loop.remove_writer(self.fd)
        self.listener.writing.discard(self.fd)
        self.listener.connections.pop(self, None)
        self.sock.close()


class _Listener:
    """A listening socket on the loop; subclasses say what a request is and how to answer."""

    what = "listener"
    limit = REQUEST_LIMIT

    def __init__(self, loop: Loop, sock: socket.socket, log: Log, timeout: float) -> None:
        self.loop = loop
        self.sock = sock
        self.log = log
        self.timeout = timeout
        # Oldest first (a dict keeps insertion order): see _make_room.
        self.connections: dict[_Connection, None] = {}
        self.writing: set[int] = set()
        sock.setblocking(False)
        sock.listen(64)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(64):  # a burst of clients must not starve the rest of the loop
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # EMFILE/ENFILE: the connection stays queued and epoll would
                # report it again at once; look again in a second instead.
                self.log.warning(f"{self.what}: cannot accept: {error.strerror}")
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(1.0, self._resume_accepting)
                return
            conn.setblocking(False)
            if len(self.connections) >= MAX_CONNECTIONS and not self._make_room():
                conn.close()
                continue
            try:
                peer, refusal = self.admit(conn)
            except OSError:
                conn.close()
                continue
            connection = _Connection(self, conn, peer)
            self.connections[connection] = None
            if refusal is not None:
                connection.reply(refusal)

    def _make_room(self) -> bool:
        """Close the oldest connection still sending its request; False if none is.

        The newest client is the one most likely to be a live probe: slow or
        idle clients holding every slot must cost themselves their place, not
        the kubelet its answer (issue 7.20: 40 clients at 1 byte/s left 4 of
        22 probes answered). Each connection also has a whole-request
        deadline (the timer in _Connection), so none holds a slot for long.
        """
        for connection in self.connections:
            if not connection.out:  # still reading: no reply under way
                self.log.debug(f"{self.what}: dropped {connection.peer}: room for a new client")
                connection.close()
                return True
        return False

    def _resume_accepting(self) -> None:
        if self.sock.fileno() >= 0:  # not closed meanwhile
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def answer(self, request: bytes, peer: str) -> bytes:
        try:
            return self.respond(request, peer)
        except Exception:
            self.log.exception(f"{self.what}: error answering {peer}")
            return self.internal_error()

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    # What subclasses define:
    def admit(self, conn: socket.socket) -> tuple[str, bytes | None]:
        """(a description of the peer, None to serve it or a reply that refuses it)."""
        return "a client", None

    def complete(self, data: bytearray) -> bool:
        raise NotImplementedError

    def respond(self, request: bytes, peer: str) -> bytes:
        raise NotImplementedError

    def too_large(self) -> bytes:
        raise NotImplementedError

    def internal_error(self) -> bytes:
        raise NotImplementedError


class ControlServer(_Listener):
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


# -- health port -----------------------------------------------------------------------


def parse_health_port(text: str) -> tuple[str, int]:
    """`8080`, `127.0.0.1:8080`, `[::]:8080` -> (address, port); ValueError otherwise."""
    text = text.strip()
    if text.startswith("["):
        address, bracket, port = text[1:].partition("]:")
        family = socket.AF_INET6
        if not bracket:
            raise ValueError(f"expected [ADDRESS]:PORT, got {text!r}")
    elif ":" in text:
        address, _, port = text.rpartition(":")
        family = socket.AF_INET
        if ":" in address:
            raise ValueError(f"an IPv6 address goes in brackets, as in [::]:8080; got {text!r}")
    else:
        address, port, family = "", text, socket.AF_INET
    address = address or "0.0.0.0"
    try:
        socket.inet_pton(family, address)
    except OSError:
        raise ValueError(f"not a numeric IP address: {address!r}") from None
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"expected a port from 1 to 65535, got {port!r}")
    return address, int(port)


_HTTP_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _http(code: int, body: str, head_only: bool = False) -> bytes:
    data = body.encode()
    allow = "Allow: GET, HEAD\r\n" if code == 405 else ""
    head = (
        f"HTTP/1.0 {code} {_HTTP_REASONS[code]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n{allow}Connection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else data)


class HealthServer(_Listener):
    """`GET /healthz` (200 while the loop answers) and `/readyz` (200 ready, else 503)."""

    what = "health port"
    limit = HTTP_LIMIT

    def __init__(
        self,
        loop: Loop,
        address: str,
        port: int,
        controlled: Controlled,
        log: Log,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.controlled = controlled
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and address == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
            sock.bind((address, port))
        except OSError as error:
            sock.close()
            raise ControlError(f"cannot listen on {address}:{port}: {error.strerror}") from None
        self.port: int = sock.getsockname()[1]
        super().__init__(loop, sock, log, timeout)
        log.debug(f"health port listening on {address}:{self.port}")

    def complete(self, data: bytearray) -> bool:
        return b"\r\n\r\n" in data or b"\n\n" in data

    def too_large(self) -> bytes:
        return _http(400, "request too large\n")

    def internal_error(self) -> bytes:
        return _http(503, "internal error\n")

    def respond(self, request: bytes, peer: str) -> bytes:
        words = request.split(b"\n", 1)[0].split()
        if len(words) != 3 or not words[2].startswith(b"HTTP/"):
            return _http(400, "bad request\n")
        method, path = words[0], words[1].split(b"?", 1)[0]
        head = method == b"HEAD"
        if method not in (b"GET", b"HEAD"):
            return _http(405, "only GET and HEAD\n")
        if path == b"/healthz":
            return _http(200, "ok\n", head)
        if path == b"/readyz":
            ready = self.controlled.is_ready()
            return _http(200 if ready else 503, "ready\n" if ready else "not ready\n", head)
        return _http(404, "not found: try /healthz or /readyz\n", head)
