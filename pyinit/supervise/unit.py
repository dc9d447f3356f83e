"""One service at run time: its workers, their states, and restart policy.

The spec (`ServiceSpec`) says what the user asked for and never changes;
`Unit` and `Worker` say what is happening. Everything here is decided from
values and a clock reading passed in, so the policy reads (and tests) without
processes; `supervisor.py` (and `exits.py`, `starter.py`) do the I/O and call in.

A worker's states, and the edges between them (supervisord's process.py,
with the names it made familiar):

    STOPPED  --reconcile starts it-->  STARTING (spawned, not ready yet)
    STARTING --ready-->                RUNNING
    STARTING/RUNNING --exit-->         STOPPED (restart now: the next reconcile
                                       starts it), BACKOFF (restart due later),
                                       EXITED (done: oneshot, periodic run,
                                       policy says no restart) or FAILED (gave up)
    STARTING/RUNNING --stop-->         STOPPING (stop signal sent, kill timer armed)
    STOPPING --exit-->                 STOPPED
    BACKOFF  --timer-->                STOPPED;   BACKOFF --stop--> STOPPED

STOPPED means "no process, nothing pending": whether it should run is not the
worker's to say but the supervisor's reconcile step, which compares it with
the unit's desired state (enabled, its `after` met, its id below `workers`).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from typing import TYPE_CHECKING

from pyinit.config.model import RestartPolicy, ServiceSpec, backoff_delay

if TYPE_CHECKING:
    from pyinit.core.loop import Timer
    from pyinit.core.model import ExitStatus
    from pyinit.supervise.rollout import Rollout


class WorkerState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"


#: States in which the worker has a live process.
ALIVE = frozenset({WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STOPPING})


class Worker:
    """One worker process of a unit; `worker_id` is stable across restarts."""

    def __init__(self, unit: Unit, worker_id: int) -> None:
        self.unit = unit
        self.worker_id = worker_id
        self.state = WorkerState.STOPPED
        self.pid = 0
        self.process: object = None  # the Popen, kept so it never reaps on its own
        self.started_at = 0.0
        self.instant_deaths = 0
        self.last_exit: ExitStatus | None = None
        self.last_exit_at: float | None = None  # Unix time (wall clock: shown to people)
        self.starts = 0  # processes started, whatever the reason
        self.timer: Timer | None = None  # backoff or kill timer, one at a time
        # The unit's `generation` this process was started from: an older one
        # means a reload changed the definition, and reconcile replaces it.
        self.generation = 0
        # Set when pyinit stops it as a failure (not ready in time, watchdog
        # silent): its exit then goes through the restart policy.
        self.failing = False
        # Set when a reload signal asks a Python worker without reload() to
        # exit 0 and start afresh: that exit is a restart, not the policy's.
        self.restart_on_clean_exit = False
        self.relays: list[object] = []  # output relays (prefix/json modes)
        self.ready_timer: Timer | None = None  # ready_timeout
        self.watchdog_timer: Timer | None = None
        self.probe: object = None  # readiness.Probe while tcp/file/exec checks run
        self.status_text = ""  # the last STATUS= it sent
        self.restarts = 0  # restarts by policy since pyinit started

    @property
    def label(self) -> str:
        return f"{self.unit.name}[{self.worker_id}]"

    def record_exit(self, status: ExitStatus) -> None:
        """Its process ended (or could not start) with `status`: remember how and when."""
        self.last_exit = status
        self.last_exit_at = time.time()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop_watching(self) -> None:
        """Readiness checks and deadlines end with the process they watch."""
        for timer in (self.ready_timer, self.watchdog_timer):
            if timer is not None:
                timer.cancel()
        self.ready_timer = self.watchdog_timer = None
        if self.probe is not None:
            self.probe.cancel()  # type: ignore[attr-defined]
            self.probe = None


class Decision(enum.Enum):
    """What to do after a worker exited on its own."""

    RESTART = "restart"  # start again, after `delay` seconds (0: now)
    DONE = "done"  # stay EXITED: nothing more to do for this worker
    FAILED = "failed"  # gave up on it (and maybe on everything, if critical)


class Unit:
    """A service: its spec, its workers, and the restart history it shares."""

    def __init__(self, spec: ServiceSpec, *, main: bool = False) -> None:
        # The desired state. `spec` is replaced (never mutated) by a reload or
        # a scale; `generation` counts the changes of definition (not of
        # `workers`), so a worker started from an older one is replaced.
        self.spec = spec
        self.generation = 0
        self.enabled = True  # False after `pyinit ctl stop`, until `ctl start`
        self.main = main  # COMMAND given with services: its exit ends pyinit
        # The actual state: one slot per worker id, including ids above
        # `workers` whose process is still stopping after a scale down.
        self.workers = {i: Worker(self, i) for i in range(spec.workers)}
        self.restarts: deque[float] = deque()  # times of restarts inside restart_window
        self.started = False  # its `after` dependencies were met and it was started
        self.schedule_timer: Timer | None = None  # periodic: the next run
        self.scheduled_generation = -1  # the generation the timer was armed for
        # Rolling replacement (rollout.py): new workers not yet in their slot,
        # old ones out of it and stopping, the latest rollout, and the last
        # definition fully rolled out (what a failed rollout goes back to).
        self.surge: dict[int, Worker] = {}
        self.draining: list[Worker] = []
        self.rollout: Rollout | None = None
        self.stable: tuple[ServiceSpec, int] = (spec, 0)

    @property
    def name(self) -> str:
        return self.spec.name

    def redefine(self, spec: ServiceSpec) -> None:
        """A reload changed the definition: what runs is replaced, and a worker
        that had failed or finished gets another go with the new one."""
        self.spec = spec
        self.generation += 1
        self.restarts.clear()
        for worker in self.workers.values():
            if worker.state in (WorkerState.FAILED, WorkerState.EXITED):
                worker.state = WorkerState.STOPPED

    def renew(self) -> None:
        """`ctl restart` of a rolling unit: same definition, every worker replaced."""
        self.generation += 1
        self.restarts.clear()

    def all_workers(self) -> list[Worker]:
        """Slot workers, then those of a rollout beside them (rollout.py)."""
        return [*self.workers.values(), *self.surge.values(), *self.draining]

    def alive_workers(self) -> list[Worker]:
        return [w for w in self.all_workers() if w.state in ALIVE]

    def is_satisfied(self) -> bool:
        """May services that name this one in `after` start now?

        A oneshot must have exited 0; a periodic job has been scheduled;
        anything else must have every worker running and ready (a unit with
        0 workers counts as satisfied).
        """
        if not self.started:
            return False
        if self.spec.schedule is not None:
            return True
        if self.spec.oneshot:
            return all(
                w.state is WorkerState.EXITED
                and w.last_exit is not None
                and w.last_exit.shell_code == 0
                for w in self.workers.values()
            )
        return all(w.state is WorkerState.RUNNING for w in self.workers.values())

    def decide(self, worker: Worker, status: ExitStatus, now: float) -> tuple[Decision, float]:
        """After `worker` exited on its own with `status`: restart it, and when?

        Twisted's ProcessMonitor rule: a run shorter than `threshold` is an
        instant death; each one in a row doubles the delay from `min_delay` up
        to `max_delay`; a longer run resets the count and restarts at once.
        `max_restarts` restarts inside `restart_window` mean the unit failed.
        """
        spec = self.spec
        if spec.schedule is not None:
            return Decision.DONE, 0.0  # the schedule starts the next run
        failed = status.shell_code != 0
        if spec.restart is RestartPolicy.NEVER or (
            spec.restart is RestartPolicy.ON_FAILURE and not failed
        ):
            return (Decision.FAILED if failed else Decision.DONE), 0.0
        if now - worker.started_at < spec.backoff.threshold:
            worker.instant_deaths += 1
        else:
            worker.instant_deaths = 0
        while self.restarts and self.restarts[0] <= now - spec.restart_window:
            self.restarts.popleft()
        if spec.max_restarts and len(self.restarts) >= spec.max_restarts:
            return Decision.FAILED, 0.0
        self.restarts.append(now)
        return Decision.RESTART, backoff_delay(worker.instant_deaths, spec.backoff)
