"""Services mode: start, watch, restart and stop many services.

The I/O half of the policy in `unit.py`: it spawns workers, reads their
deaths from the reaper, arms timers on the loop, and sends signals. Every
event reaches it from the loop, through these doors:

    on_signals(bytes)   signals read from the wakeup pipe (SIGCHLD -> reap,
                        TERM/INT/QUIT -> shutdown, HUP -> reload)
    timer callbacks     backoff over, kill deadline, periodic run due,
                        ready_timeout, watchdog
    _on_notify          a datagram on pyinit's own NOTIFY_SOCKET (notify.py)
    probes              tcp/file/exec readiness checks (readiness.py)
    _Controls           `pyinit ctl` and the health port (control.py)

Order: services start in layers (`after`); a layer starts when what it
names is satisfied (ready, or a oneshot that exited 0). COMMAND, when
given, starts once every service has been started and its exit ends
pyinit. Shutdown walks the layers backwards, each worker getting its stop
signal and SIGKILL at its grace, all within the largest grace; then every
descendant left (orphans included) is stopped the same way, so nothing
outlives pyinit.

Spawning uses subprocess.Popen (user, group, cwd need it), but the Popen
objects are never waited on: once anything calls waitpid(-1), Popen's own
wait()/poll() report wrong statuses, and a Popen dropped while its child
runs would reap it behind the reaper's back. So each is kept until the
reaper hands back its status, which is then written into it.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time
from datetime import datetime
from typing import TYPE_CHECKING

from pyinit import reaper, signals
from pyinit.model import KILL_SETTLE_SECONDS, ExitStatus
from pyinit.services_model import OutputMode, ReadinessKind, ReloadMode, ServiceSpec, start_order
from pyinit.unit import ALIVE, Decision, Unit, Worker, WorkerState

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.logs import Log
    from pyinit.loop import Loop
    from pyinit.model import Options
    from pyinit.notify import Downstream, Upstream
    from pyinit.services_model import Config

#: Variables of pyinit's own environment that children must not see.
PRIVATE_VARIABLES = (
    "NOTIFY_SOCKET",  # upstream's: a service may get pyinit's own instead
    "WATCHDOG_USEC",  # likewise: a service with `watchdog` gets its own
    "WATCHDOG_PID",
    "PYINIT_SERVICES",
    "PYINIT_CONFIG",
)


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
        self.by_pid: dict[int, Worker] = {}
        self.checks: dict[int, Worker] = {}  # exec readiness checks running, by pid
        self.base_env = {k: v for k, v in os.environ.items() if k not in PRIVATE_VARIABLES}
        self.exit_code: int | None = None
        self.shutting_down = False
        self._stop_layers: list[list[str]] = []
        self._deadline: float | None = None
        self._sweep_timer: object = None
        # ServiceManager's callbacks by kind: terminate, reload, new_worker, dead_worker.
        self.hooks: dict[str, list[Callable[..., object]]] = {}
        self.config = config
        # sd_notify towards whoever started pyinit (systemd, podman), if anyone.
        self.upstream: Upstream | None = None
        if os.environ.get("NOTIFY_SOCKET"):
            from pyinit.notify import Upstream

            self.upstream = Upstream.from_environ(os.environ)
        self.downstream: Downstream | None = None  # pyinit's own notify socket
        self.servers: list[object] = []  # control socket, health port: closed at exit
        self._ready_sent = False
        self._status_text = ""
        self._starting_units = False  # start_due_units() is running

    # -- starting ------------------------------------------------------------

    def start(self) -> None:
        """Open the sockets, then start every unit whose `after` is met."""
        if any(_wants_notify(u.spec) for u in self.units.values()):
            from pyinit.notify import Downstream, default_notify_path

            path = default_notify_path()
            self.downstream = Downstream(self.loop, path, self._on_notify, self.log)
            self.servers.append(self.downstream)
        self._start_servers()
        if self.upstream is not None:
            interval = self.upstream.watchdog_interval()
            if interval:
                self._upstream_watchdog(interval)
        self.start_due_units()
        self._readiness_changed()

    def _start_servers(self) -> None:
        """`pyinit ctl` and the health port; a failure here is logged, not fatal."""
        from pyinit.control import ControlServer, HealthServer
        from pyinit.ctl_protocol import default_socket_path

        path = self.options.ctl_socket or default_socket_path(os.environ)
        try:
            self.servers.append(ControlServer(self.loop, path, _Controls(self), self.log))
        except OSError as error:
            self.log.warning(f"no control socket at {path} ({error}); pyinit ctl cannot reach us")
        if self.options.health_port is not None:
            address, port = self.options.health_port
            try:
                controls = _Controls(self)
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

    def start_due_units(self) -> None:
        """Start units whose `after` is met, until a pass starts nothing new.

        Called after anything that can satisfy a dependency: a worker became
        ready or a oneshot exited 0. A worker that is ready at once calls back
        in here from inside the pass; the pass already goes round again after
        starting anything, so that nested call returns at once (no recursion
        as deep as the number of services).
        """
        if self._starting_units:
            return
        self._starting_units = True
        try:
            progress = True
            while progress and not self.shutting_down:
                progress = False
                for unit in self.units.values():
                    if unit.started or not self._deps_met(unit):
                        continue
                    unit.started = progress = True
                    if unit.spec.schedule is not None:
                        self._schedule_next_run(unit, first=True)
                    else:
                        for worker in unit.workers.values():
                            self._spawn(worker)
        finally:
            self._starting_units = False

    def _deps_met(self, unit: Unit) -> bool:
        if unit.main:
            return all(u.started for u in self.units.values() if not u.main)
        return all(self.units[name].is_satisfied() for name in unit.spec.after)

    def _spawn(self, worker: Worker) -> None:
        """Start one worker: STOPPED/BACKOFF/EXITED/FAILED -> STARTING (then
        RUNNING once ready: _watch_readiness)."""
        spec = worker.unit.spec
        worker.cancel_timer()
        env = dict(self.base_env)
        env.update(spec.env)
        env["PYINIT_WORKER_ID"] = str(worker.worker_id)
        if self.downstream is not None and _wants_notify(spec):
            env["NOTIFY_SOCKET"] = self.downstream.path
            if spec.watchdog:  # as systemd's WatchdogSec: sd_watchdog_enabled() reads it
                env["WATCHDOG_USEC"] = str(int(spec.watchdog * 1_000_000))
        if spec.py_class is not None:
            from pyinit.worker import command_line

            argv, extra_env = command_line(
                spec.py_class, spec.name, worker.worker_id, spec.args, spec.kwargs
            )
            env.update(extra_env)
        else:
            assert spec.command is not None
            argv = list(spec.command)
        pipes = self._output_pipes(worker) if spec.output is not OutputMode.INHERIT else None
        worker.started_at = time.monotonic()
        user, group, extra_groups = _credentials(spec)
        try:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                stdout=pipes[0] if pipes else None,
                stderr=pipes[1] if pipes else None,
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            self._close_relays(worker)
            code = 127 if isinstance(error, FileNotFoundError) else 126
            if worker.unit.main and isinstance(error, OSError):
                # COMMAND's exec error reads as in single-command mode (SPEC 1).
                reason = error.strerror or str(error)
                os.write(2, f"pyinit: {argv[0]}: {reason}\n".encode("utf-8", "backslashreplace"))
            self.log.error(
                f"{worker.label}: cannot start {argv[0]!r}: {error}",
                service=spec.name,
                worker=worker.worker_id,
                event="spawn_failed",
                exit_code=code,
            )
            worker.state = WorkerState.RUNNING  # so the exit below is read as a death
            self.loop.call_later(0, lambda: self._on_exit(worker, ExitStatus(code, None)))
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
        self._watch_readiness(worker)

    # -- readiness ---------------------------------------------------------------

    def _watch_readiness(self, worker: Worker) -> None:
        """STARTING: ready at once (ready = none), or when a check or READY=1 says so."""
        spec = worker.unit.spec
        kind = spec.ready.kind
        if kind is ReadinessKind.NONE:
            self._mark_ready(worker)
            return
        if spec.ready_timeout > 0:
            worker.ready_timer = self.loop.call_later(
                spec.ready_timeout, lambda: self._not_ready_in_time(worker)
            )
        if kind is not ReadinessKind.NOTIFY:  # notify: READY=1 arrives on the socket
            from pyinit.readiness import Probe

            probe = Probe(
                self.loop,
                spec.ready,
                on_ready=lambda: self._mark_ready(worker),
                spawn_check=lambda argv: self._spawn_check(argv, worker),
                log=self.log,
                label=worker.label,
            )
            worker.probe = probe
            probe.start()

    def _mark_ready(self, worker: Worker) -> None:
        """STARTING -> RUNNING: the worker is up; what waited for it may start."""
        if worker.state is not WorkerState.STARTING:
            return
        worker.state = WorkerState.RUNNING
        worker.stop_watching()
        spec = worker.unit.spec
        if spec.ready.kind is not ReadinessKind.NONE:
            self.log.info(
                f"{worker.label}: ready", service=spec.name, worker=worker.worker_id, event="ready"
            )
        if spec.watchdog:
            self._arm_watchdog(worker)
        self.start_due_units()
        self._readiness_changed()

    def _not_ready_in_time(self, worker: Worker) -> None:
        worker.ready_timer = None
        if worker.state is not WorkerState.STARTING:
            return
        self._fail_worker(
            worker, f"not ready within {worker.unit.spec.ready_timeout:g} s", "ready_timeout"
        )

    def _arm_watchdog(self, worker: Worker) -> None:
        if worker.watchdog_timer is not None:
            worker.watchdog_timer.cancel()
        assert worker.unit.spec.watchdog is not None
        worker.watchdog_timer = self.loop.call_later(
            worker.unit.spec.watchdog, lambda: self._watchdog_expired(worker)
        )

    def _watchdog_expired(self, worker: Worker) -> None:
        worker.watchdog_timer = None
        if worker.state is not WorkerState.RUNNING:
            return
        self._fail_worker(worker, f"no WATCHDOG=1 for {worker.unit.spec.watchdog:g} s", "watchdog")

    def _fail_worker(self, worker: Worker, why: str, event: str) -> None:
        """Stop a live worker as a failure: its exit goes through the restart policy."""
        self.log.error(
            f"{worker.label}: {why}; restarting it",
            service=worker.unit.name,
            worker=worker.worker_id,
            event=event,
        )
        worker.after_exit = "policy"
        self.stop_worker(worker, time.monotonic() + self.grace_of(worker.unit))

    def _spawn_check(self, argv: list[str], worker: Worker) -> int:
        """Start an exec readiness check; its exit reaches the probe through _reap."""
        from pyinit.spawn import SpawnError, spawn

        try:
            pid = spawn(argv, new_session=True)
        except SpawnError as error:
            self.log.warning(f"{worker.label}: readiness check cannot start: {error}")
            return 0
        self.checks[pid] = worker
        return pid

    def _on_notify(self, sender_pid: int, fields: dict[str, str]) -> None:
        """A datagram on pyinit's notify socket; the kernel says who sent it."""
        from pyinit.notify import resolve_sender

        worker = resolve_sender(sender_pid, self.by_pid)
        if worker is None:
            self.log.debug(f"notify message from pid {sender_pid}, not a service: ignored")
            return
        if fields.get("READY") == "1":
            self._mark_ready(worker)
        if fields.get("WATCHDOG") == "1" and worker.watchdog_timer is not None:
            self._arm_watchdog(worker)
        if "STATUS" in fields:
            worker.status_text = fields["STATUS"]
        extend = fields.get("EXTEND_TIMEOUT_USEC", "")
        if extend.isdigit() and worker.state is WorkerState.STOPPING:
            # A Service's graceful_shutdown_timeout: move the SIGKILL deadline.
            worker.cancel_timer()
            if int(extend) < 2**64 - 1:
                seconds = int(extend) / 1e6
                worker.timer = self.loop.call_later(seconds, lambda: self._kill_worker(worker))

    def _readiness_changed(self) -> None:
        """Tell upstream: STATUS=N/M services ready, and READY=1 once all are."""
        if self.shutting_down:
            return
        units = list(self.units.values())
        ready = sum(1 for unit in units if unit.is_satisfied())
        text = f"{ready}/{len(units)} services ready"
        if self.upstream is not None:
            if text != self._status_text:
                self.upstream.status(text)
            if ready == len(units) and not self._ready_sent:
                self.upstream.ready()
        if ready == len(units) and not self._ready_sent:
            self._ready_sent = True
            self.log.info("all services ready", event="ready")
        self._status_text = text

    # -- what `pyinit ctl` asks for (control.Controlled) ----------------------------

    def status(self) -> list[dict[str, object]]:
        """One row per worker, for `pyinit ctl status`."""
        now = time.monotonic()
        rows: list[dict[str, object]] = []
        for unit in self.units.values():
            for worker in unit.workers.values():
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
                    }
                )
        return rows

    def _unit(self, name: str) -> Unit:
        if name not in self.units:
            raise KeyError(name)
        return self.units[name]

    def start_service(self, name: str) -> str:
        """`ctl start NAME`: start its workers that are not running."""
        unit = self._unit(name)
        if self.shutting_down:
            return "shutting down: not starting anything"
        unit.started = True
        unit.restarts.clear()
        started = 0
        for worker in unit.workers.values():
            if worker.state not in ALIVE:
                worker.cancel_timer()
                self._spawn(worker)
                started += 1
        if unit.spec.schedule is not None and unit.schedule_timer is None:
            self._schedule_next_run(unit)
        return f"{name}: started {started} worker(s)"

    def stop_service(self, name: str) -> str:
        """`ctl stop NAME`: stop it gracefully; it stays stopped until `ctl start`."""
        unit = self._unit(name)
        if unit.schedule_timer is not None:
            unit.schedule_timer.cancel()
            unit.schedule_timer = None
        now = time.monotonic()
        stopping = 0
        for worker in unit.workers.values():
            if worker.state is WorkerState.BACKOFF:
                worker.cancel_timer()
                worker.state = WorkerState.STOPPED  # BACKOFF -> STOPPED
            elif worker.state in (WorkerState.STARTING, WorkerState.RUNNING):
                self.stop_worker(worker, now + self.grace_of(unit))
                stopping += 1
        self._readiness_changed()
        return f"{name}: stopping {stopping} worker(s)"

    def restart_service(self, name: str) -> str:
        """`ctl restart NAME`: stop each worker and start it again, same ids."""
        unit = self._unit(name)
        now = time.monotonic()
        for worker in unit.workers.values():
            if worker.state in (WorkerState.STARTING, WorkerState.RUNNING):
                worker.after_exit = "respawn"
                self.stop_worker(worker, now + self.grace_of(unit))
            elif worker.state is not WorkerState.STOPPING and not self.shutting_down:
                worker.cancel_timer()
                self._spawn(worker)
        return f"{name}: restarting"

    def send_signal(self, name: str, signum: int) -> str:
        """`ctl signal NAME SIG`: to the process group of each of its workers."""
        unit = self._unit(name)
        workers = unit.alive_workers()
        for worker in workers:
            signals.send(worker.pid, signum, group=True)
        return f"{name}: {signals.signal_name(signum)} sent to {len(workers)} worker(s)"

    def is_ready(self) -> bool:
        """Everything ready: what `pyinit ctl ready` and /readyz report."""
        return not self.shutting_down and all(u.is_satisfied() for u in self.units.values())

    def _respawn(self, worker: Worker) -> None:
        """Start a worker again (restart, reload, backoff over), then what waited for it."""
        if self.shutting_down:
            return
        self._spawn(worker)
        self.start_due_units()

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
        now = time.monotonic()
        for worker_id in sorted(unit.workers, reverse=True):
            if worker_id < workers:
                break
            worker = unit.workers[worker_id]
            if worker.state in ALIVE:
                if worker.state is not WorkerState.STOPPING:
                    self.stop_worker(worker, now + self.grace_of(unit))
            else:
                worker.cancel_timer()
                del unit.workers[worker_id]
        for worker_id in range(workers):
            if worker_id not in unit.workers:
                unit.workers[worker_id] = Worker(unit, worker_id)
                if unit.started and not self.shutting_down:
                    self._spawn(unit.workers[worker_id])
        self.log.info(f"{name}: scaled to {workers} worker(s)", service=name, event="scaled")

    def _output_pipes(self, worker: Worker) -> tuple[int, int]:
        """Relays for prefix/json output; returns the child's (stdout, stderr) ends."""
        from pyinit.output import OutputRelay, make_pipe

        ends = []
        for stream in ("stdout", "stderr"):
            read_end, write_end = make_pipe()
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
            ends.append(write_end)
        return ends[0], ends[1]

    def _close_relays(self, worker: Worker) -> None:
        for relay in worker.relays:
            relay.close()  # type: ignore[attr-defined]
        worker.relays.clear()

    # -- periodic jobs ------------------------------------------------------------

    def _schedule_next_run(self, unit: Unit, *, first: bool = False) -> None:
        schedule = unit.spec.schedule
        assert schedule is not None
        if not unit.workers:
            return  # workers = 0: defined, but not run
        if first and schedule.run_on_start:
            delay = 0.0
        elif schedule.every is not None:
            delay = schedule.every
        else:
            from pyinit.services_model import next_cron_time

            assert schedule.cron is not None
            now = datetime.now().astimezone()
            due = next_cron_time(schedule.cron, now)
            if due is None:
                self.log.warning(f"{unit.name}: cron {schedule.cron!r} never matches again")
                return
            delay = max(0.0, (due - now).total_seconds())
        unit.schedule_timer = self.loop.call_later(delay, lambda: self._run_periodic(unit))

    def _run_periodic(self, unit: Unit) -> None:
        if self.shutting_down:
            return
        worker = unit.workers[0]
        if worker.state in ALIVE:
            self.log.info(
                f"{unit.name}: previous run still going; this run is skipped",
                service=unit.name,
                event="skipped",
            )
        else:
            self._spawn(worker)
        self._schedule_next_run(unit)

    # -- events --------------------------------------------------------------------

    def on_signals(self, received: bytes) -> None:
        """A batch of signal numbers from the wakeup pipe, handled in order."""
        reap_needed = False
        previous = 0
        for signum in received:
            if signum == signals.SIGCHLD:
                reap_needed = True
            elif signum in signals.STOP_SIGNALS:
                self._on_stop_signal(signum)
            elif signum == signals.SIGHUP:
                if previous != signals.SIGHUP:  # a burst of SIGHUPs is one reload
                    self.reload()
            else:
                self._forward(signum)
            previous = signum
        if reap_needed:
            self._reap()

    def _on_stop_signal(self, signum: int) -> None:
        name = signals.signal_name(signum)
        if self.shutting_down:
            self.log.warning(f"{name} again during shutdown: killing everything now")
            self._kill_everything()
            return
        self.log.info(f"received {name}: stopping all services", event="stopping", signal=name)
        self._run_hooks("terminate")
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
        self._ready_sent = False  # READY=1 again once everything is ready
        try:
            if self.config.path is None:
                self.log.info("reloading services", event="reload")
                self.reload_units(list(self.units.values()))
                return "reloaded"
            from pyinit.reconfigure import apply_new_config

            return apply_new_config(self)
        finally:
            self._run_hooks("reload")
            self._readiness_changed()

    def reload_units(self, units: list[Unit]) -> None:
        """Each unit's reload mode: its reload_signal, a restart, or nothing."""
        for unit in units:
            mode = unit.spec.reload
            if unit.main or mode is ReloadMode.NONE:
                continue
            for worker in unit.alive_workers():
                if mode is ReloadMode.RESTART:
                    worker.after_exit = "respawn"
                    self.stop_worker(worker, time.monotonic() + self.grace_of(unit))
                else:
                    # A Service class without reload() exits 0 on SIGHUP and is
                    # started again, same worker id (SPEC 3).
                    worker.after_exit = "respawn" if unit.spec.py_class is not None else ""
                    signals.send(worker.pid, unit.spec.reload_signal, group=True)

    def _reap(self) -> None:
        for pid, status in reaper.reap():
            checked = self.checks.pop(pid, None)
            if checked is not None:
                if checked.probe is not None:
                    checked.probe.child_exited(pid, status)  # type: ignore[attr-defined]
                continue
            worker = self.by_pid.pop(pid, None)
            if worker is None:
                self.log.debug(f"reaped orphan pid {pid} ({status.describe()})", pid=pid)
                continue
            if worker.process is not None:
                worker.process.returncode = status.shell_code  # type: ignore[attr-defined]
            self._close_relays(worker)
            try:
                self._on_exit(worker, status)
            except Exception:
                self.log.exception(
                    f"{worker.label}: error handling its exit", service=worker.unit.name
                )
        if self.shutting_down:
            self._continue_shutdown()
        else:
            self._readiness_changed()  # a stopped or dead worker changes N/M

    def _on_exit(self, worker: Worker, status: ExitStatus) -> None:
        """The one place a worker's death is interpreted (supervisord's finish())."""
        unit = worker.unit
        worker.last_exit = status
        worker.pid = 0
        was = worker.state
        worker.cancel_timer()
        worker.stop_watching()
        self.log.info(
            f"{worker.label}: {status.describe()}",
            service=unit.name,
            worker=worker.worker_id,
            event="exited",
            exit_code=status.code,
            signal=signals.signal_name(status.signal) if status.signal else None,
        )
        self._run_hooks("dead_worker", unit.name, worker.worker_id, status.shell_code)
        after, worker.after_exit = worker.after_exit, ""
        if was is WorkerState.STOPPING and not after:
            worker.state = WorkerState.STOPPED  # STOPPING -> STOPPED
            if worker.worker_id >= unit.spec.workers:
                del unit.workers[worker.worker_id]  # scaled down
            return
        if unit.main:
            worker.state = WorkerState.EXITED
            code = status.shell_code
            self.shutdown(0 if code in self.options.remap_exit else code)
            return
        if self.shutting_down:
            worker.state = WorkerState.STOPPED
            return
        if after == "respawn" and (status.shell_code == 0 or was is WorkerState.STOPPING):
            self._respawn(worker)  # -> STARTING: a reload or `ctl restart` asked it to go
            return
        decision, delay = unit.decide(worker, status, time.monotonic())
        if decision is Decision.RESTART:
            worker.restarts += 1
            if delay <= 0:
                self._respawn(worker)  # RUNNING -> STARTING
                return
            worker.state = WorkerState.BACKOFF  # RUNNING -> BACKOFF
            self.log.info(
                f"{worker.label}: restarting in {delay:g} s",
                service=unit.name,
                worker=worker.worker_id,
                event="restarting",
                delay=delay,
            )
            worker.timer = self.loop.call_later(delay, lambda: self._respawn(worker))
        elif decision is Decision.DONE:
            worker.state = WorkerState.EXITED  # RUNNING -> EXITED
            self.start_due_units()  # a oneshot that exited 0 may unblock others
        else:
            worker.state = WorkerState.FAILED  # RUNNING -> FAILED
            self.log.error(
                f"{unit.name}: failed ({status.describe()}); not restarting",
                service=unit.name,
                worker=worker.worker_id,
                event="failed",
                exit_code=status.shell_code,
            )
            if unit.spec.critical:
                self.log.error(f"{unit.name} is critical: shutting down", service=unit.name)
                self.shutdown(status.shell_code)

    # -- stopping ----------------------------------------------------------------------

    def grace_of(self, unit: Unit) -> float:
        return unit.spec.grace if unit.spec.grace is not None else self.grace

    def shutdown(self, exit_code: int) -> None:
        """Stop everything in reverse start order, then exit with `exit_code`."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.exit_code = exit_code
        if self.upstream is not None:
            self.upstream.stopping()
        graces = [self.grace_of(u) for u in self.units.values()] or [self.grace]
        now = time.monotonic()
        # The whole shutdown is bounded by the largest grace (0: wait forever).
        self._deadline = None if 0 in graces else now + max(graces)
        for unit in self.units.values():
            if unit.schedule_timer is not None:
                unit.schedule_timer.cancel()
            for worker in unit.workers.values():
                if worker.state is WorkerState.BACKOFF:
                    worker.cancel_timer()
                    worker.state = WorkerState.STOPPED  # BACKOFF -> STOPPED
        self._stop_layers = [list(layer) for layer in self.layers]
        self._continue_shutdown()

    def _continue_shutdown(self) -> None:
        """Stop the next layer once the one after it is down; then sweep; then exit."""
        while self._stop_layers:
            layer = self._stop_layers[-1]
            alive = [w for name in layer for w in self.units[name].alive_workers()]
            if alive:
                now = time.monotonic()
                for worker in alive:
                    if worker.state is not WorkerState.STOPPING:
                        grace = self.grace_of(worker.unit)
                        deadline = now + grace if grace > 0 else None
                        if self._deadline is not None:
                            deadline = min(deadline or self._deadline, self._deadline)
                        self.stop_worker(worker, deadline)
                return
            self._stop_layers.pop()
        self._sweep()

    def stop_worker(self, worker: Worker, deadline: float | None) -> None:
        """RUNNING/STARTING -> STOPPING: stop signal now, SIGKILL at `deadline`."""
        worker.state = WorkerState.STOPPING
        worker.cancel_timer()
        signals.send(worker.pid, worker.unit.spec.stop_signal, group=True)
        if deadline is not None:
            worker.timer = self.loop.call_at(deadline, lambda: self._kill_worker(worker))

    def _kill_worker(self, worker: Worker) -> None:
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
        worker.state = WorkerState.STOPPED
        if self.shutting_down:
            self._continue_shutdown()

    def _sweep(self) -> None:
        """Every service is down: stop whatever descendants remain, then finish."""
        left = reaper.descendants(os.getpid())
        if not left:
            if not reaper.has_children():
                self.loop.stop()
            return
        if self._sweep_timer is not None:
            return
        self.log.info(f"stopping {len(left)} leftover process(es)", event="sweep")
        for pid in left:
            signals.send(pid, signals.SIGTERM)
        now = time.monotonic()
        deadline = self._deadline if self._deadline is not None else now + (self.grace or 0)
        if self._deadline is None and not self.grace:
            return  # grace 0 everywhere: wait for them forever, as asked
        self._sweep_timer = self.loop.call_at(max(deadline, now), self._sweep_kill)

    def _sweep_kill(self) -> None:
        left = reaper.descendants(os.getpid())
        if left:
            self.log.warning(f"sending SIGKILL to {len(left)} leftover process(es)", event="killed")
            for pid in left:
                signals.send(pid, signals.SIGKILL)
        self.loop.call_later(KILL_SETTLE_SECONDS, self.loop.stop)

    def _kill_everything(self) -> None:
        for worker in list(self.by_pid.values()):
            signals.send(worker.pid, signals.SIGKILL, group=True)
        for pid in reaper.descendants(os.getpid()):
            signals.send(pid, signals.SIGKILL)


def _credentials(spec: ServiceSpec) -> tuple[int | None, int | None, list[int] | None]:
    """(user, group, extra_groups) for Popen, from a service's `user`/`group`.

    The group defaults to the user's primary group and the supplementary
    groups to the user's own, as login(1) and systemd set them; a numeric
    user with no passwd entry keeps no supplementary groups.
    """
    if spec.user is None and spec.group is None:
        return None, None, None
    uid = gid = None
    extra: list[int] | None = None
    if spec.user is not None:
        try:
            entry = pwd.getpwuid(int(spec.user)) if spec.user.isdigit() else pwd.getpwnam(spec.user)
        except KeyError:
            entry = None  # numeric, no passwd entry (config checked names exist)
        uid = entry.pw_uid if entry else int(spec.user)
        gid = entry.pw_gid if entry else None
        if os.geteuid() == 0:
            extra = os.getgrouplist(entry.pw_name, entry.pw_gid) if entry else []
    if spec.group is not None:
        gid = int(spec.group) if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
    return uid, gid, extra


def _wants_notify(spec: ServiceSpec) -> bool:
    """Does this service get pyinit's NOTIFY_SOCKET? (SPEC 4: notify services and
    every Python worker, which may call notify_ready().)"""
    return spec.ready.kind is ReadinessKind.NOTIFY or spec.py_class is not None


class _Controls:
    """The supervisor as `pyinit ctl` sees it (control.Controlled): the verbs
    by their ctl names, since `start` already means "start everything"."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def status(self) -> list[dict[str, object]]:
        return self._supervisor.status()

    def is_ready(self) -> bool:
        return self._supervisor.is_ready()

    def start(self, name: str) -> str:
        return self._supervisor.start_service(name)

    def stop(self, name: str) -> str:
        return self._supervisor.stop_service(name)

    def restart(self, name: str) -> str:
        return self._supervisor.restart_service(name)

    def send_signal(self, name: str, signum: int) -> str:
        return self._supervisor.send_signal(name, signum)

    def reload(self) -> str:
        return self._supervisor.reload()
