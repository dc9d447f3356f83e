"""One worker of a Python service, in a fresh interpreter (the child side of `py:` services).

PID 1 never imports user code: the supervisor spawns the command line that
`command_line()` returns, then only signals and reaps the process. That
process imports the class, constructs it, and turns signals and exceptions
into method calls and an exit status.

Contract with the supervisor
----------------------------
argv::

    <sys.executable> -c BOOTSTRAP ROOT NAME[ID] module:Class

ROOT is the directory (or zip, when pyinit runs from the pyz) holding the
`pyinit` package. BOOTSTRAP puts ROOT first on sys.path just long enough to
import this module, then `main()` moves it to the *end*: the pyz also carries
psutil, sdnotify, cronsim and python-json-logger, and the application's own
copies (its PYTHONPATH, its site-packages) must win. `NAME[ID]` is there for
`ps`; the worker also writes it, cut to 15 bytes, to /proc/self/comm.

Environment added (`extra_env`): PYINIT_WORKER_ID, PYINIT_SERVICE_NAME, and
PYINIT_SERVICE_ARGS = JSON `{"args": [...], "kwargs": {...}}` (values JSON
cannot carry, such as TOML dates, are passed as strings). The worker removes
PYINIT_SERVICE_ARGS from its own environment; the other two stay for the
application and its children. NOTIFY_SOCKET, cwd and PYTHONPATH come from the
supervisor's spawn like any service's.

Exit status: 0 after a stop signal (or a SIGHUP with no reload method) once
the stop completed, or when an oslo-style `wait()` returned by itself; N for
`SystemExit(N)` from user code; 1 for an exception in user code (import,
constructor, run/terminate/reload, start/stop/wait/reset), logged with its
traceback, or when `graceful_shutdown_timeout` ran out; 2 for a malformed
command line or environment (a pyinit bug, not the user's).

Three shapes of class are driven (see the `_Shape` subclasses):
cotyledon (`run`, `terminate`, `reload`), oslo.service `ServiceBase`
(`start`, `stop`, `wait`, `reset`), and periodic jobs (`job` + `interval`,
seconds or a 5-field cron string, and `schedule_on_start`).

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

import json
import os
import queue
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import NoReturn

from pyinit.core.logs import LEVELS, Log
from pyinit.python.service import Service, explicit_name, notify, overrides

#: The `-c` program. Kept short: it is what `ps` shows before NAME[ID].
BOOTSTRAP = "import sys;sys.path.insert(0,sys.argv[1]);import pyinit.python.worker as w;w.main()"

ENV_WORKER_ID = "PYINIT_WORKER_ID"
ENV_SERVICE_NAME = "PYINIT_SERVICE_NAME"
ENV_SERVICE_ARGS = "PYINIT_SERVICE_ARGS"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD_SIGNAL = signal.SIGHUP
#: sd_notify's "infinity" for EXTEND_TIMEOUT_USEC (UINT64_MAX, as systemd spells it).
USEC_INFINITY = 2**64 - 1
_WAKE = b"\0"


# --------------------------------------------------------------------------- supervisor side


def package_root() -> str:
    """The sys.path entry that holds the `pyinit` package: a directory, or the pyz."""
    import pyinit

    archive = getattr(getattr(pyinit, "__loader__", None), "archive", None)
    if isinstance(archive, str):  # zipimporter: pyinit runs from the pyz
        return os.path.abspath(archive)
    return os.path.dirname(os.path.dirname(os.path.abspath(pyinit.__file__ or "")))


def command_line(
    target: str,
    service: str,
    worker_id: int,
    args: tuple[object, ...],
    kwargs: Mapping[str, object],
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for worker `worker_id` of `service` running `target`.

    `target` is "module:Class" (a dotted attribute path after the colon is
    allowed). See the module docstring for the shape of both.
    """
    title = f"{service}[{worker_id}]"
    argv = [sys.executable or "python3", "-c", BOOTSTRAP, package_root(), title, target]
    payload = json.dumps({"args": list(args), "kwargs": dict(kwargs)}, default=str)
    env = {ENV_WORKER_ID: str(worker_id), ENV_SERVICE_NAME: service, ENV_SERVICE_ARGS: payload}
    return argv, env


# --------------------------------------------------------------------------- worker side


def main() -> NoReturn:
    """Entry point of the worker process (called by BOOTSTRAP); never returns."""
    if len(sys.argv) != 4:
        _usage(f"expected ROOT NAME[ID] module:Class, got {sys.argv[1:]!r}")
    root, title, target = sys.argv[1:]
    _settle_sys_path(root)
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


