"""One worker of a Python service, in a fresh interpreter (the child side of `py:` services).

PID 1 never imports user code: the supervisor spawns the command line that
`command.command_line()` returns (the contract: argv, environment, exit
statuses, is in pyinit/python/command.py), then only signals and reaps the
process. This process imports the class, constructs it, picks how to drive
it (shapes.py), and turns signals and exceptions into method calls and an
exit status.

Signals
-------
The stop signals are SIGTERM, SIGINT and SIGQUIT; SIGHUP means reload. Their
Python handlers are no-ops and `signal.set_wakeup_fd` carries the signal
number to a pipe the main thread `select()`s on (STYLE rule 1). A flag or a
queue filled by the handler would not do: CPython runs Python handlers only
in the main thread, and when the kernel delivers the signal to the `run()`
thread a main thread blocked in a lock or `select()` is not woken; the C-level
wakeup write happens in whichever thread got the signal. Worker threads wake
the main thread the same way, by writing a 0 byte (no signal has number 0).
Handlers, not SIG_IGN or a mask, so that nothing is inherited by processes
the service starts (STYLE rule 7). The only timer is the periodic schedule,
given to `select()` as its timeout: an idle worker makes no wakeups.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import runpy
import select
import signal
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from typing import NoReturn

from pyinit.core.logs import LEVELS, Log
from pyinit.python.command import (
    ENV_SERVICE_ARGS,
    ENV_SERVICE_NAME,
    ENV_WORKER_ID,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    settle_sys_path,
)
from pyinit.python.service import Service, explicit_name, notify
from pyinit.python.shapes import Cotyledon, Oslo, Periodic, Shape, Task, grace_of

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD_SIGNAL = signal.SIGHUP
#: sd_notify's "infinity" for EXTEND_TIMEOUT_USEC (UINT64_MAX, as systemd spells it).
USEC_INFINITY = 2**64 - 1
_WAKE = b"\0"


def main() -> NoReturn:
    """Entry point of the worker process (called by BOOTSTRAP); never returns."""
    if len(sys.argv) != 4:
        _usage(f"expected ROOT NAME[ID] module:Class, got {sys.argv[1:]!r}")
    root, title, target = sys.argv[1:]
    settle_sys_path(root)
    try:
        worker_id = int(os.environ[ENV_WORKER_ID])
        service = os.environ.get(ENV_SERVICE_NAME) or title.partition("[")[0]
        payload = json.loads(os.environ.pop(ENV_SERVICE_ARGS, '{"args": [], "kwargs": {}}'))
        args, kwargs = tuple(payload["args"]), dict(payload["kwargs"])
    except (KeyError, ValueError, TypeError) as error:
        _usage(f"bad worker environment: {type(error).__name__}: {error}")
    _set_comm(title)
    worker = Worker(service, worker_id, target, args, kwargs)
    _exit(worker.main())


def _set_comm(title: str) -> None:
    """Process name for ps/top (TASK_COMM_LEN: 15 bytes); best effort."""
    try:
        with open("/proc/self/comm", "wb") as comm:
            comm.write(title.encode("utf-8", "replace")[:15])
    except OSError:
        pass


def _usage(message: str) -> NoReturn:
    os.write(2, f"pyinit worker: error: {message}\n".encode("utf-8", "backslashreplace"))
    os._exit(EXIT_USAGE)


def _exit(code: int) -> NoReturn:
    """Exit now, with `code`, whatever threads are still running.

    `run()` may still be blocked in its thread: a normal interpreter exit
    would wait for it, or kill it at finalization while it holds stdout's
    lock (a fatal error). So flush what user code printed and `_exit`, as
    cotyledon does; `atexit` handlers do not run.
    """
    if "logging" in sys.modules:
        try:
            sys.modules["logging"].shutdown()
        except Exception:  # noqa: S110 - exiting anyway
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: S110 - a closed pipe must not change the status
            pass
    os._exit(code)


def exit_code(stop: SystemExit) -> int:
    """The status `sys.exit(code)` would give: None -> 0, int -> int, else print it, 1."""
    if stop.code is None:
        return EXIT_OK
    if isinstance(stop.code, int):
        return stop.code & 0xFF
    print(stop.code, file=sys.stderr)
    return EXIT_FAILURE


class Worker:
    """Runs one instance of a service class in this process; `main()` gives the exit status."""

    def __init__(
        self,
        service: str,
        worker_id: int,
        target: str,
        args: tuple[object, ...],
        kwargs: Mapping[str, object],
    ) -> None:
        self.service = service
        self.worker_id = worker_id
        self.title = f"{service}[{worker_id}]"
        self.target = target
        self.args = args
        self.kwargs = kwargs
        self.grace: float | None = None  # the class's graceful_shutdown_timeout, once loaded
        level = os.environ.get("PYINIT_LOG_LEVEL", "info").lower()
        fmt = os.environ.get("PYINIT_LOG_FORMAT", "text").lower()
        self.log = Log(level if level in LEVELS else "info", "json" if fmt == "json" else "text")
        self._done: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # ---- life cycle

    def main(self) -> int:
        """Import, construct, serve; every outcome becomes an exit status."""
        self._install_signals()  # first: a SIGTERM during a slow import is kept, not fatal
        try:
            shape = self._load()
        except SystemExit as stop:
            return exit_code(stop)
        except BaseException as error:
            self.error(f"cannot start {self.target}", error)
            return EXIT_FAILURE
        return self._serve(shape)

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        for signum in (*STOP_SIGNALS, RELOAD_SIGNAL):
            signal.signal(signum, _noop)

    def _load(self) -> Shape:
        """Import `module:Class`, construct it the way its shape expects."""
        module_name, colon, attribute = self.target.rpartition(":")
        if not colon or not module_name or not attribute:
            raise ValueError(f"target {self.target!r} is not module:Class")
        found: object
        if module_name.endswith(".py"):
            found = _load_script(module_name)
        else:
            found = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
        if not callable(found):
            raise TypeError(f"{self.target} is not a class")
        takes_id = _is_cotyledon(found)
        instance = (
            found(self.worker_id, *self.args, **self.kwargs)
            if takes_id
            else found(*self.args, **self.kwargs)
        )
        if isinstance(instance, Service) and not hasattr(instance, "worker_id"):
            Service.__init__(instance, self.worker_id)  # subclass forgot super().__init__()
        name = explicit_name(type(instance))  # the class name is no better than the service's
        if name and name != self.service:
            self.title = f"{name}[{self.worker_id}]"
            _set_comm(self.title)
        self.grace = grace_of(instance)
        if callable(getattr(instance, "job", None)) and hasattr(instance, "interval"):
            return Periodic(self, instance)
        if takes_id:
            return Cotyledon(self, instance)
        if all(callable(getattr(instance, m, None)) for m in ("start", "stop", "wait")):
            return Oslo(self, instance)
        raise TypeError(
            f"{self.target}: not a service class: define run(), start/stop/wait,"
            " or job() with an interval"
        )

    def _serve(self, shape: Shape) -> int:
        """The main thread's loop: wait for a signal, a finished thread or the next timer."""
        code = self.call("start", shape.start)
        while code is None:
            readable, _, _ = select.select([self._rfd], [], [], shape.timeout())
            for byte in self._read_wakeups() if readable else ():
                if byte in STOP_SIGNALS:
                    code = self._stop(shape, signal.Signals(byte).name)
                elif byte == RELOAD_SIGNAL:
                    code = self._reload(shape)
                elif byte == 0:
                    code = self._finished(shape)
                if code is not None:
                    break
            else:
                code = self.call("schedule", shape.tick)
        return code

    def _read_wakeups(self) -> Iterator[int]:
        while True:
            try:
                data = os.read(self._rfd, 512)
            except BlockingIOError:
                return
            if not data:
                return
            yield from data

    def _stop(self, shape: Shape, why: str) -> int:
        """The graceful stop: tell pyinit how long it may take, then run it."""
        if self.grace is not None:
            usec = USEC_INFINITY if self.grace == 0 else round(self.grace * 1_000_000)
            notify(f"STOPPING=1\nEXTEND_TIMEOUT_USEC={usec}")
            if self.grace > 0:
                timer = threading.Timer(self.grace, self._overdue, (shape.stop_name,))
                timer.daemon = True
                timer.start()
        self.log.debug(f"{self.title}: {why}: stopping", service=self.service)
        code = self.call(shape.stop_name, shape.stop)
        return EXIT_OK if code is None else code

    def _overdue(self, what: str) -> None:
        """Timer thread: the stop outlived graceful_shutdown_timeout."""
        self.log.error(
            f"{self.title}: {what} still running after graceful_shutdown_timeout="
            f"{self.grace:g}s: exiting 1",
            service=self.service,
            worker=self.worker_id,
        )
        _exit(EXIT_FAILURE)

    def _reload(self, shape: Shape) -> int | None:
        if shape.reload is None:
            # Not an error: pyinit asked for a reload and restarts the worker
            # with the same id when it exits (cotyledon does the same).
            self.log.info(f"{self.title}: no reload method: stopping for a fresh start")
            return self._stop(shape, "SIGHUP")
        return self.call(shape.reload_name, shape.reload)

    def _finished(self, shape: Shape) -> int | None:
        while True:
            try:
                task = self._done.get_nowait()
            except queue.Empty:
                return None
            if task.error is not None:
                return self.outcome(task.name, task.error)
            code = shape.finished(task)
            if code is not None:
                return code

    # ---- helpers for the shapes

    def call(self, what: str, function: Callable[[], object]) -> int | None:
        """Run user code in this thread: None when it returned, else the exit status."""
        try:
            function()
        except BaseException as error:
            return self.outcome(what, error)
        return None

    def outcome(self, what: str, error: BaseException) -> int:
        """Exit status for an exception escaping `what`: SystemExit's code, else log + 1."""
        if isinstance(error, SystemExit):
            return exit_code(error)
        self.error(f"{what} raised {type(error).__name__}: {error}", error)
        return EXIT_FAILURE

    def error(self, message: str, error: BaseException) -> None:
        text = "".join(traceback.format_exception(error)).rstrip()
        self.log.error(
            f"{self.title}: {message}", service=self.service, worker=self.worker_id,
            pid=os.getpid(), traceback=text,
        )  # fmt: skip

    def start_task(self, name: str, target: Callable[[], object]) -> Task:
        """Run `target` in a thread; its end wakes the main loop (`Shape.finished`)."""
        return Task(name, target, self._task_done)

    def _task_done(self, task: Task) -> None:
        self._done.put(task)
        try:
            os.write(self._wfd, _WAKE)
        except BlockingIOError:
            pass  # the pipe is full of wakeups already


def _load_script(path: str) -> object:
    """A class defined in an application's main script (ServiceManager).

    The script runs as `__mp_main__`, as multiprocessing's spawn does, so its
    `if __name__ == "__main__":` block (the one that called run()) stays out.
    """
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
    sys.modules["__mp_main__"] = module
    return module


def _noop(signum: int, frame: object) -> None:
    """Python-level handler: the wakeup fd already carried the signal to the loop."""


def _is_cotyledon(cls: object) -> bool:
    """Constructed as `cls(worker_id, *args, **kwargs)`: a Service, or a class with run()."""
    if isinstance(cls, type) and issubclass(cls, Service):
        return True
    return callable(getattr(cls, "run", None)) and not callable(getattr(cls, "job", None))
