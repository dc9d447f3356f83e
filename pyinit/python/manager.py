"""`ServiceManager`: cotyledon's programmatic API, with workers forked as cotyledon forks them.

For applications that are their own entrypoint (`python app.py` starts
everything). Code written for cotyledon runs unchanged with the import
changed (or behind a `cotyledon` module that re-exports these names):

    from pyinit import Service, ServiceManager

    class Printer(Service):
        def run(self):
            print(f"worker {self.worker_id} up", flush=True)

    manager = ServiceManager()
    manager.add(Printer, workers=2)
    manager.run()          # exits 0 after SIGTERM

Each worker is forked from this process (forking.py says why, and why not
from a zygote), so services, factories, partials, args and hooks are live
objects, never serialised. The manager is one thread and one loop (pyinit's
`Loop`): signals arrive through a wakeup pipe installed by the constructor,
so a signal sent before `run()` waits for it instead of killing the process.

What each signal does, in the manager (cotyledon's semantics):

    SIGTERM  on_terminate hooks, SIGTERM to every worker, exit 0 once they all
             exited; after graceful_shutdown_timeout (0: never), as SIGALRM
    SIGINT   SIGINT to every worker (they exit 1 at once), exit 1
    SIGALRM  as SIGINT
    SIGHUP   on_reload hooks, then SIGHUP to every worker: its reload() runs,
             or, without one, it stops gracefully and a fresh fork replaces it
    SIGCHLD  reap; a dead worker is reported (on_dead_worker) and replaced,
             at once after a run of 1 s or more, else after 1, 2, 4, 5, 5... s

In a worker: SIGTERM runs terminate() (the worker exits 0, or its
SystemExit code, or 1 after graceful_shutdown_timeout), SIGINT exits 1 at
once, SIGHUP runs reload(). A worker gets SIGTERM when the manager dies,
however it dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, NoReturn

from pyinit.core.loop import Loop
from pyinit.core.signals import read_wakeup
from pyinit.python.forking import WorkerPlan, fork_worker
from pyinit.python.manager_process import (
    MANAGER_SIGNALS,
    catch_signals,
    describe,
    in_main_thread,
    log_from_environment,
    notify_ready_once,
    reap_workers,
    send,
)
from pyinit.python.slots import (
    Registered,
    ServiceId,
    Slot,
    WorkerId,
    check_workers,
    service_name,
)

__all__ = ["ServiceId", "ServiceManager", "WorkerId"]

Hook = Callable[..., object]

#: After SIGINT/SIGALRM, how long workers get to exit before SIGKILL.
FAST_EXIT_SECONDS = 1.0
HOOK_KINDS = ("terminate", "reload", "new_worker", "dead_worker")
#: Written to the wakeup pipe by another thread to ask for a reconcile (no signal is 0).
RECONCILE_BYTE = b"\0"


class ServiceManager:
    """Forks, supervises and restarts `Service` workers; see the module docstring."""

    # cotyledon's seatbelt (and its attribute's name, which some test suites
    # reset): two managers in one process would fight over signals and children.
    _process_runner_already_created: ClassVar[bool] = False

    def __init__(
        self,
        wait_interval: float | None = None,
        graceful_shutdown_timeout: float = 60,
        mp_context: object = None,
    ) -> None:
        # wait_interval and mp_context are cotyledon's; pyinit forks without
        # multiprocessing and never polls, so neither has anything to tune.
        if ServiceManager._process_runner_already_created:
            raise RuntimeError("Only one instance of ServiceManager per application is allowed")
        ServiceManager._process_runner_already_created = True
        # First: a signal from now on waits for run().
        self._wakeup, self._wakeup_write = catch_signals()
        self._graceful_shutdown_timeout = graceful_shutdown_timeout
        self._services: dict[ServiceId, Registered] = {}
        self._hooks: dict[str, list[Hook]] = {kind: [] for kind in HOOK_KINDS}
        self._slots: dict[tuple[ServiceId, int], Slot] = {}
        self._pids: dict[int, Slot] = {}
        self._log = log_from_environment()
        self._loop: Loop | None = None
        self._stopping = False  # a shutdown is under way: no more forks
        self._fast = False  # ... and it is the instantaneous one
        self._exit_code = 0
        self._pid = os.getpid()

    # ---- cotyledon's API

    def add(
        self,
        service: Callable[..., object],
        workers: int = 1,
        args: Sequence[object] | None = None,
        kwargs: Mapping[str, object] | None = None,
    ) -> ServiceId:
        """Run `service(worker_id, *args, **kwargs)` in `workers` forked processes.

        `service` is a Service class or any callable returning a service (a
        factory, a partial). Returns the service's id, for `reconfigure()`
        and the hooks.
        """
        if not callable(service):
            raise TypeError("'service' must be a callable")
        check_workers(workers, 1)
        return self._register(service, workers, args, kwargs, service_name(service))

    def reconfigure(self, service_id: ServiceId, workers: int) -> None:
        """Change a service's number of workers, also while running (ids above go first)."""
        if service_id not in self._services:
            raise ValueError(f"{service_id} service id doesn't exists")
        check_workers(workers, 0)
        self._services[service_id].workers = workers
        self._poke()

    def register_hooks(
        self,
        on_terminate: Hook | None = None,
        on_reload: Hook | None = None,
        on_new_worker: Hook | None = None,
        on_dead_worker: Hook | None = None,
    ) -> None:
        """Add hooks, run in the order added; an exception is logged and skips the rest.

        on_terminate() and on_reload() run in the manager on SIGTERM and
        SIGHUP; on_new_worker(service_id, worker_id, service) in each new
        worker once its service is built; on_dead_worker(service_id,
        worker_id, exit_code) in the manager when a worker died, except
        during the shutdown (exit_code: -N when killed by signal N).
        """
        given = (on_terminate, on_reload, on_new_worker, on_dead_worker)
        for kind, hook in zip(HOOK_KINDS, given, strict=True):
            if hook is not None:
                if not callable(hook):
                    raise TypeError(f"'on_{kind}' must be a callable")
                self._hooks[kind].append(hook)

    def run(self) -> NoReturn:
        """Supervise the workers until a stop signal; exit with cotyledon's status."""
        code = self._serve()
        sys.stdout.flush()
        sys.exit(code)

    def shutdown(self) -> None:
        """Stop gracefully, as SIGTERM does (from a hook, another thread, or before run())."""
        if self._loop is not None and in_main_thread() and os.getpid() == self._pid:
            self._graceful_shutdown()
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    # ---- set-up

    def _register(
        self,
        factory: Callable[..., object],
        workers: int,
        args: Sequence[object] | None,
        kwargs: Mapping[str, object] | None,
        name: str,
    ) -> ServiceId:
        service_id, n = ServiceId(name), 2
        while service_id in self._services:
            service_id, n = ServiceId(f"{name}-{n}"), n + 1
        self._services[service_id] = Registered(
            factory, workers, tuple(args or ()), dict(kwargs or {}), name
        )
        self._poke()
        return service_id

    def _poke(self) -> None:
        """Reconcile now, in the loop's thread; from another thread, wake the loop for it.

        Forking from another thread would tie the workers' PDEATHSIG to that
        thread: the kernel sends it when the forking *thread* exits.
        """
        if in_main_thread():
            self._reconcile()
            return
        try:
            os.write(self._wakeup_write, RECONCILE_BYTE)
        except BlockingIOError:
            pass  # the pipe is full of wakeups already: the loop is coming

    def _serve(self) -> int:
        """The manager's loop; returns the exit status."""
        if self._loop is not None:
            raise RuntimeError("ServiceManager.run() was already called")
        notify_ready_once()
        self._loop = Loop(self._log)
        self._loop.add_reader(self._wakeup, self._on_signals)
        self._on_signals()  # queued since __init__: a SIGTERM stops before any fork
        self._reconcile()
        self._loop.run()
        return self._exit_code

    # ---- events

    def _on_signals(self) -> None:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self._graceful_shutdown,
            signal.SIGINT: lambda: self._fast_exit("SIGINT"),
            signal.SIGALRM: lambda: self._fast_exit("SIGALRM"),
            signal.SIGHUP: self._reload,
            signal.SIGCHLD: self._reap,
            RECONCILE_BYTE[0]: self._reconcile,
        }
        for signum in read_wakeup(self._wakeup):
            handler = handlers.get(signum)
            if handler is not None:
                handler()

    def _graceful_shutdown(self) -> None:
        if self._stopping:
            return
        self._log.info("SIGTERM: stopping every worker")
        self._stopping = True
        self._cancel_respawns()
        self._run_hooks("terminate")
        timeout = self._graceful_shutdown_timeout
        if timeout and timeout > 0 and self._loop is not None:
            self._loop.call_later(
                timeout, lambda: self._fast_exit(f"graceful_shutdown_timeout={timeout:g}s exceeded")
            )
        self._signal_workers(signal.SIGTERM)
        self._finish_if_done()

    def _fast_exit(self, why: str) -> None:
        """cotyledon's instantaneous exit: SIGINT to the workers, status 1."""
        if self._fast:
            return
        self._log.info(f"{why}: exiting at once (status 1)")
        self._stopping = self._fast = True
        self._exit_code = 1
        self._cancel_respawns()
        self._signal_workers(signal.SIGINT)
        if self._loop is not None:
            self._loop.call_later(FAST_EXIT_SECONDS, lambda: self._signal_workers(signal.SIGKILL))
        self._finish_if_done()

    def _reload(self) -> None:
        if self._stopping:
            return
        self._log.info("SIGHUP: reloading")
        # Workers an on_reload hook adds (reconfigure) start with the new
        # state already: only the ones running before get the SIGHUP.
        running = list(self._pids.values())
        self._run_hooks("reload")
        for slot in running:
            if slot.pid:
                slot.restart_now = True  # if it exits for this, it is replaced at once
                send(slot.pid, signal.SIGHUP)
        self._reconcile()

    def _reap(self) -> None:
        now = time.monotonic()
        for pid, status in reap_workers(self._pids):
            slot = self._pids.pop(pid)
            slot.pid = 0
            label = self._label(slot)
            self._log.info(f"{label} (pid {pid}) {describe(status)}")
            if self._stopping:
                continue
            # Decide the respawn first: a hook that reconfigures must find
            # this slot either due now (and fork it) or waiting its backoff.
            self._respawn_later(slot, now)
            code = -status.signal if status.signal is not None else (status.code or 0)
            self._run_hooks("dead_worker", slot.service_id, slot.worker_id, code)
        if self._stopping:
            self._finish_if_done()
        else:
            self._reconcile()

    # ---- desired vs actual

    def _respawn_later(self, slot: Slot, now: float) -> None:
        """After a death: replace now, after a backoff delay, or not at all (scaled down)."""
        registered = self._services.get(slot.service_id)
        if registered is None or slot.worker_id >= registered.workers:
            del self._slots[(slot.service_id, slot.worker_id)]
            return
        delay = slot.respawn_delay(now)
        if delay > 0 and self._loop is not None:
            self._log.info(f"{self._label(slot)}: restarting in {delay:g} s")
            slot.timer = self._loop.call_later(delay, lambda: self._respawn_due(slot))

    def _respawn_due(self, slot: Slot) -> None:
        slot.timer = None
        self._reconcile()

    def _reconcile(self) -> None:
        """Fork what is missing, stop what is above `workers`, forget what is gone."""
        if self._loop is None or self._stopping:
            return
        for service_id, registered in list(self._services.items()):
            for worker_id in range(registered.workers):
                slot = self._slots.setdefault((service_id, worker_id), Slot(service_id, worker_id))
                if slot.pid == 0 and slot.timer is None and not self._stopping:
                    self._fork(slot, registered)
        for slot in list(self._slots.values()):
            if slot.worker_id < self._services[slot.service_id].workers:
                continue
            if slot.pid and not slot.stop_sent:
                slot.stop_sent = True
                send(slot.pid, signal.SIGTERM)
            elif not slot.pid:
                if slot.timer is not None:
                    slot.timer.cancel()
                del self._slots[(slot.service_id, slot.worker_id)]

    def _fork(self, slot: Slot, registered: Registered) -> None:
        assert self._loop is not None
        plan = WorkerPlan(
            service_id=slot.service_id,
            worker_id=slot.worker_id,
            name=registered.name,
            factory=registered.factory,
            args=registered.args,
            kwargs=registered.kwargs,
            grace=float(self._graceful_shutdown_timeout or 0),
            new_worker_hooks=tuple(self._hooks["new_worker"]),
        )
        fds = (self._wakeup, self._wakeup_write)
        try:
            pid = fork_worker(plan, self._loop, fds, MANAGER_SIGNALS)
        except OSError as error:
            self._log.error(f"{self._label(slot)}: cannot fork: {error}")
            slot.started_at = time.monotonic()
            self._respawn_later(slot, slot.started_at)
            return
        slot.pid, slot.started_at, slot.stop_sent = pid, time.monotonic(), False
        self._pids[pid] = slot
        self._log.debug(f"{self._label(slot)}: forked (pid {pid})")

    # ---- helpers

    def _signal_workers(self, signum: int) -> None:
        for pid in list(self._pids):
            send(pid, signum)

    def _cancel_respawns(self) -> None:
        for slot in self._slots.values():
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None

    def _finish_if_done(self) -> None:
        if self._stopping and not self._pids and self._loop is not None:
            self._log.debug("shutdown finished")
            self._loop.stop()

    def _run_hooks(self, kind: str, *args: object) -> None:
        for hook in self._hooks[kind]:
            try:
                hook(*args)
            except Exception:
                self._log.exception(f"on_{kind} hook raised; the hooks after it are skipped")
                return

    def _label(self, slot: Slot) -> str:
        registered = self._services.get(slot.service_id)
        return f"{registered.name if registered else slot.service_id}[{slot.worker_id}]"
