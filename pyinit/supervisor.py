"""Services mode: start, watch, restart and stop many services.

The I/O half of the policy in `unit.py`: it spawns workers, reads their
deaths from the reaper, arms timers on the loop, and sends signals. Every
event reaches it through three doors, all called from the loop:

    on_signals(bytes)   signals read from the wakeup pipe (SIGCHLD -> reap)
    timer callbacks     backoff over, kill deadline, periodic run due
    (later: notify datagrams, control requests)

Order: services start in layers (`after`); a layer starts when what it
names is satisfied (running, or a oneshot that exited 0). COMMAND, when
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
from pyinit.model import ExitStatus
from pyinit.services_model import OutputMode, ReadinessKind, ReloadMode, ServiceSpec, start_order
from pyinit.unit import ALIVE, Decision, Unit, Worker, WorkerState

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.logs import Log
    from pyinit.loop import Loop
    from pyinit.model import Options
    from pyinit.services_model import Config

#: After SIGKILL, how long to wait for the kernel before giving up on a process.
KILL_SETTLE_SECONDS = 5.0
#: Variables of pyinit's own environment that children must not see.
PRIVATE_VARIABLES = ("NOTIFY_SOCKET", "PYINIT_SERVICES", "PYINIT_CONFIG")


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
        self.base_env = {k: v for k, v in os.environ.items() if k not in PRIVATE_VARIABLES}
        self.exit_code: int | None = None
        self.shutting_down = False
        self._stop_layers: list[list[str]] = []
        self._deadline: float | None = None
        self._sweep_timer: object = None
        # ServiceManager's callbacks by kind: terminate, reload, new_worker, dead_worker.
        self.hooks: dict[str, list[Callable[..., object]]] = {}
        for unit in self.units.values():
            kind = unit.spec.ready.kind
            if kind not in (ReadinessKind.NONE,):
                log.warning(
                    f"{unit.name}: ready = {unit.spec.ready.describe()} is not checked by this"
                    " version of pyinit; the service counts as ready once started",
                    service=unit.name,
                )

    # -- starting ------------------------------------------------------------

    def start(self) -> None:
        """Start every unit whose `after` is already met (layer 0 at least)."""
        self._start_due_units()

    def _start_due_units(self) -> None:
        """Start units whose `after` is met, until a pass starts nothing new.

        Called after anything that can satisfy a dependency: a worker
        started (readiness is "started" for now) or a oneshot exited 0.
        """
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

    def _deps_met(self, unit: Unit) -> bool:
        if unit.main:
            return all(u.started for u in self.units.values() if not u.main)
        return all(self.units[name].is_satisfied() for name in unit.spec.after)

    def _spawn(self, worker: Worker) -> None:
        """Start one worker: STOPPED/BACKOFF/EXITED -> STARTING -> RUNNING."""
        spec = worker.unit.spec
        worker.cancel_timer()
        env = dict(self.base_env)
        env.update(spec.env)
        env["PYINIT_WORKER_ID"] = str(worker.worker_id)
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
        # STARTING -> RUNNING: readiness beyond "started" is not checked yet.
        worker.state = WorkerState.RUNNING
        self.log.info(
            f"{worker.label}: started {spec.runs()} (pid {process.pid})",
            service=spec.name,
            worker=worker.worker_id,
            pid=process.pid,
            event="started",
        )

    def _respawn(self, worker: Worker) -> None:
        """Start a worker again (restart, reload, backoff over), then what waited for it."""
        if self.shutting_down:
            return
        self._spawn(worker)
        self._start_due_units()

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
                    self._stop_worker(worker, now + self._grace_of(unit))
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
        holder = unit.workers[0] if unit.workers else None
        if holder is None:
            return
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
            unit.runs += 1
            self._spawn(worker)
        self._schedule_next_run(unit)

    # -- events --------------------------------------------------------------------

    def on_signals(self, received: bytes) -> None:
        """A batch of signal numbers from the wakeup pipe, handled in order."""
        reap_needed = False
        for signum in received:
            if signum == signals.SIGCHLD:
                reap_needed = True
            elif signum in signals.STOP_SIGNALS:
                self._on_stop_signal(signum)
            elif signum == _SIGHUP:
                self.reload()
            else:
                self._forward(signum)
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
            _signal_group(worker.pid, signum)

    def reload(self) -> None:
        """SIGHUP: apply each running service's reload mode."""
        if self.shutting_down:
            return
        self.log.info("reloading services", event="reload")
        for unit in self.units.values():
            mode = unit.spec.reload
            if unit.main or mode is ReloadMode.NONE:
                continue
            for worker in unit.alive_workers():
                if mode is ReloadMode.RESTART:
                    worker.reload_requested = True
                    self._stop_worker(worker, time.monotonic() + self._grace_of(unit))
                else:
                    # A Service class without reload() exits 0 on SIGHUP and is
                    # started again, same worker id (SPEC 3).
                    worker.reload_requested = unit.spec.py_class is not None
                    _signal_group(worker.pid, unit.spec.reload_signal)
        # After the workers were signalled: a worker a hook starts (scaling up)
        # must not get the reload signal before it can handle it.
        self._run_hooks("reload")

    def _reap(self) -> None:
        for pid, status in reaper.reap():
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

    def _on_exit(self, worker: Worker, status: ExitStatus) -> None:
        """The one place a worker's death is interpreted (supervisord's finish())."""
        unit = worker.unit
        worker.last_exit = status
        worker.pid = 0
        was = worker.state
        worker.cancel_timer()
        self.log.info(
            f"{worker.label}: {status.describe()}",
            service=unit.name,
            worker=worker.worker_id,
            event="exited",
            exit_code=status.code,
            signal=signals.signal_name(status.signal) if status.signal else None,
        )
        self._run_hooks("dead_worker", unit.name, worker.worker_id, status.shell_code)
        if was is WorkerState.STOPPING and not worker.reload_requested:
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
        if worker.reload_requested:
            worker.reload_requested = False
            if status.shell_code == 0 or was is WorkerState.STOPPING:
                self._respawn(worker)  # -> STARTING: a reload asked it to go
                return
        decision, delay = unit.decide(worker, status, time.monotonic())
        if decision is Decision.RESTART:
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
            self._start_due_units()  # a oneshot that exited 0 may unblock others
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

    def _grace_of(self, unit: Unit) -> float:
        return unit.spec.grace if unit.spec.grace is not None else self.grace

    def shutdown(self, exit_code: int) -> None:
        """Stop everything in reverse start order, then exit with `exit_code`."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.exit_code = exit_code
        graces = [self._grace_of(u) for u in self.units.values()] or [self.grace]
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
                        grace = self._grace_of(worker.unit)
                        deadline = now + grace if grace > 0 else None
                        if self._deadline is not None:
                            deadline = min(deadline or self._deadline, self._deadline)
                        self._stop_worker(worker, deadline)
                return
            self._stop_layers.pop()
        self._sweep()

    def _stop_worker(self, worker: Worker, deadline: float | None) -> None:
        """RUNNING/STARTING -> STOPPING: stop signal now, SIGKILL at `deadline`."""
        worker.state = WorkerState.STOPPING
        worker.cancel_timer()
        _signal_group(worker.pid, worker.unit.spec.stop_signal)
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
        _signal_group(worker.pid, signals.SIGKILL)
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
            _signal_pid(pid, signals.SIGTERM)
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
                _signal_pid(pid, signals.SIGKILL)
        self.loop.call_later(KILL_SETTLE_SECONDS, self.loop.stop)

    def _kill_everything(self) -> None:
        for worker in list(self.by_pid.values()):
            _signal_group(worker.pid, signals.SIGKILL)
        for pid in reaper.descendants(os.getpid()):
            _signal_pid(pid, signals.SIGKILL)


_SIGHUP = 1


def _signal_group(pid: int, signum: int) -> None:
    if pid <= 0:
        return
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass  # already gone: its exit arrives through the reaper
    except PermissionError:
        pass  # a group that changed owner (setuid child): nothing we may do


def _signal_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


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