def _settle_sys_path(root: str) -> None:
    """Move ROOT from the front of sys.path (where BOOTSTRAP put it) to the end.

    pyinit's own modules are imported by then and found through
    `pyinit.__path__`, so later `import pyinit.x` still gets this pyinit;
    anything else the pyz carries comes after the application's copies.
    """
    if sys.path and sys.path[0] == root:
        del sys.path[0]
    if root not in sys.path:
        sys.path.append(root)


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


class _Task:
    """A thread running one call of user code; keeps its exception for the main thread."""

    def __init__(self, name: str, target: Callable[[], object], done: Callable[[_Task], None]):
        self.name = name
        self.error: BaseException | None = None
        self._target = target
        self._done = done
        self.thread = threading.Thread(target=self._body, name=name, daemon=True)
        self.thread.start()

    def _body(self) -> None:
        try:
            self._target()
        except BaseException as error:  # SystemExit too: the main thread decides
            self.error = error
        finally:
            self._done(self)

    def alive(self) -> bool:
        return self.thread.is_alive()


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
        self._done: queue.SimpleQueue[_Task] = queue.SimpleQueue()
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

    def _load(self) -> _Shape:
        """Import `module:Class`, construct it the way its shape expects."""
        import importlib

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
        self.grace = _grace(instance)
        if callable(getattr(instance, "job", None)) and hasattr(instance, "interval"):
            return _Periodic(self, instance)
        if takes_id:
            return _Cotyledon(self, instance)
        if all(callable(getattr(instance, m, None)) for m in ("start", "stop", "wait")):
            return _Oslo(self, instance)
        raise TypeError(
            f"{self.target}: not a service class: define run(), start/stop/wait,"
            " or job() with an interval"
        )

    def _serve(self, shape: _Shape) -> int:
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

    def _stop(self, shape: _Shape, why: str) -> int:
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

    def _reload(self, shape: _Shape) -> int | None:
        if shape.reload is None:
            # Not an error: pyinit asked for a reload and restarts the worker
            # with the same id when it exits (cotyledon does the same).
            self.log.info(f"{self.title}: no reload method: stopping for a fresh start")
            return self._stop(shape, "SIGHUP")
        return self.call(shape.reload_name, shape.reload)

    def _finished(self, shape: _Shape) -> int | None:
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
        import traceback

        text = "".join(traceback.format_exception(error)).rstrip()
        self.log.error(
            f"{self.title}: {message}", service=self.service, worker=self.worker_id,
            pid=os.getpid(), traceback=text,
        )  # fmt: skip

    def start_task(self, name: str, target: Callable[[], object]) -> _Task:
        """Run `target` in a thread; its end wakes the main loop (`_Shape.finished`)."""
        return _Task(name, target, self._task_done)

    def _task_done(self, task: _Task) -> None:
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
    import runpy
    import types

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


def _grace(instance: object) -> float | None:
    value = getattr(instance, "graceful_shutdown_timeout", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"graceful_shutdown_timeout must be None or seconds >= 0, not {value!r}")
    return float(value)


# --------------------------------------------------------------------------- the shapes


class _Shape:
    """How one kind of class is driven. Every method runs in the main thread."""

    stop_name = "stop"
    reload_name = "reload"
    #: Called on SIGHUP; None: no reload method, the worker stops for a fresh start.
    reload: Callable[[], object] | None = None

    def __init__(self, worker: Worker, instance: object) -> None:
        self.worker = worker
        self.instance = instance

    def start(self) -> None:
        """Start the service's threads."""

    def stop(self) -> None:
        """The graceful stop; returning means exit 0."""

    def finished(self, task: _Task) -> int | None:
        """A task returned without an exception: the exit status, or None to go on."""
        return None

    def timeout(self) -> float | None:
        """Seconds until `tick` is due, None for never."""
        return None

    def tick(self) -> None:
        """Called after each wakeup that was not a signal."""


def _method(instance: object, name: str) -> Callable[[], object] | None:
    found = getattr(instance, name, None)
    return found if callable(found) and overrides(instance, name) else None


