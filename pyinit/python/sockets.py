"""The sockets pyinit holds for a service, as socket objects in its worker.

A service with `listen = [...]` gets them by systemd's socket-activation
protocol (see pyinit/supervise/listen.py): fds 3.., LISTEN_FDS, LISTEN_PID,
LISTEN_FDNAMES. `listen_sockets()` is sd_listen_fds(3) for Python: it checks
LISTEN_PID is this process (a child that inherited the environment must not
take its parent's sockets), wraps each fd once, and marks it close-on-exec
so that the service's own children do not hold the port.

Serving from one takes two lines with the stdlib, for example::

    server = ThreadingHTTPServer(("", 0), Handler, bind_and_activate=False)
    server.socket = pyinit.listen_sockets()[0]

The sockets belong to pyinit: a worker may close its copy, and the next
worker gets them again. They stay blocking as pyinit made them; a worker
that sets O_NONBLOCK sets it for every worker sharing the socket.
"""

from __future__ import annotations

import os
import socket

FIRST_FD = 3

_sockets: list[socket.socket] | None = None  # wrapped once: a second object would close the fd


def listen_sockets() -> list[socket.socket]:
    """This worker's sockets, in `listen` order; [] when it has none.

    Returns the same objects on every call in one process. A process forked
    from the worker (a ServiceManager worker) gets them once LISTEN_PID
    names it (pyinit.python.forking sets it after the fork).
    """
    global _sockets
    if os.environ.get("LISTEN_PID", "") != str(os.getpid()):
        return []
    if _sockets is None:
        _sockets = _adopt()
    return list(_sockets)


def listen_names() -> list[str]:
    """LISTEN_FDNAMES, one name a socket (pyinit gives the service's name)."""
    count = len(listen_sockets())
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    return (names + [""] * count)[:count]


def _adopt() -> list[socket.socket]:
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    sockets = []
    for fd in range(FIRST_FD, FIRST_FD + max(count, 0)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            break  # closed, or not a socket: the protocol was not followed
        sock.set_inheritable(False)
        sockets.append(sock)
    return sockets
