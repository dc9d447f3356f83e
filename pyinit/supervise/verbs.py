"""What `pyinit ctl` and the health port can ask of the services supervisor.

Each verb changes the desired state (a unit enabled or disabled, a failed
worker given another go, a worker stopped so it is started afresh) and
lets the supervisor's reconcile step do the rest, so a verb can never
leave a process running that no unit wants (see supervisor.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pyinit.config.model import Strategy
from pyinit.core import signals
from pyinit.supervise.unit import ALIVE, WorkerState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyinit.supervise.supervisor import Supervisor
    from pyinit.supervise.unit import Unit, Worker

_RUNNING = (WorkerState.STARTING, WorkerState.RUNNING)
ALL = "*"  # `restart *`: every service (control.protocol.ALL_SERVICES; no service is "*")


class Controls:
    """The supervisor as `pyinit ctl` and the health port see it
    (control.listener.Controlled, control.metrics.MetricsSource)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def status(self, names: Sequence[str] = ()) -> list[dict[str, object]]:
        """One row per worker of the units named, or of all; KeyError names the unknown.

        With no names, removed services still stopping are included: nothing
        runs that status does not show.
        """
        supervisor = self._supervisor
        unknown = [name for name in names if name not in supervisor.units]
        if unknown:
            raise KeyError(*unknown)
        if names:
            units = [supervisor.units[name] for name in dict.fromkeys(names)]
        else:
            units = [*supervisor.units.values(), *supervisor.retiring]
        now, wall = time.monotonic(), time.time()
        rows: list[dict[str, object]] = []
        for unit in units:
            retiring = unit in supervisor.retiring
            next_run = None
            if unit.schedule_timer is not None and not unit.schedule_timer.cancelled:
                next_run = round(wall + unit.schedule_timer.when - now, 3)
            rollout = unit.rollout.row() if unit.rollout is not None else None
            roles = {id(w): "new" for w in unit.surge.values()}
            roles.update({id(w): "old" for w in unit.draining})
            for worker in unit.all_workers():
                alive = worker.state in ALIVE
                last = worker.last_exit
                rows.append(
                    {
                        "service": unit.name,
                        "worker": worker.worker_id,
                        "pid": worker.pid,
                        "state": worker.state.value,
                        "ready": worker.state is WorkerState.RUNNING,
                        # A rollout's new worker (not yet serving) and the old one it
                        # replaced (stopping) are not the service's health.
                        "ok": retiring or id(worker) in roles or is_ok(unit, worker),
                        "uptime": round(now - worker.started_at, 3) if alive else None,
                        "restarts": worker.restarts,
                        "starts": worker.starts,
                        "last_exit": last.describe() if last else None,
                        "last_exit_code": last.shell_code if last else None,
                        "last_exit_time": (
                            round(worker.last_exit_at, 3) if worker.last_exit_at else None
                        ),
                        "next_run": next_run,
                        "status": worker.status_text,
                        "rollout": rollout,
                        "role": roles.get(id(worker)),  # a rollout's new or old worker
                    }
                )
        return rows

    def is_ready(self) -> bool:
        return self._supervisor.is_ready()

    def counters(self) -> dict[str, int]:
        """pyinit's own counts for /metrics (counters.py)."""
        counters = self._supervisor.counters
        return {
            "orphans_reaped": counters.orphans_reaped,
            "reloads_ok": counters.reloads_ok,
            "reloads_failed": counters.reloads_failed,
        }

    def forwarded_signals(self) -> dict[str, int]:
        return dict(self._supervisor.counters.signals_forwarded)

    def start(self, name: str) -> str:
        """`ctl start NAME`: run it again, whatever its `after` and past failures say."""
        unit = self._unit(name)
        if self._supervisor.shutting_down:
            return "shutting down: not starting anything"
        before = len(unit.alive_workers())
        _enable(unit)
        self._supervisor.reconcile()
        started = max(0, len(unit.alive_workers()) - before)
        return f"{name}: started {started} worker(s)"

    def stop(self, name: str) -> str:
        """`ctl stop NAME`: stop it gracefully; it stays stopped until `ctl start`."""
        unit = self._unit(name)
        unit.enabled = False
        stopping = sum(1 for w in unit.workers.values() if w.state in _RUNNING)
        self._supervisor.reconcile()
        return f"{name}: stopping {stopping} worker(s)"

    def restart(self, name: str) -> str:
        """`ctl restart NAME` (`*`: every service): each worker replaced, same
        ids; rolling services one at a time, new workers ready first."""
        supervisor = self._supervisor
        units = [u for u in supervisor.units.values() if not u.main] if name == ALL else []
        units = units or [self._unit(name)]
        if supervisor.shutting_down:
            return "shutting down: not restarting anything"
        number = supervisor.rollouts.next_number()
        for unit in units:
            _enable(unit)
            if unit.spec.strategy is Strategy.ROLLING:
                unit.renew()  # every worker is now stale: reconcile rolls them
                supervisor.rollouts.begin(unit, "restart")
                continue
            for worker in list(unit.workers.values()):
                if worker.state in _RUNNING:
                    # STOPPED once it has exited, and then started by reconcile.
                    supervisor.stop_worker(worker, supervisor.stop_deadline(unit))
        supervisor.reconcile()
        rolling = supervisor.rollouts.pending(number)
        names = ", ".join(u.name for u in units) if name == ALL else name
        if rolling:  # `pyinit ctl restart` follows it by this number (control/follow.py)
            return f"{names}: restarting; replacing {', '.join(rolling)} (rollout {number})"
        return f"{names}: restarting"

    def send_signal(self, name: str, signum: int) -> str:
        """`ctl signal NAME SIG`: to the process group of each of its workers."""
        workers = self._unit(name).alive_workers()
        for worker in workers:
            signals.send(worker.pid, signum, group=True)
        return f"{name}: {signals.signal_name(signum)} sent to {len(workers)} worker(s)"

    def reload(self) -> str:
        return self._supervisor.reload()

    def _unit(self, name: str) -> Unit:
        """KeyError (reported as "no such service") for a name not configured."""
        return self._supervisor.units[name]


def is_ok(unit: Unit, worker: Worker) -> bool:
    """Is this worker where its unit wants it? `pyinit ctl status` exits 3 if not.

    Not ok: failed, backing off, stopped by `ctl stop`, or not (yet) running
    and ready. A oneshot is ok once it exited 0, and a periodic job between
    runs once it is scheduled (as for `after`: Unit.is_satisfied).
    """
    state = worker.state
    if state in (WorkerState.FAILED, WorkerState.BACKOFF) or not unit.enabled:
        return False
    if unit.spec.schedule is not None:
        return unit.started
    if unit.spec.oneshot:
        last = worker.last_exit
        return state is WorkerState.EXITED and last is not None and last.shell_code == 0
    return state is WorkerState.RUNNING


def _enable(unit: Unit) -> None:
    """Wanted again: past failures, a finished run and a pending backoff are forgotten."""
    unit.enabled = unit.started = True
    unit.restarts.clear()
    for worker in unit.workers.values():
        if worker.state in (WorkerState.FAILED, WorkerState.EXITED, WorkerState.BACKOFF):
            worker.cancel_timer()
            worker.state = WorkerState.STOPPED
