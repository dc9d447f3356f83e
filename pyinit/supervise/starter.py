"""Starting one worker: its command, its output relays, the Popen, the bookkeeping.

Split from the supervisor because a start has many parts that have nothing
to do with deciding *whether* to start: the argv and environment
(process.py), the notify socket path a `ready = "notify"` service is given,
the output relays (output.py), the Popen call, and what a failed start
means. reconcile() decides; this module carries the decision out.

A start that fails (command not found, out of descriptors, an unknown user)
never raises out of here and never kills PID 1: it is logged, and judged
by the restart policy as a death (exits.on_spawn_failed) from a loop
callback, not from inside the reconcile pass, where a policy without
backoff would spin. The Popen object is kept on the worker until the
reaper hands back its status: it is never waited on (see supervisor.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import TYPE_CHECKING

from pyinit.config.model import OutputMode
from pyinit.core.model import ExitStatus
from pyinit.supervise.exits import on_spawn_failed
from pyinit.supervise.listen import hand_over
from pyinit.supervise.output import close_relays, open_relays
from pyinit.supervise.process import start_process, worker_command
from pyinit.supervise.unit import WorkerState

if TYPE_CHECKING:
    from pyinit.supervise.supervisor import Supervisor
    from pyinit.supervise.unit import Worker


def start_worker(supervisor: Supervisor, worker: Worker) -> None:
    """Start one worker: STOPPED/BACKOFF/EXITED/FAILED -> STARTING (then
    RUNNING once ready: readiness.py)."""
    spec = worker.unit.spec
    worker.cancel_timer()
    downstream = supervisor.downstream
    notify_path = downstream.path if downstream is not None else None
    argv, env = worker_command(
        spec, worker.worker_id, supervisor.base_env, notify_path, supervisor.options
    )
    fds = supervisor.listeners.fds(spec)
    if fds:  # through the exec shim: fds 3.., LISTEN_PID (listen.py)
        argv = hand_over(spec, fds, argv, env)
    worker.started_at = time.monotonic()
    worker.generation = worker.unit.generation
    worker.failing = worker.restart_on_clean_exit = False
    pipes = None
    try:
        # Inside the try: out of descriptors (EMFILE) is a failed start
        # of this worker, restarted by its policy, never PID 1's death.
        if spec.output is not OutputMode.INHERIT:
            pipes = open_relays(supervisor.loop, worker)
        process = start_process(spec, argv, env, pipes, fds)
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as error:
        _start_failed(supervisor, worker, argv, error)
        return
    finally:
        if pipes:
            os.close(pipes[0])
            os.close(pipes[1])
    worker.process = process
    worker.pid = process.pid
    worker.starts += 1
    supervisor.by_pid[process.pid] = worker
    supervisor.run_hooks("new_worker", spec.name, worker.worker_id)
    worker.state = WorkerState.STARTING
    supervisor.log.info(
        f"{worker.label}: started {spec.runs()} (pid {process.pid})",
        service=spec.name,
        worker=worker.worker_id,
        pid=process.pid,
        event="started",
    )
    supervisor.readiness.watch(worker)


def _start_failed(
    supervisor: Supervisor, worker: Worker, argv: list[str], error: Exception
) -> None:
    """Log why, and have the policy judge it as an exit 127/126 from the loop."""
    spec = worker.unit.spec
    close_relays(worker)
    code = 127 if isinstance(error, FileNotFoundError) else 126
    if worker.unit.main and isinstance(error, OSError):
        # COMMAND's exec error reads as in single-command mode (SPEC 1).
        reason = error.strerror or str(error)
        shown = argv[0].replace("\r", "\\r").replace("\n", "\\n")  # one line
        supervisor.log.write_line(f"pyinit: {shown}: {reason}")
    supervisor.log.error(
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
    worker.timer = supervisor.loop.call_later(
        0, lambda: on_spawn_failed(supervisor, worker, status)
    )
