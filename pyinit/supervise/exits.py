"""Deaths: what the reaper hands back, and the one place an exit is interpreted.

supervisord's `finish()`, in its own module: every child pyinit collects
comes through `reap()` (SIGCHLD, or a shutdown step), and is either an exec
readiness check (its probe hears the status), a worker (`on_exit` decides
what its death means) or an orphan (reaped quietly, at debug level).

`on_exit` only records the new actual state; reconcile() then decides what
runs next. A worker pyinit stopped becomes STOPPED and starts again only if
its unit still wants it (a restart, a changed definition); a death on its
own goes through the restart policy (`unit.decide`): restart now, restart
after a backoff timer, done (a oneshot), or failed (and, when the unit is
critical, the end of pyinit). The main COMMAND's exit ends pyinit with its
status.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pyinit.core import reaper, signals
from pyinit.supervise.output import close_relays
from pyinit.supervise.unit import Decision, WorkerState

if TYPE_CHECKING:
    from pyinit.core.model import ExitStatus
    from pyinit.supervise.supervisor import Supervisor
    from pyinit.supervise.unit import Worker


def reap(supervisor: Supervisor) -> None:
    """Collect every child that exited, then take the next step once."""
    for pid, status in reaper.reap():
        checked = supervisor.readiness.checks.pop(pid, None)
        if checked is not None:
            if checked.probe is not None:
                checked.probe.child_exited(pid, status)  # type: ignore[attr-defined]
            continue
        worker = supervisor.by_pid.pop(pid, None)
        if worker is None:
            supervisor.counters.orphans_reaped += 1
            if supervisor.log.enabled("debug"):
                supervisor.log.debug(f"reaped orphan pid {pid} ({status.describe()})", pid=pid)
            continue
        if worker.process is not None:
            worker.process.returncode = status.shell_code  # type: ignore[attr-defined]
        try:
            close_relays(worker)
            on_exit(supervisor, worker, status)
        except Exception:
            supervisor.log.exception(
                f"{worker.label}: error handling its exit", service=worker.unit.name
            )
    supervisor.proceed()


def on_exit(supervisor: Supervisor, worker: Worker, status: ExitStatus) -> None:
    """The one place a worker's death is interpreted (supervisord's finish())."""
    unit = worker.unit
    pid = worker.pid
    worker.record_exit(status)
    worker.pid = 0
    worker.process = None
    was = worker.state
    worker.cancel_timer()
    worker.stop_watching()
    supervisor.log.info(
        f"{worker.label}: {status.describe()}",
        service=unit.name,
        worker=worker.worker_id,
        pid=pid,
        event="exited",
        exit_code=status.code,
        signal=signals.signal_name(status.signal) if status.signal else None,
    )
    supervisor.run_hooks("dead_worker", unit.name, worker.worker_id, status.shell_code)
    failing, worker.failing = worker.failing, False
    clean_restart, worker.restart_on_clean_exit = worker.restart_on_clean_exit, False
    if supervisor.rollouts.on_exit(worker, status):
        return  # a new worker of a rollout, or an old one it replaced (rollout.py)
    if unit.main:
        worker.state = WorkerState.EXITED
        code = status.shell_code
        supervisor.shutdown(0 if code in supervisor.options.remap_exit else code)
        return
    if (was is WorkerState.STOPPING and not failing) or supervisor.shutting_down:
        worker.state = WorkerState.STOPPED  # STOPPING -> STOPPED
        return
    if clean_restart and status.shell_code == 0:
        worker.state = WorkerState.STOPPED  # a reload asked it to exit: start afresh
        return
    _apply_policy(supervisor, worker, status)


def on_spawn_failed(supervisor: Supervisor, worker: Worker, status: ExitStatus) -> None:
    """A start that failed (command not found, out of fds) counts as a death."""
    worker.timer = None
    if worker.state is not WorkerState.BACKOFF:
        return
    worker.record_exit(status)
    if worker.unit.main:
        worker.state = WorkerState.EXITED
        supervisor.shutdown(status.shell_code)
        return
    if supervisor.rollouts.on_exit(worker, status):
        return
    if supervisor.shutting_down:
        worker.state = WorkerState.STOPPED
        return
    _apply_policy(supervisor, worker, status)
    supervisor.reconcile()


def _apply_policy(supervisor: Supervisor, worker: Worker, status: ExitStatus) -> None:
    """After a death on its own: restart now (STOPPED), later (BACKOFF), or not."""
    unit = worker.unit
    decision, delay = unit.decide(worker, status, time.monotonic())
    if decision is Decision.RESTART:
        worker.restarts += 1
        if delay <= 0:
            worker.state = WorkerState.STOPPED  # reconcile starts it again now
            return
        worker.state = WorkerState.BACKOFF
        supervisor.log.info(
            f"{worker.label}: restarting in {delay:g} s",
            service=unit.name,
            worker=worker.worker_id,
            event="restarting",
            delay=delay,
        )
        worker.timer = supervisor.loop.call_later(delay, lambda: _backoff_over(supervisor, worker))
    elif decision is Decision.DONE:
        worker.state = WorkerState.EXITED  # a oneshot that exited 0 may unblock others
    else:
        worker.state = WorkerState.FAILED
        supervisor.log.error(
            f"{unit.name}: failed ({status.describe()}); not restarting",
            service=unit.name,
            worker=worker.worker_id,
            event="failed",
            exit_code=status.shell_code,
        )
        if unit.spec.critical and supervisor.units.get(unit.name) is unit:
            supervisor.log.error(f"{unit.name} is critical: shutting down", service=unit.name)
            supervisor.shutdown(status.shell_code)


def _backoff_over(supervisor: Supervisor, worker: Worker) -> None:
    worker.timer = None
    if worker.state is WorkerState.BACKOFF:
        worker.state = WorkerState.STOPPED
        supervisor.reconcile()
