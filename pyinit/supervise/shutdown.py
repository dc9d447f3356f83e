"""Services mode's stop sequence: layers backwards, then the sweep, then exit.

SPEC section 3, "Stop": each layer of `after` is stopped once the layers
that depend on it are down, every worker with its stop signal and SIGKILL
at its grace, and the whole sequence bounded by the largest grace. Then
every descendant still alive (orphans, setsid daemons) gets SIGTERM and,
at that same deadline, SIGKILL: nothing outlives pyinit.

Two promises, whatever a child or a bug does:
* it finishes without /proc: "is anything left?" is asked of the kernel
  (`waitid` on our children: as PID 1 or a subreaper every orphan is one),
  and as PID 1 `kill(-1)` reaches every process of the namespace;
* it finishes at all: a backstop timer past the deadline kills what is
  left and stops the loop, even if a bug left the sequence waiting.
With a grace of 0 ("wait forever") neither deadline nor backstop exists,
as asked.

It says what it waits for: if anything is still running a moment into
the grace, one line names it and when SIGKILL comes; at the end one line
says what was stopped, how long it took, what had to be killed, and the
exit status.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pyinit.core import reaper, signals
from pyinit.core.model import KILL_SETTLE_SECONDS
from pyinit.supervise.unit import ALIVE, WorkerState

if TYPE_CHECKING:
    from pyinit.supervise.supervisor import Supervisor
    from pyinit.supervise.unit import Unit, Worker


#: How far into the grace pyinit says who it is still waiting for (at most).
WAIT_REPORT_SECONDS = 1.0


class Shutdown:
    """One shutdown of one supervisor; `proceed()` is called after every reap."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._layers: list[list[str]] = []
        self.deadline: float | None = None
        self._sweep_started = False
        self._began = 0.0
        self._workers = 0  # alive when the shutdown began
        self.killed: list[str] = []  # labels of what needed SIGKILL

    def begin(self) -> None:
        supervisor = self._supervisor
        units = [*supervisor.units.values(), *supervisor.retiring]
        graces = [supervisor.grace_of(u) for u in units] or [supervisor.grace]
        self._began = time.monotonic()
        self._workers = sum(len(u.alive_workers()) for u in units)
        # The whole shutdown is bounded by the largest grace (0: wait forever).
        if 0 not in graces:
            self.deadline = self._began + max(graces)
            backstop = self.deadline + 2 * KILL_SETTLE_SECONDS
            supervisor.loop.call_at(backstop, self._on_backstop)
        if self._workers:
            delay = min([g / 2 for g in graces if g > 0] + [WAIT_REPORT_SECONDS])
            supervisor.loop.call_later(delay, self._report_waiting)
        for unit in units:
            if unit.schedule_timer is not None:
                unit.schedule_timer.cancel()
                unit.schedule_timer = None
            for worker in unit.workers.values():
                if worker.state is WorkerState.BACKOFF:
                    worker.cancel_timer()
                    worker.state = WorkerState.STOPPED  # BACKOFF -> STOPPED
        self._layers = [list(layer) for layer in supervisor.layers]
        self.proceed()

    def proceed(self) -> None:
        """Stop the next layer once the one after it is down; then sweep; then exit."""
        supervisor = self._supervisor
        while self._layers:
            layer = self._layers[-1]
            units = [supervisor.units[name] for name in layer if name in supervisor.units]
            alive = [w for unit in units for w in unit.alive_workers()]
            if alive:
                for worker in alive:
                    if worker.state is not WorkerState.STOPPING:
                        supervisor.stop_worker(worker, self._deadline_for(worker.unit))
                return
            self._layers.pop()
        if any(unit.alive_workers() for unit in supervisor.retiring):
            return  # removed by a reload, still stopping with their own grace
        self._sweep()

    def _deadline_for(self, unit: Unit) -> float | None:
        """The unit's own grace, but never past the shutdown's deadline."""
        deadline = self._supervisor.stop_deadline(unit)
        if self.deadline is not None:
            deadline = min(deadline or self.deadline, self.deadline)
        return deadline

    def _sweep(self) -> None:
        """Every service is down: stop whatever descendants remain, then finish."""
        loop = self._supervisor.loop
        if not reaper.has_children():
            self._finish()
            return
        if self._sweep_started:
            return  # their deaths reach the reaper, which calls proceed() again
        self._sweep_started = True
        self._supervisor.log.info("stopping leftover processes", event="sweep")
        signal_leftovers(signals.SIGTERM)
        if self.deadline is not None:
            loop.call_at(max(self.deadline, time.monotonic()), self._sweep_kill)

    def _sweep_kill(self) -> None:
        if reaper.has_children():
            self._supervisor.log.warning("sending SIGKILL to leftover processes", event="killed")
            self.killed.append("leftover processes")
            signal_leftovers(signals.SIGKILL)
        self._supervisor.loop.call_later(KILL_SETTLE_SECONDS, self._finish)

    def _on_backstop(self) -> None:
        """Past the deadline and the settle time: end the shutdown now."""
        loop = self._supervisor.loop
        if loop.stopped:
            return
        self._supervisor.log.error(
            "shutdown did not finish by its deadline; killing what is left and exiting",
            event="abandoned",
        )
        self.kill_everything()
        self.killed.append("everything left (backstop)")
        self._finish()

    def _report_waiting(self) -> None:
        """One line, a moment into the grace: who is still running, when SIGKILL comes."""
        supervisor = self._supervisor
        if supervisor.loop.stopped:
            return
        units = [*supervisor.units.values(), *supervisor.retiring]
        running = [w for u in units for w in u.all_workers() if w.state in ALIVE and w.pid]
        if not running:
            return
        now = time.monotonic()

        def describe(worker: Worker) -> str:
            if worker.state is not WorkerState.STOPPING:
                return f"{worker.label} (pid {worker.pid}, stopped after what needs it)"
            if worker.timer is None:
                return f"{worker.label} (pid {worker.pid}, no SIGKILL: grace 0)"
            return f"{worker.label} (pid {worker.pid}, SIGKILL in {worker.timer.when - now:.1f} s)"

        names = ", ".join(describe(w) for w in running[:10])
        more = f" and {len(running) - 10} more" if len(running) > 10 else ""
        supervisor.log.info(
            f"waiting for {len(running)} worker(s) to stop: {names}{more}", event="stop_wait"
        )

    def _finish(self) -> None:
        """The summary line, then the loop ends and pyinit exits."""
        supervisor = self._supervisor
        if supervisor.loop.stopped:
            return
        took = time.monotonic() - self._began
        killed = f"SIGKILL needed for {', '.join(self.killed)}" if self.killed else "none killed"
        supervisor.log.info(
            f"stopped {self._workers} worker(s) in {took:.2f} s; {killed};"
            f" exit status {supervisor.exit_code}",
            event="stopped",
            exit_code=supervisor.exit_code,
        )
        supervisor.loop.stop()

    def kill_everything(self) -> None:
        """A second stop signal, or the backstop: SIGKILL to all, now."""
        for worker in list(self._supervisor.by_pid.values()):
            signals.send(worker.pid, signals.SIGKILL, group=True)
        signal_leftovers(signals.SIGKILL)


def signal_leftovers(signum: int) -> None:
    """Every descendant (reaper.signal_descendants); without /proc and not
    PID 1 nothing can be found, and the deadline ends the wait instead."""
    try:
        reaper.signal_descendants(signum)
    except reaper.ProcUnreadable:
        pass
