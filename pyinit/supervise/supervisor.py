"""Services mode: start, watch, restart and stop many services.

With starter.py and exits.py, the I/O half of the policy in `unit.py`: it
spawns workers, reads their deaths from the reaper, arms timers on the
loop, and sends signals. Every event reaches it from the loop, through
these doors:

    on_signals(bytes)   signals read from the wakeup pipe (SIGCHLD -> reap,
                        TERM/INT/QUIT -> shutdown, HUP -> reload)
    timer callbacks     backoff over, kill deadline, periodic run due,
                        ready_timeout, watchdog
    readiness           READY=1 on pyinit's own NOTIFY_SOCKET, tcp/file/exec
                        probes, watchdogs (readiness.py)
    verbs.Controls      `pyinit ctl` and the health port (endpoints.py)

This module keeps the state and the one decision loop; the jobs around it
live beside it, each in its module: starting a worker (starter.py), what a
death means (exits.py), periodic runs (periodic.py), readiness
(readiness.py), reload (reconfigure.py), the stop sequence (shutdown.py),
the ctl verbs (verbs.py), the sockets (endpoints.py) and the replacement
of workers a reload or restart made stale, rolling or not (rollout.py).

Design: desired state and one reconcile step
---------------------------------------------
The configuration is the desired state: each `Unit` says which worker ids
should exist (`workers`), which definition they run (`generation`), and
whether the service may run at all (`enabled`, its `after` met). Workers
are the actual state. Every event handler only records what happened (a
worker exited, a reload replaced a spec, `ctl stop` disabled a unit) and
then calls `reconcile()`, the one place that starts and stops workers to
move the actual state towards the desired one. It walks snapshots, never
the sets it changes, and re-runs itself when a start makes something ready
at once. Services removed by a reload go to `retiring` and are stopped
there; nothing they do can start them again. (Kubernetes controllers,
s6-rc and systemd's job engine work this way, for the same reason: five
event handlers that each patch the running set drift apart.)

Order: services start in layers (`after`); a layer starts when what it
names is satisfied (ready, or a oneshot that exited 0). COMMAND, when
given, starts once every service has been started and its exit ends
pyinit. Shutdown walks the layers backwards, each worker getting its stop
signal and SIGKILL at its grace, all within the largest grace; then every
descendant left (orphans included) is stopped the same way, so nothing
outlives pyinit. A backstop timer past that deadline ends the shutdown
even if a bug left it waiting.

Spawning (starter.py) uses subprocess.Popen (user, group, cwd need it),
but the Popen objects are never waited on: once anything calls
waitpid(-1), Popen's own wait()/poll() report wrong statuses, and a Popen
dropped while its child runs would reap it behind the reaper's back. So
each is kept until the reaper (exits.py) hands back its status, which is
then written into it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING

from pyinit.config.model import ServiceSpec, start_order
from pyinit.core import signals
from pyinit.core.model import KILL_SETTLE_SECONDS
from pyinit.core.notify import Upstream
from pyinit.supervise import exits, reconfigure
from pyinit.supervise.counters import Counters
from pyinit.supervise.endpoints import close_endpoints, open_endpoints
from pyinit.supervise.listen import ListenError, Listeners
from pyinit.supervise.periodic import cancel_schedule, schedule_next_run
from pyinit.supervise.process import child_environment
from pyinit.supervise.readiness import ReadinessWatch
from pyinit.supervise.rollout import Rollouts
from pyinit.supervise.shutdown import Shutdown
from pyinit.supervise.starter import start_worker
from pyinit.supervise.unit import Unit, Worker, WorkerState

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.config.model import Config
    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop
    from pyinit.core.model import Options
    from pyinit.supervise.notify_socket import Downstream


class Supervisor:
    """All units, the main command, and the shutdown sequence."""

    def __init__(self, config: Config, options: Options, loop: Loop, log: Log) -> None:
        self.options = options
        self.loop = loop
        self.log = log
        # Flag or variable, then the file's [pyinit] table, then the default.
        self.grace = options.grace
        if "grace" not in options.explicit and config.settings.grace is not None:
            self.grace = config.settings.grace
        self.units = {name: Unit(spec) for name, spec in config.services.items()}
        self.layers = [list(layer) for layer in start_order(config)]
        if options.command:
            name = "main" if "main" not in self.units else "main.command"
            self.units[name] = Unit(
                ServiceSpec(name=name, command=tuple(options.command)), main=True
            )
            self.layers.append([name])
        # Units removed by a reload whose workers are still stopping.
        self.retiring: list[Unit] = []
        self.by_pid: dict[int, Worker] = {}
        self.base_env = child_environment(os.environ)
        self.exit_code: int | None = None
        self.shutting_down = False
        self._shutdown: Shutdown | None = None  # once shutting_down
        self._reconciling = False  # reconcile() is running
        self._reconcile_again = False  # ... and something asked for another pass
        # ServiceManager's callbacks by kind: terminate, reload, new_worker, dead_worker.
        self.hooks: dict[str, list[Callable[..., object]]] = {}
        self.config = config
        # sd_notify towards whoever started pyinit (systemd, podman), if anyone.
        self.upstream: Upstream | None = None
        if os.environ.get("NOTIFY_SOCKET"):
            self.upstream = Upstream.from_environ(os.environ)
        self.readiness = ReadinessWatch(self)
        self.rollouts = Rollouts(self)  # rolling replacements (issue 9)
        self.downstream: Downstream | None = None  # pyinit's own notify socket
        self.servers: list[object] = []  # control socket, health port: closed at exit
        self.counters = Counters()  # what /metrics shows that no unit remembers
        self.listeners = Listeners()  # the services' own sockets (`listen`), held by pyinit

    def open_sockets(self) -> str | None:
        """Bind every `listen` address, before anything starts; the error line, or None.

        A bind error is a configuration error (exit 2, nothing started): the
        caller prints it. Done once: a reload opens only what it adds.
        """
        try:
            self.listeners.open(self.config)
        except ListenError as error:
            return str(error)
        self.servers.append(self.listeners)
        return None

    def start(self) -> None:
        """Open the sockets, then start every unit whose `after` is met."""
        open_endpoints(self)
        self.reconcile()

    def close(self) -> None:
        """At exit: remove the sockets pyinit created."""
        close_endpoints(self)

    # -- the reconcile step ------------------------------------------------------

    def reconcile(self) -> None:
        """Start and stop workers until what runs is what the units want.

        Called after every event. Re-entrant calls (a worker that is ready at
        once, from inside a start) only ask for one more pass, so no recursion
        grows with the number of services. Each pass walks the units in start
        order over snapshots; an exception in one unit is logged and the
        others are still reconciled: PID 1 must not stall on one bad service.
        """
        if self._reconciling:
            self._reconcile_again = True
            return
        self._reconciling = True
        try:
            passes = 0
            while True:
                self._reconcile_again = False
                self._reconcile_pass()
                passes += 1
                # Each extra pass is caused by a start that made a unit ready;
                # there are at most as many as units, but never loop forever.
                if not self._reconcile_again or passes > len(self.units) + 1:
                    break
        finally:
            self._reconciling = False
        self.readiness.report()

    def _reconcile_pass(self) -> None:
        for unit in list(self.retiring):
            self._guard(unit, self._retire)
        if self.shutting_down:
            return
        for name in [name for layer in self.layers for name in layer]:
            current = self.units.get(name)
            if current is not None:
                self._guard(current, self._reconcile_unit)

    def _guard(self, unit: Unit, step: Callable[[Unit], None]) -> None:
        try:
            step(unit)
        except Exception:
            self.log.exception(f"{unit.name}: internal error; other services carry on")

    def _retire(self, unit: Unit) -> None:
        """A unit a reload removed: stop what still runs, then forget it."""
        cancel_schedule(unit)
        self.rollouts.cancel(unit)
        for worker in list(unit.workers.values()):
            self._remove_worker(worker)
        if not unit.workers and not unit.draining:
            self.retiring.remove(unit)

    def _remove_worker(self, worker: Worker) -> None:
        """Stop a worker that is no longer wanted; forget it once it is gone."""
        if worker.state in (WorkerState.STARTING, WorkerState.RUNNING):
            self.stop_worker(worker, self.stop_deadline(worker.unit))
        elif worker.state is not WorkerState.STOPPING:
            worker.cancel_timer()
            worker.stop_watching()
            del worker.unit.workers[worker.worker_id]

    def _reconcile_unit(self, unit: Unit) -> None:
        spec = unit.spec
        for worker_id, worker in list(unit.workers.items()):
            if worker_id >= spec.workers:
                self._remove_worker(worker)  # scaled down: highest ids go
        for worker_id in range(spec.workers):
            if worker_id not in unit.workers:
                unit.workers[worker_id] = Worker(unit, worker_id)
        if not unit.enabled:  # `pyinit ctl stop`
            self._hold_stopped(unit)
            return
        if not unit.started:
            if not self._deps_met(unit):
                return
            unit.started = True
        if not self.rollouts.replace_stale(unit):
            return  # its new definition waits for its `after` (rollout.py)
        if spec.schedule is not None:
            if unit.scheduled_generation != unit.generation:
                cancel_schedule(unit)
                first = unit.scheduled_generation < 0
                if schedule_next_run(self, unit, first=first):
                    unit.scheduled_generation = unit.generation
            return
        for worker in list(unit.workers.values()):
            if worker.state is WorkerState.STOPPED and worker.worker_id < spec.workers:
                start_worker(self, worker)

    def _hold_stopped(self, unit: Unit) -> None:
        """A disabled unit: nothing runs, nothing is due."""
        cancel_schedule(unit)
        self.rollouts.cancel(unit)
        unit.scheduled_generation = -1
        for worker in unit.workers.values():
            if worker.state in (WorkerState.STARTING, WorkerState.RUNNING):
                self.stop_worker(worker, self.stop_deadline(unit))
            elif worker.state is WorkerState.BACKOFF:
                worker.cancel_timer()
                worker.state = WorkerState.STOPPED  # BACKOFF -> STOPPED

    def _deps_met(self, unit: Unit) -> bool:
        if unit.main:
            return all(u.started for u in self.units.values() if not u.main)
        for name in unit.spec.after:
            dependency = self.units.get(name)
            if dependency is None or not dependency.is_satisfied():
                return False
        return True

    def proceed(self) -> None:
        """After a state change outside reconcile (an exit, an abandoned worker):
        the shutdown's next step, or one more reconcile."""
        if self._shutdown is not None:
            self._shutdown.proceed()
        else:
            self.reconcile()

    def is_ready(self) -> bool:
        """Everything ready: what `pyinit ctl ready` and /readyz report."""
        return not self.shutting_down and all(u.is_satisfied() for u in self.units.values())

    def run_hooks(self, kind: str, *args: object) -> None:
        """ServiceManager's callbacks of one kind; an error in one is logged."""
        for hook in self.hooks.get(kind, ()):
            try:
                hook(*args)
            except Exception:
                self.log.exception(f"error in the {kind} hook {hook!r}")

    def scale(self, name: str, workers: int) -> None:
        """Run `workers` workers of `name`: new ids start, the highest ids stop first."""
        unit = self.units[name]
        unit.spec = dataclasses.replace(unit.spec, workers=workers)
        self.log.info(f"{name}: scaled to {workers} worker(s)", service=name, event="scaled")
        self.reconcile()

    # -- events --------------------------------------------------------------------

    def on_signals(self, received: bytes) -> None:
        """A batch of signal numbers from the wakeup pipe, handled in order."""
        reap_needed = False
        previous = 0
        for signum in received:
            try:
                if signum == signals.SIGCHLD:
                    reap_needed = True
                elif signum in signals.STOP_SIGNALS:
                    self._on_stop_signal(signum)
                elif signum == signals.SIGHUP:
                    if previous != signals.SIGHUP:  # a burst of SIGHUPs is one reload
                        self.reload()
                else:
                    self._forward(signum)
            except Exception:  # one signal's bug must not swallow the rest of the batch
                self.log.exception(f"internal error handling signal {signum}; carrying on")
            previous = signum
        if reap_needed:
            exits.reap(self)

    def _on_stop_signal(self, signum: int) -> None:
        name = signals.signal_name(signum)
        if self.shutting_down:
            self.log.warning(f"{name} again during shutdown: killing everything now")
            assert self._shutdown is not None
            self._shutdown.kill_everything()
            return
        self.log.info(f"received {name}: stopping all services", event="stopping", signal=name)
        try:
            self.run_hooks("terminate")
        finally:
            self.shutdown(0)

    def _forward(self, signum: int) -> None:
        self.counters.forwarded(signals.signal_name(signum))
        for worker in list(self.by_pid.values()):
            signals.send(worker.pid, signum, group=True)

    def reload(self) -> str:
        """SIGHUP (or `pyinit ctl reload`): see reconfigure.py."""
        return reconfigure.reload(self)

    # -- stopping ----------------------------------------------------------------------

    def grace_of(self, unit: Unit) -> float:
        return unit.spec.grace if unit.spec.grace is not None else self.grace

    def stop_deadline(self, unit: Unit) -> float | None:
        """When a worker of `unit` stopped now gets SIGKILL (None: grace 0, never)."""
        grace = self.grace_of(unit)
        return time.monotonic() + grace if grace > 0 else None

    def shutdown(self, exit_code: int) -> None:
        """Stop everything (shutdown.py), then exit with `exit_code`."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.exit_code = exit_code
        if self.upstream is not None:
            self.upstream.stopping()
        self._shutdown = Shutdown(self)
        self._shutdown.begin()

    def stop_worker(self, worker: Worker, deadline: float | None) -> None:
        """RUNNING/STARTING -> STOPPING: stop signal now, SIGKILL at `deadline`."""
        worker.state = WorkerState.STOPPING
        worker.cancel_timer()
        signals.send(worker.pid, worker.unit.spec.stop_signal, group=True)
        if deadline is not None:
            worker.timer = self.loop.call_at(deadline, lambda: self.kill_worker(worker))

    def kill_worker(self, worker: Worker) -> None:
        if worker.state is not WorkerState.STOPPING or not worker.pid:
            return
        self.log.warning(
            f"{worker.label}: still running after its grace; sending SIGKILL",
            service=worker.unit.name,
            worker=worker.worker_id,
            pid=worker.pid,
            event="killed",
            signal="SIGKILL",
        )
        signals.send(worker.pid, signals.SIGKILL, group=True)
        if self._shutdown is not None:
            self._shutdown.killed.append(worker.label)
        worker.timer = self.loop.call_later(KILL_SETTLE_SECONDS, lambda: self._abandon(worker))

    def _abandon(self, worker: Worker) -> None:
        """SIGKILL did not end it (uninterruptible sleep): stop waiting, log it."""
        if worker.state is not WorkerState.STOPPING:
            return
        self.log.error(
            f"{worker.label}: pid {worker.pid} survived SIGKILL for {KILL_SETTLE_SECONDS:g} s;"
            " no longer waiting for it",
            service=worker.unit.name,
            event="abandoned",
        )
        self.by_pid.pop(worker.pid, None)
        worker.pid = 0
        worker.state = WorkerState.STOPPED
        self.proceed()
