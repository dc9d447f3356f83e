"""What a `ServiceManager` wants and what it has: registered services and worker slots.

The manager (manager.py) reconciles one against the other, as services mode
does: a `Registered` service says how many workers should run (the desired
state, changed by `add()` and `reconfigure()`), a `Slot` is one worker id and
its process, if any (the actual state). Also here: how a service is named
(its id in logs and hooks) and the respawn backoff, which are pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NewType

from pyinit.config.model import Backoff, backoff_delay

if TYPE_CHECKING:
    from pyinit.core.loop import Timer

#: cotyledon's ids are uuid4s; ours read well in logs: the service's name.
ServiceId = NewType("ServiceId", str)
WorkerId = NewType("WorkerId", int)

#: cotyledon allows one fork a second and sleeps 5 s when forking "too fast";
#: this is Twisted's doubling rule (as services mode has it), capped at 5 s.
RESPAWN_BACKOFF = Backoff(threshold=1.0, min_delay=1.0, max_delay=5.0)


class Registered:
    """One `add()`: what to run and how many times (the desired state)."""

    __slots__ = ("factory", "workers", "args", "kwargs", "name")

    def __init__(
        self,
        factory: Callable[..., object],
        workers: int,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        name: str,
    ) -> None:
        self.factory = factory
        self.workers = workers
        self.args = args
        self.kwargs = kwargs
        self.name = name


class Slot:
    """One worker id of one service (the actual state); pid 0: no process."""

    __slots__ = ("service_id", "worker_id", "pid", "started_at", "instant_deaths", "timer",
                 "restart_now", "stop_sent")  # fmt: skip

    def __init__(self, service_id: ServiceId, worker_id: int) -> None:
        self.service_id = service_id
        self.worker_id = worker_id
        self.pid = 0
        self.started_at = 0.0
        self.instant_deaths = 0
        self.timer: Timer | None = None  # respawn backoff
        self.restart_now = False  # we asked it to exit (SIGHUP): no backoff
        self.stop_sent = False  # scaled down: SIGTERM already sent

    def respawn_delay(self, now: float) -> float:
        """Seconds before this slot's next fork after a death at `now` (0: at once).

        Deaths within RESPAWN_BACKOFF.threshold of the start count as instant;
        each one in a row doubles the delay, a longer run resets it.
        """
        if self.restart_now:  # we asked it to exit (SIGHUP): replace it at once
            self.restart_now = False
            self.instant_deaths = 0
            return 0.0
        if now - self.started_at < RESPAWN_BACKOFF.threshold:
            self.instant_deaths += 1
        else:
            self.instant_deaths = 0
        return backoff_delay(self.instant_deaths, RESPAWN_BACKOFF)


def check_workers(workers: object, minimum: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < minimum:
        raise ValueError(
            f"'workers' must be an int >= {minimum}, not: {workers!r} ({type(workers).__name__})"
        )


def service_name(service: object) -> str:
    """A Service's `name`, a function's or class's name, or a partial's function's."""
    for candidate in (getattr(service, "name", None), getattr(service, "__name__", None)):
        if isinstance(candidate, str) and candidate:
            return safe_name(candidate)
    func = getattr(service, "func", None)  # functools.partial
    if func is not None:
        return service_name(func)
    return safe_name(type(service).__name__)


def safe_name(text: str) -> str:
    name = "".join(c if c.isalnum() or c in "_-." else "-" for c in text).strip("-.")
    return name or "service"
