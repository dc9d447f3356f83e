"""Services mode: start, watch, restart and stop many services.

The I/O half of the policy in `unit.py`: it spawns workers, reads their
deaths from the reaper, arms timers on the loop, and sends signals. Every
event reaches it from the loop, through these doors:

    on_signals(bytes)   signals read from the wakeup pipe (SIGCHLD -> reap,
                        TERM/INT/QUIT -> shutdown, HUP -> reload)
    timer callbacks     backoff over, kill deadline, periodic run due,
                        ready_timeout, watchdog
    readiness           READY=1 on pyinit's own NOTIFY_SOCKET, tcp/file/exec
                        probes, watchdogs (readiness_watch.py)
    verbs.Controls      `pyinit ctl` and the health port (control.py)

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

Spawning uses subprocess.Popen (user, group, cwd need it), but the Popen
objects are never waited on: once anything calls waitpid(-1), Popen's own
wait()/poll() report wrong statuses, and a Popen dropped while its child
runs would reap it behind the reaper's back. So each is kept until the
reaper hands back its status, which is then written into it.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime
from typing import TYPE_CHECKING

from pyinit.config.model import OutputMode, ReloadMode, ServiceSpec, start_order
from pyinit.core import reaper, signals
from pyinit.core.model import KILL_SETTLE_SECONDS, ExitStatus
from pyinit.supervise.process import (
    child_environment,
    start_process,
    wants_notify,
    worker_command,
)
from pyinit.supervise.readiness import ReadinessWatch
from pyinit.supervise.shutdown import Shutdown
from pyinit.supervise.unit import ALIVE, Decision, Unit, Worker, WorkerState
from pyinit.supervise.verbs import Controls

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.config.model import Config
    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop
    from pyinit.core.model import Options
    from pyinit.core.notify import Downstream, Upstream


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
            from pyinit.core.notify import Upstream

            self.upstream = Upstream.from_environ(os.environ)
        self.readiness = ReadinessWatch(self)
        self.downstream: Downstream | None = None  # pyinit's own notify socket
        self.servers: list[object] = []  # control socket, health port: closed at exit

    # -- starting ------------------------------------------------------------

    def start(self) -> None:
        """Open the sockets, then start every unit whose `after` is met."""
        if any(wants_notify(u.spec) for u in self.units.values()):
            from pyinit.core.notify import Downstream, default_notify_path

            path = default_notify_path()
            try:
                self.downstream = Downstream(self.loop, path, self.readiness.on_notify, self.log)
                self.servers.append(self.downstream)
            except OSError as error:  # out of fds, say: services with ready=notify never get ready
                self.log.error(f"no notify socket ({error}); READY=1 from services cannot arrive")
        self._start_servers()
        if self.upstream is not None:
            interval = self.upstream.watchdog_interval()
            if interval:
                self._upstream_watchdog(interval)
        self.reconcile()

    def _start_servers(self) -> None:
        """`pyinit ctl` and the health port; a failure here is logged, not fatal."""
        from pyinit.control.protocol import default_socket_path
        from pyinit.control.server import ControlServer, HealthServer

        path = self.options.ctl_socket or default_socket_path(os.environ)
        try:
            self.servers.append(ControlServer(self.loop, path, Controls(self), self.log))
        except OSError as error:
            self.log.warning(f"no control socket at {path} ({error}); pyinit ctl cannot reach us")
        if self.options.health_port is not None:
            address, port = self.options.health_port
            try:
                controls = Controls(self)
                self.servers.append(HealthServer(self.loop, address, port, controls, self.log))
            except OSError as error:
                self.log.error(f"cannot serve health probes on {address}:{port}: {error}")

    def close(self) -> None:
        """At exit: remove the sockets pyinit created."""
        for server in self.servers:
            try:
                server.close()  # type: ignore[attr-defined]
            except OSError:
                pass

    def _upstream_watchdog(self, interval: float) -> None:
        assert self.upstream is not None
        self.upstream.watchdog()
        self.loop.call_later(interval, lambda: self._upstream_watchdog(interval))

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
        if unit.schedule_timer is not None:
            unit.schedule_timer.cancel()
            unit.schedule_timer = None
        for worker in list(unit.workers.values()):
            self._remove_worker(worker)
        if not unit.workers:
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
        for worker in list(unit.workers.values()):
            if worker.generation != unit.generation and worker.state in (
                WorkerState.STARTING,
                WorkerState.RUNNING,
            ):
                self.stop_worker(worker, self.stop_deadline(unit))  # replaced by a reload
        if spec.schedule is not None:
            if unit.scheduled_generation != unit.generation:
                if unit.schedule_timer is not None:
                    unit.schedule_timer.cancel()
                    unit.schedule_timer = None
                first = unit.scheduled_generation < 0
                if self._schedule_next_run(unit, first=first):
                    unit.scheduled_generation = unit.generation
            return
        for worker in list(unit.workers.values()):
            if worker.state is WorkerState.STOPPED and worker.worker_id < spec.workers:
                self._spawn(worker)

    def _hold_stopped(self, unit: Unit) -> None:
        """A disabled unit: nothing runs, nothing is due."""
        if unit.schedule_timer is not None:
            unit.schedule_timer.cancel()
            unit.schedule_timer = None
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

    def _spawn(self, worker: Worker) -> None:
        """Start one worker: STOPPED/BACKOFF/EXITED/FAILED -> STARTING (then
        RUNNING once ready: readiness_watch.py)."""
        spec = worker.unit.spec
        worker.cancel_timer()
        notify_path = self.downstream.path if self.downstream is not None else None
        argv, env = worker_command(spec, worker.worker_id, self.base_env, notify_path, self.options)
        worker.started_at = time.monotonic()
        worker.generation = worker.unit.generation
        worker.failing = worker.restart_on_clean_exit = False
        pipes = None
        try:
            # Inside the try: out of descriptors (EMFILE) is a failed start
            # of this worker, restarted by its policy, never PID 1's death.
            if spec.output is not OutputMode.INHERIT:
                pipes = self._output_pipes(worker)
            process = start_process(spec, argv, env, pipes)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as error:
            self._close_relays(worker)
            code = 127 if isinstance(error, FileNotFoundError) else 126
            if worker.unit.main and isinstance(error, OSError):
                # COMMAND's exec error reads as in single-command mode (SPEC 1).
                reason = error.strerror or str(error)
                shown = argv[0].replace("\r", "\\r").replace("\n", "\\n")  # one line
                self.log.write_line(f"pyinit: {shown}: {reason}")
            self.log.error(
                f"{worker.label}: cannot start {argv[0]!r}: {error}",
                service=spec.name,
                worker=worker.worker_id,
                event="spawn_failed",
                exit_code=code,
            )
            # Judged by the restart policy as a death, from the loop (not from
            # inside this reconcile pass: a policy without backoff would spin).
            worker.state = WorkerState.BACKOFF
            status = ExitStatus(code, None)
            worker.timer = self.loop.call_later(0, lambda: self._on_spawn_failed(worker, status))
            return
        finally:
            if pipes:
                os.close(pipes[0])
                os.close(pipes[1])
        worker.process = process
        worker.pid = process.pid
        self.by_pid[process.pid] = worker
        self._run_hooks("new_worker", spec.name, worker.worker_id)
        worker.state = WorkerState.STARTING
        self.log.info(
            f"{worker.label}: started {spec.runs()} (pid {process.pid})",
            service=spec.name,
            worker=worker.worker_id,
            pid=process.pid,
            event="started",
        )
        self.readiness.watch(worker)

    def is_ready(self) -> bool:
        """Everything ready: what `pyinit ctl ready` and /readyz report."""
        return not self.shutting_down and all(u.is_satisfied() for u in self.units.values())

    def _run_hooks(self, kind: str, *args: object) -> None:
        for hook in self.hooks.get(kind, ()):
            try:
                hook(*args)
            except Exception:
                self.log.exception(f"error in the {kind} hook {hook!r}")

    def scale(self, name: str, workers: int) -> None:
        """Run `workers` workers of `name`: new ids start, the highest ids stop first."""
        import dataclasses

        unit = self.units[name]
        unit.spec = dataclasses.replace(unit.spec, workers=workers)
        self.log.info(f"{name}: scaled to {workers} worker(s)", service=name, event="scaled")
        self.reconcile()

    def _output_pipes(self, worker: Worker) -> tuple[int, int]:
        """Relays for prefix/json output; returns the child's (stdout, stderr) ends."""
        from pyinit.supervise.output import OutputRelay, make_pipe

        ends: list[int] = []
        try:
            for stream in ("stdout", "stderr"):
                read_end, write_end = make_pipe()
                ends.append(write_end)
                worker.relays.append(
                    OutputRelay(
                        self.loop,
                        read_end,
                        service=worker.unit.name,
                        worker=worker.worker_id,
                        stream=stream,
                        mode=worker.unit.spec.output,
                    )
                )
        except OSError:  # out of descriptors: give back what was taken
            for fd in ends:
                os.close(fd)
            raise
        return ends[0], ends[1]

    def _close_relays(self, worker: Worker) -> None:
        for relay in worker.relays:
            relay.close()  # type: ignore[attr-defined]
        worker.relays.clear()

    # -- periodic jobs ------------------------------------------------------------

    def _schedule_next_run(self, unit: Unit, *, first: bool = False) -> bool:
        """Arm the timer of the next run; False if the unit has no worker to run."""
        schedule = unit.spec.schedule
        assert schedule is not None
        if unit.spec.workers < 1:
            return False  # workers = 0: defined, but not run (scaling up schedules it)
        if first and schedule.run_on_start:
            delay = 0.0
        elif schedule.every is not None:
            delay = schedule.every
        else:
            from pyinit.config.model import next_cron_time

            assert schedule.cron is not None
            now = datetime.now().astimezone()
            due = next_cron_time(schedule.cron, now)
            if due is None:
                self.log.warning(f"{unit.name}: cron {schedule.cron!r} never matches again")
                return True
            delay = max(0.0, (due - now).total_seconds())
        unit.schedule_timer = self.loop.call_later(delay, lambda: self._run_periodic(unit))
        return True

    def _run_periodic(self, unit: Unit) -> None:
        unit.schedule_timer = None
        if self.shutting_down or not unit.enabled or self.units.get(unit.name) is not unit:
            return
        worker = unit.workers.get(0)
        if worker is None:
            return
        if worker.state in ALIVE:
            self.log.info(
                f"{unit.name}: previous run still going; this run is skipped",
                service=unit.name,
                event="skipped",
            )
        else:
            worker.cancel_timer()
            self._spawn(worker)
        self._schedule_next_run(unit)

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
            self._reap()

    def _on_stop_signal(self, signum: int) -> None:
        name = signals.signal_name(signum)
        if self.shutting_down:
            self.log.warning(f"{name} again during shutdown: killing everything now")
            assert self._shutdown is not None
            self._shutdown.kill_everything()
            return
        self.log.info(f"received {name}: stopping all services", event="stopping", signal=name)
        try:
            self._run_hooks("terminate")
        finally:
            self.shutdown(0)

    def _forward(self, signum: int) -> None:
        for worker in list(self.by_pid.values()):
            signals.send(worker.pid, signum, group=True)

    def reload(self) -> str:
        """SIGHUP (or `pyinit ctl reload`): re-read the file if there is one and
        apply the difference; unchanged services get their reload mode."""
        if self.shutting_down:
            return "shutting down: nothing reloaded"
        if self.upstream is not None:
            self.upstream.reloading()
        self.readiness.reloading()
        try:
            if self.config.path is None:
                self.log.info("reloading services", event="reload")
                self.reload_units(list(self.units.values()))
                return "reloaded"
            from pyinit.supervise.reconfigure import apply_new_config

            return apply_new_config(self)
        finally:
            self._run_hooks("reload")
            self.reconcile()

    def reload_units(self, units: list[Unit]) -> None:
        """Each unit's reload mode: its reload_signal, a restart, or nothing."""
        for unit in units:
            mode = unit.spec.reload
            if unit.main or mode is ReloadMode.NONE:
                continue
            for worker in unit.workers.values():
                if worker.state not in (WorkerState.STARTING, WorkerState.RUNNING):
                    continue
                if mode is ReloadMode.RESTART:
                    # Its exit leaves it STOPPED, and reconcile starts it again.
                    self.stop_worker(worker, self.stop_deadline(unit))
                else:
                    # A Service class without reload() exits 0 on SIGHUP and is
                    # started again, same worker id (SPEC 3).
                    worker.restart_on_clean_exit = unit.spec.py_class is not None
                    signals.send(worker.pid, unit.spec.reload_signal, group=True)

    def _reap(self) -> None:
        for pid, status in reaper.reap():
            checked = self.readiness.checks.pop(pid, None)
            if checked is not None:
                if checked.probe is not None:
                    checked.probe.child_exited(pid, status)  # type: ignore[attr-defined]
                continue
            worker = self.by_pid.pop(pid, None)
            if worker is None:
                if self.log.enabled("debug"):
                    self.log.debug(f"reaped orphan pid {pid} ({status.describe()})", pid=pid)
                continue
            if worker.process is not None:
                worker.process.returncode = status.shell_code  # type: ignore[attr-defined]
            try:
                self._close_relays(worker)
                self._on_exit(worker, status)
            except Exception:
                self.log.exception(
                    f"{worker.label}: error handling its exit", service=worker.unit.name
                )
        if self._shutdown is not None:
            self._shutdown.proceed()
        else:
            self.reconcile()

    def _on_exit(self, worker: Worker, status: ExitStatus) -> None:
        """The one place a worker's death is interpreted (supervisord's finish()).

        It only records the new actual state; reconcile() then decides what
        runs next. A worker pyinit stopped becomes STOPPED, and it starts
        again only if its unit still wants it (a restart, a changed
        definition); a death on its own goes through the restart policy.
        """
        unit = worker.unit
        pid = worker.pid
        worker.last_exit = status
        worker.pid = 0
        worker.process = None
        was = worker.state
        worker.cancel_timer()
        worker.stop_watching()
        self.log.info(
            f"{worker.label}: {status.describe()}",
            service=unit.name,
            worker=worker.worker_id,
            pid=pid,
            event="exited",
            exit_code=status.code,
            signal=signals.signal_name(status.signal) if status.signal else None,
        )
        self._run_hooks("dead_worker", unit.name, worker.worker_id, status.shell_code)
        failing, worker.failing = worker.failing, False
        clean_restart, worker.restart_on_clean_exit = worker.restart_on_clean_exit, False
        if unit.main:
            worker.state = WorkerState.EXITED
            code = status.shell_code
            self.shutdown(0 if code in self.options.remap_exit else code)
            return
        if (was is WorkerState.STOPPING and not failing) or self.shutting_down:
            worker.state = WorkerState.STOPPED  # STOPPING -> STOPPED
            return
        if clean_restart and status.shell_code == 0:
            worker.state = WorkerState.STOPPED  # a reload asked it to exit: start afresh
            return
        self._apply_policy(worker, status)

    def _on_spawn_failed(self, worker: Worker, status: ExitStatus) -> None:
        """A start that failed (command not found, out of fds) counts as a death."""
        worker.timer = None
        if worker.state is not WorkerState.BACKOFF:
            return
        worker.last_exit = status
        if worker.unit.main:
            worker.state = WorkerState.EXITED
            self.shutdown(status.shell_code)
            return
        if self.shutting_down:
            worker.state = WorkerState.STOPPED
            return
        self._apply_policy(worker, status)
        self.reconcile()

    def _apply_policy(self, worker: Worker, status: ExitStatus) -> None:
        """After a death on its own: restart now (STOPPED), later (BACKOFF), or not."""
        unit = worker.unit
        decision, delay = unit.decide(worker, status, time.monotonic())
        if decision is Decision.RESTART:
            worker.restarts += 1
            if delay <= 0:
                worker.state = WorkerState.STOPPED  # reconcile starts it again now
                return
            worker.state = WorkerState.BACKOFF
            self.log.info(
                f"{worker.label}: restarting in {delay:g} s",
                service=unit.name,
                worker=worker.worker_id,
                event="restarting",
                delay=delay,
            )
            worker.timer = self.loop.call_later(delay, lambda: self._backoff_over(worker))
        elif decision is Decision.DONE:
            worker.state = WorkerState.EXITED  # a oneshot that exited 0 may unblock others
        else:
            worker.state = WorkerState.FAILED
            self.log.error(
                f"{unit.name}: failed ({status.describe()}); not restarting",
                service=unit.name,
                worker=worker.worker_id,
                event="failed",
                exit_code=status.shell_code,
            )
            if unit.spec.critical and self.units.get(unit.name) is unit:
                self.log.error(f"{unit.name} is critical: shutting down", service=unit.name)
                self.shutdown(status.shell_code)

    def _backoff_over(self, worker: Worker) -> None:
        worker.timer = None
        if worker.state is WorkerState.BACKOFF:
            worker.state = WorkerState.STOPPED
            self.reconcile()

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
        if self._shutdown is not None:
            self._shutdown.proceed()
        else:
            self.reconcile()