class _Cotyledon(_Shape):
    """cotyledon: run() in a thread; terminate() on stop; reload() on SIGHUP."""

    stop_name = "terminate()"
    reload_name = "reload()"

    def __init__(self, worker: Worker, instance: object) -> None:
        super().__init__(worker, instance)
        self.reload = _method(instance, "reload")

    def start(self) -> None:
        run = _method(self.instance, "run")
        if run is not None:
            self.worker.start_task("run()", run)

    def stop(self) -> None:
        terminate = _method(self.instance, "terminate")
        if terminate is not None:
            terminate()
        # run() may still be going: exit anyway, as cotyledon does.


class _Oslo(_Shape):
    """oslo.service ServiceBase: start() then wait() in a thread; stop() on stop; reset() on HUP."""

    stop_name = "stop()"
    reload_name = "reset()"

    def __init__(self, worker: Worker, instance: object) -> None:
        super().__init__(worker, instance)
        self.reload = _method(instance, "reset")
        self.task: _Task | None = None

    def start(self) -> None:
        def start_then_wait() -> None:
            self.instance.start()  # type: ignore[attr-defined]
            self.instance.wait()  # type: ignore[attr-defined]

        self.task = self.worker.start_task("start()/wait()", start_then_wait)

    def stop(self) -> None:
        self.instance.stop()  # type: ignore[attr-defined]
        if self.task is not None:
            self.task.thread.join()  # wait() returns once stopped; bounded by the grace
            if self.task.error is not None:
                raise self.task.error

    def finished(self, task: _Task) -> int | None:
        return EXIT_OK  # wait() returned by itself: the service is done


class _Periodic(_Shape):
    """jumpscale-style periodic job: job() every `interval` (seconds or cron), never stacked.

    Each run is a thread of its own, so the main loop stays free to act on
    signals and to see that a run is still going when the next one is due;
    that one is skipped, with a warning. An exception in job() is logged and
    the schedule goes on, as cron and pyinit's periodic command services do.
    """

    stop_name = "stop"
    reload_name = "reload()"

    def __init__(self, worker: Worker, instance: object) -> None:
        super().__init__(worker, instance)
        self.job: Callable[[], object] = instance.job  # type: ignore[attr-defined]
        self.every, self.cron = _parse_interval(instance.interval)  # type: ignore[attr-defined]
        self.on_start = bool(getattr(instance, "schedule_on_start", False))
        self.reload = _method(instance, "reload")
        self.running: _Task | None = None
        self.due = float("inf")
        self.cron_slot: object = None  # datetime of the last cron time scheduled

    def start(self) -> None:
        now = time.monotonic()
        self.due = now if self.on_start else self._next(now)

    def timeout(self) -> float | None:
        if self.due == float("inf"):
            return None
        return max(0.0, self.due - time.monotonic())

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.due:
            return
        if self.running is not None and self.running.alive():
            self.worker.log.warning(
                f"{self.worker.title}: job() still running when the next run was due: skipped",
                service=self.worker.service,
                worker=self.worker.worker_id,
            )
        else:
            self.running = _Task("job()", self.job, self._job_done)
        self.due = self._next(now)

    def _next(self, now: float) -> float:
        """Monotonic time of the next run after the one due at `self.due` (or start)."""
        if self.every is not None:
            if self.due == float("inf"):
                return now + self.every
            missed = int((now - self.due) // self.every) + 1  # runs lost while busy collapse
            return self.due + missed * self.every
        from datetime import datetime

        from pyinit.config.model import next_cron_time

        assert self.cron is not None
        wall = datetime.now().astimezone()
        after = max(wall, self.cron_slot) if isinstance(self.cron_slot, datetime) else wall
        slot = next_cron_time(self.cron, after)
        if slot is None:
            return float("inf")
        self.cron_slot = slot
        return now + max(0.0, (slot - wall).total_seconds())

    def _job_done(self, task: _Task) -> None:
        """In the job's thread: report a failure and carry on."""
        if task.error is not None:
            self.worker.error(f"job() raised {type(task.error).__name__}", task.error)

    def stop(self) -> None:
        for name in ("terminate", "stop"):
            method = _method(self.instance, name)
            if method is not None:
                method()
                break
        if self.running is not None:
            self.running.thread.join()  # let the run in progress finish; bounded by the grace


def _parse_interval(value: object) -> tuple[float | None, str | None]:
    """(seconds, None) or (None, cron expression) from a periodic class's `interval`."""
    from datetime import timedelta

    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            from pyinit.config.model import check_cron

            expr = str(value)
            check_cron(expr)
            return None, expr
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"interval must be seconds > 0 or a 5-field cron string, not {value!r}")
    return float(value), None
