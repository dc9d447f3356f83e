"""One listening socket on pyinit's loop: accept, read one request, write one reply.

The machinery shared by the ctl socket (server.py) and the health port
(health.py); each subclass says what a complete request is and how to answer
it. Why this shape: everything runs as readers on pyinit's one loop (no
thread in PID 1, STYLE rule 8), so no callback may block: accepts, reads and
writes are non-blocking, and a deadline timer drops a client that stalls.
One request per connection means no framing state survives a request, and a
misbehaving client can only break its own connection. At most
MAX_CONNECTIONS are open per listener; a new client past that closes the
oldest one still sending (issue 7.20).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Protocol

from pyinit.control.protocol import REQUEST_LIMIT

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop, Timer

REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request and read the reply
MAX_CONNECTIONS = 32  # per listener; a new one past this closes the oldest still reading


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
    last_exit (str like "exit status 3", or None), and may carry the other
    fields of protocol.py's status row (ok, starts, last_exit_code, ...).
    The server adds rss and cpu. `status(names)` keeps the rows of those
    services, and raises KeyError with every unknown name as its args;
    start/stop/restart/send_signal raise KeyError for an unknown service.
    """

    def status(self, names: Sequence[str] = ()) -> list[dict[str, object]]: ...
    def is_ready(self) -> bool: ...
    def start(self, name: str) -> str: ...
    def stop(self, name: str) -> str: ...
    def restart(self, name: str) -> str: ...
    def send_signal(self, name: str, signum: int) -> str: ...
    def reload(self) -> str: ...


class _Connection:
    """One accepted client: read one request (capped, with a deadline), write one reply."""

    def __init__(self, listener: Listener, sock: socket.socket, peer: str) -> None:
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


class Listener:
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
