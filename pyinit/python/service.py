"""The `Service` base class: what a Python service written for pyinit looks like.

The API is cotyledon's, so that code written for cotyledon ports by changing
an import. A worker is either a fresh interpreter (a `py:module:Class`
service of PID 1: `pyinit.python.command` builds its command line, `worker` imports the
class) or a fork of a `ServiceManager` (`pyinit.python.forking`); either way it is
constructed with the worker id and the service's args/kwargs, and signals
map to the methods below (SIGTERM/SIGQUIT -> `terminate()`, SIGHUP ->
`reload()`; SIGINT too in a fresh interpreter, while a forked worker exits 1
at once on SIGINT, as cotyledon's do).

`notify()` speaks the sd_notify datagram protocol to `$NOTIFY_SOCKET`, the
socket pyinit gives every Python worker: a plain AF_UNIX datagram, so no
dependency is needed in the worker.
"""

from __future__ import annotations

import os
import socket
from typing import ClassVar


def notify(message: str) -> bool:
    """Send one sd_notify `message` (e.g. "READY=1") to $NOTIFY_SOCKET.

    The address is a path, or `@name` for the abstract namespace. Returns
    False when NOTIFY_SOCKET is unset or the datagram could not be sent:
    readiness is a report, and a worker must not die because nobody listens
    (systemd's own sd_notify() is a no-op without the variable, too).
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # unset, or a transport we do not speak (vsock:)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


class Service:
    """Base class for a service run by pyinit, one instance per worker process.

    Subclass it and override `run()`, and `terminate()` / `reload()` when the
    service has something to do on a stop or a SIGHUP. pyinit constructs the
    class as `cls(worker_id, *args, **kwargs)` with the service's `args` and
    `kwargs`.
    """

    #: Name used in the process title and the logs. Left unset, it is the
    #: class's name (cotyledon's default); for a `py:` service of a config
    #: file, the service's own name then wins (see `explicit_name`).
    name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name is None:
            cls.name = _DefaultName(cls.__name__)

    #: Seconds `terminate()` may take once the stop signal arrives. None: the
    #: service's `grace` applies (pyinit SIGKILLs the worker when it runs
    #: out); 0: wait forever; N > 0: the worker exits 1 itself after N
    #: seconds. When not None it wins over `grace`: the worker tells pyinit
    #: over sd_notify (STOPPING=1 + EXTEND_TIMEOUT_USEC) when the stop starts.
    graceful_shutdown_timeout: ClassVar[float | None] = None

    def __init__(self, worker_id: int) -> None:
        """Create the service of worker `worker_id`.

        Worker ids run from 0 to workers-1 and are stable: when worker 1
        dies, its replacement is worker 1 again, so the id can be used to
        share out work (partition N of M).
        """
        self.worker_id = worker_id
        self.pid = os.getpid()

    def run(self) -> None:
        """The service's activity, called once, in a thread of its own.

        It may block for the life of the worker or return at once (having
        started its own threads, say): the worker keeps running until it is
        stopped either way. Not overridden: the worker just waits for the
        stop signal. An exception raised here is logged with its traceback
        and the worker exits 1; `SystemExit(code)` exits with that code.
        """

    def terminate(self) -> None:
        """Stop gracefully: called in the main thread on the stop signal.

        SIGTERM, SIGINT and SIGQUIT all mean stop. When this returns the
        worker exits 0, whether `run()` has returned or not; raise
        `SystemExit(code)` for another exit status. An exception is logged
        with its traceback and the worker exits 1. Not overridden: the worker
        exits 0. See `graceful_shutdown_timeout` for how long it may take.
        """

    def reload(self) -> None:
        """Reload the configuration: called in the main thread on SIGHUP.

        The worker keeps running afterwards. Not overridden, a SIGHUP stops
        the worker as a stop signal would (`terminate()`, then exit 0), and
        pyinit starts a fresh one with the same worker id. An exception is
        logged with its traceback and the worker exits 1.
        """

    def notify_ready(self) -> bool:
        """Tell pyinit this worker is ready (sd_notify `READY=1`).

        A no-op returning False outside pyinit (no NOTIFY_SOCKET).
        """
        return notify("READY=1")

    def notify_status(self, text: str) -> bool:
        """Report a one-line status (sd_notify `STATUS=text`)."""
        return notify("STATUS=" + text.replace("\n", " "))

    def notify_watchdog(self) -> bool:
        """Keep-alive for a service with `watchdog` set (sd_notify `WATCHDOG=1`)."""
        return notify("WATCHDOG=1")


class _DefaultName(str):
    """A class name filled in for `Service.name`: not a name the user chose."""


def explicit_name(cls: type) -> str | None:
    """The `name` a class sets itself, None when it is only the default."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or isinstance(name, _DefaultName):
        return None
    return name


def overrides(instance: object, method: str) -> bool:
    """True when `instance` has `method` and it is not `Service`'s default.

    The base class's methods document the contract; "not overridden" means
    the default behaviour the worker runner implements.
    """
    found = getattr(type(instance), method, None)
    return callable(found) and found is not getattr(Service, method, None)
