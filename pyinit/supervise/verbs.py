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
    from pyinit.supervise.supervisor import Supervisor
    from pyinit.supervise.unit import Unit

_RUNNING = (WorkerState.STARTING, WorkerState.RUNNING)
ALL = "*"  # `restart *`: every service (control.protocol.ALL_SERVICES; no service is "*")


class Controls:
    """The supervisor as `pyinit ctl` sees it (control.Controlled)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def status(self) -> list[dict[str, object]]:
        """One row per worker (removed services still stopping included:
        nothing runs that status does not show)."""
        supervisor = self._supervisor
        now = time.monotonic()
        rows: list[dict[str, object]] = []
        for unit in [*supervisor.units.values(), *supervisor.retiring]:
            rollout = unit.rollout.row() if unit.rollout is not None else None
            roles = {id(w): "new" for w in unit.surge.values()}
            roles.update({id(w): "old" for w in unit.draining})
            for worker in unit.all_workers():
                alive = worker.state in ALIVE
                rows.append(
                    {
                        "service": unit.name,
                        "worker": worker.worker_id,
                        "pid": worker.pid,
                        "state": worker.state.value,
                        "ready": worker.state is WorkerState.RUNNING,
                        "uptime": round(now - worker.started_at, 3) if alive else None,
                        "restarts": worker.restarts,
                        "last_exit": worker.last_exit.describe() if worker.last_exit else None,
                        "status": worker.status_text,
                        "rollout": rollout,
                        "role": roles.get(id(worker)),  # a rollout's new or old worker
                    }
                )
        return rows

    def is_ready(self) -> bool:
        return self._supervisor.is_ready()

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


def _enable(unit: Unit) -> None:
    """Wanted again: past failures, a finished run and a pending backoff are forgotten."""
    unit.enabled = unit.started = True
    unit.restarts.clear()
    for worker in unit.workers.values():
        if worker.state in (WorkerState.FAILED, WorkerState.EXITED, WorkerState.BACKOFF):
            worker.cancel_timer()
            worker.state = WorkerState.STOPPED
