"""Forking one worker from the `ServiceManager` process: the fork and the child side.

Why fork (issue 10)
-------------------
cotyledon and oslo.service fork their workers from the manager, and code
written for them depends on it: a script with no `if __name__ == "__main__":`
guard, `args` that are live objects (an oslo `ConfigOpts`, a lambda, a
socket), factories and `functools.partial` as services, `on_new_worker`
hooks that run in the worker and see its service object. A fresh
interpreter per worker (what PID 1's `py:module:Class` services get, see
worker.py) can give none of that; a fork gives all of it for free.

Why from the manager itself, and not from a zygote forked once at run()
----------------------------------------------------------------------
A zygote would freeze the application's state at run(); cotyledon's users
expect a worker started after a SIGHUP to see what the manager's `on_reload`
hook changed (oslo_config_glue reloads the config files there). The manager
is safe to fork from at any time: its loop is one thread, hooks run in that
thread, and nothing of pyinit holds a lock while it forks. Its only state a
child could misuse is its signal plumbing (the wakeup pipe, the handlers)
and the loop's epoll fd, and the child drops those first.

The fork, step by step (the order matters)
------------------------------------------
1. The manager blocks every signal around `fork()`. Otherwise a signal sent
   to the new pid before the child installed its own handlers would run the
   manager's handler in the child, whose wakeup pipe is shared with the
   manager: the manager would read the child's SIGHUP or SIGTERM as its own.
2. Child: `PR_SET_PDEATHSIG = SIGTERM`, then check that `getppid()` is still
   the manager. The kernel only sends the death signal for a parent that
   dies after the prctl; a manager SIGKILLed in between left us reparented.
   SIGTERM (not SIGKILL) so that the worker stops gracefully, `terminate()`
   included, as cotyledon's workers do when their manager dies.
3. Child: unhook the manager's signal plumbing (wakeup fd, handlers back to
   SIG_DFL) and close its fds.
4. Child: `ForkedWorker` installs the worker's own wakeup pipe and handlers
   (worker.py's), then empties the signal mask: whatever was sent meanwhile
   is delivered now, to the worker. A SIGTERM during construction is kept.
5. Child: build the service, run the `on_new_worker` hooks, serve, and
   `os._exit()` with the status. It never returns into the manager's code.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from pyinit.core import reaper
from pyinit.python.command import EXIT_FAILURE, EXIT_OK
from pyinit.python.service import Service
from pyinit.python.shapes import Cotyledon, Oslo, Periodic, Shape, grace_of
from pyinit.python.worker import Worker, _exit, _set_comm

if TYPE_CHECKING:
    from pyinit.core.loop import Loop

Hook = Callable[..., object]


class WorkerPlan(NamedTuple):
    """Everything a forked worker needs; nothing in it is ever serialised."""

    service_id: str
    worker_id: int
    name: str  # for the process title and the logs: `name[worker_id]`
    factory: Callable[..., object]  # called as factory(worker_id, *args, **kwargs)
    args: tuple[object, ...]
    kwargs: Mapping[str, object]
    grace: float  # the manager's graceful_shutdown_timeout, when the class has none
    new_worker_hooks: Sequence[Hook]


def fork_worker(
    plan: WorkerPlan, manager_loop: Loop, manager_fds: Sequence[int], manager_signals: Sequence[int]
) -> int:
    """Fork the worker `plan` describes; returns its pid (in the manager only).

    In the child the manager's loop is dropped, `manager_fds` closed and
    `manager_signals` reset (see the module docstring). Raises OSError when
    fork() fails.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # else the child inherits the buffer and writes it again
        except Exception:  # noqa: S110 - a closed stream must not stop the fork
            pass
    manager_pid = os.getpid()
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
        return pid
    code = EXIT_FAILURE
    try:
        code = _child(plan, manager_pid, manager_loop, manager_fds, manager_signals)
    except BaseException:  # a pyinit bug before the worker took over: say so
        os.write(2, f"pyinit: error: worker set-up failed:\n{traceback.format_exc()}".encode())
    finally:
        os._exit(code)  # nothing returns into the manager's code (popen_fork's rule)


def _child(
    plan: WorkerPlan,
    manager_pid: int,
    manager_loop: Loop,
    manager_fds: Sequence[int],
    manager_signals: Sequence[int],
) -> int:
    reaper.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != manager_pid:
        return EXIT_OK  # the manager died before the prctl: nobody wants this worker
    signal.set_wakeup_fd(-1)
    for signum in manager_signals:
        signal.signal(signum, signal.SIG_DFL)
    manager_loop.close_after_fork()
    for fd in manager_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _exit(ForkedWorker(plan).main())


class ForkedWorker(Worker):
    """worker.py's `Worker`, given a service object instead of a `module:Class` to import."""

    def __init__(self, plan: WorkerPlan) -> None:
        super().__init__(plan.name, plan.worker_id, plan.name, plan.args, plan.kwargs)
        self.plan = plan

    def _install_signals(self) -> None:
        super()._install_signals()
        # The manager blocked everything around fork(): the worker starts clean.
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    def _load(self) -> Shape:
        """Build the service as cotyledon does, then run the on_new_worker hooks."""
        plan = self.plan
        _set_comm(self.title)
        instance = plan.factory(plan.worker_id, *plan.args, **plan.kwargs)
        if isinstance(instance, Service) and not hasattr(instance, "worker_id"):
            Service.__init__(instance, plan.worker_id)  # subclass forgot super().__init__()
        name = getattr(instance, "name", None)
        if isinstance(name, str) and name and name != self.service:
            self.title = f"{name}[{plan.worker_id}]"
            _set_comm(self.title)
        own = grace_of(instance)
        self.grace = plan.grace if own is None else own
        for hook in plan.new_worker_hooks:
            try:
                hook(plan.service_id, plan.worker_id, instance)
            except Exception as error:  # cotyledon: logged, and the later hooks skipped
                self.error("on_new_worker hook raised", error)
                break
        return _shape_of(self, instance)

    def _stop(self, shape: Shape, why: str) -> int:
        """SIGINT is cotyledon's instantaneous exit: status 1, no terminate()."""
        if why == "SIGINT":
            self.log.info(f"{self.title}: SIGINT: exiting at once", service=self.service)
            _exit(EXIT_FAILURE)
        return super()._stop(shape, why)


def _shape_of(worker: Worker, instance: object) -> Shape:
    """How to drive `instance`: cotyledon's run/terminate, oslo's start/stop/wait, or a job."""
    if callable(getattr(instance, "job", None)) and hasattr(instance, "interval"):
        return Periodic(worker, instance)
    if isinstance(instance, Service) or callable(getattr(instance, "run", None)):
        return Cotyledon(worker, instance)
    if all(callable(getattr(instance, m, None)) for m in ("start", "stop", "wait")):
        return Oslo(worker, instance)
    raise TypeError(
        f"{worker.service}: {type(instance).__name__} is not a service:"
        " define run(), start/stop/wait, or job() with an interval"
    )
