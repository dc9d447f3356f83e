"""How each kind of service class is driven inside its worker process.

Three shapes (worker.py loads the class and picks one): cotyledon (`run`,
`terminate`, `reload`), oslo.service `ServiceBase` (`start`, `stop`, `wait`,
`reset`), and periodic jobs (`job` + `interval`, seconds or a 5-field cron
string, and `schedule_on_start`). Split from worker.py so that the worker's
loop (signals, wakeups, exit statuses) reads apart from what each shape means
by start, stop and reload. Every `Shape` method runs in the worker's main
thread; user code that blocks runs in a `Task` thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pyinit.config.model import check_cron, next_cron_time
from pyinit.python.command import EXIT_OK
from pyinit.python.service import overrides

if TYPE_CHECKING:
    from pyinit.python.worker import Worker


class Task:
    """A thread running one call of user code; keeps its exception for the main thread."""

    def __init__(self, name: str, target: Callable[[], object], done: Callable[[Task], None]):
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


def grace_of(instance: object) -> float | None:
    value = getattr(instance, "graceful_shutdown_timeout", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"graceful_shutdown_timeout must be None or seconds >= 0, not {value!r}")
    return float(value)


class Shape:
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

    def finished(self, task: Task) -> int | None:
        """A task returned without an exception: the exit status, or None to go on."""
        return None

    def timeout(self) -> float | None:
        """Seconds until `tick` is due, None for never."""
        return None

    def tick(self) -> None:
        """Called after each wakeup that was not a signal."""


def user_method(instance: object, name: str) -> Callable[[], object] | None:
    found = getattr(instance, name, None)
    return found if callable(found) and overrides(instance, name) else None


class Cotyledon(Shape):
    """cotyledon: run() in a thread; terminate() on stop; reload() on SIGHUP."""

    stop_name = "terminate()"
    reload_name = "reload()"

    def __init__(self, worker: Worker, instance: object) -> None:
        super().__init__(worker, instance)
        self.reload = user_method(instance, "reload")

    def start(self) -> None:
        run = user_method(self.instance, "run")
        if run is not None:
            self.worker.start_task("run()", run)

    def stop(self) -> None:
        terminate = user_method(self.instance, "terminate")
        if terminate is not None:
            terminate()
        # run() may still be going: exit anyway, as cotyledon does.


class Oslo(Shape):
    """oslo.service ServiceBase: start() then wait() in a thread; stop() on stop; reset() on HUP."""

    stop_name = "stop()"
    reload_name = "reset()"

    def __init__(self, worker: Worker, instance: object) -> None:
        super().__init__(worker, instance)
        self.reload = user_method(instance, "reset")
        self.task: Task | None = None

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

    def finished(self, task: Task) -> int | None:
        return EXIT_OK  # wait() returned by itself: the service is done


class Periodic(Shape):
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
        self.every, self.cron = parse_interval(instance.interval)  # type: ignore[attr-defined]
        self.on_start = bool(getattr(instance, "schedule_on_start", False))
        self.reload = user_method(instance, "reload")
        self.running: Task | None = None
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
            self.running = Task("job()", self.job, self._job_done)
        self.due = self._next(now)

    def _next(self, now: float) -> float:
        """Monotonic time of the next run after the one due at `self.due` (or start)."""
        if self.every is not None:
            if self.due == float("inf"):
                return now + self.every
            missed = int((now - self.due) // self.every) + 1  # runs lost while busy collapse
            return self.due + missed * self.every
        assert self.cron is not None
        wall = datetime.now().astimezone()
        after = max(wall, self.cron_slot) if isinstance(self.cron_slot, datetime) else wall
        slot = next_cron_time(self.cron, after)
        if slot is None:
            return float("inf")
        self.cron_slot = slot
        return now + max(0.0, (slot - wall).total_seconds())

    def _job_done(self, task: Task) -> None:
        """In the job's thread: report a failure and carry on."""
        if task.error is not None:
            self.worker.error(f"job() raised {type(task.error).__name__}", task.error)

    def stop(self) -> None:
        for name in ("terminate", "stop"):
            method = user_method(self.instance, name)
            if method is not None:
                method()
                break
        if self.running is not None:
            self.running.thread.join()  # let the run in progress finish; bounded by the grace


def parse_interval(value: object) -> tuple[float | None, str | None]:
    """(seconds, None) or (None, cron expression) from a periodic class's `interval`."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            expr = str(value)
            check_cron(expr)
            return None, expr
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"interval must be seconds > 0 or a 5-field cron string, not {value!r}")
    return float(value), None
