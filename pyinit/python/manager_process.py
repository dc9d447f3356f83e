"""The `ServiceManager` process's own plumbing: its signals, its log, its children.

Split from manager.py, which keeps the policy (cotyledon's semantics, the
reconcile of slots), so that what touches the OS reads in one place:

* signals go to a non-blocking wakeup pipe through no-op handlers (STYLE
  rules 1 and 7), installed by the constructor so that a signal sent before
  `run()` waits for it;
* only the manager's own workers are reaped, each with its own waitpid(): a
  hook's `subprocess.run()` in the manager must keep its exit status. As
  PID 1 every orphan is ours too, so there the one reaper drains them all;
* READY=1 goes upstream once at run(), as cotyledon does, and NOTIFY_SOCKET
  is hidden from the workers.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Collection

from pyinit.core.logs import LEVELS, Log
from pyinit.core.model import ExitStatus
from pyinit.core.reaper import reap
from pyinit.core.signals import signal_name
from pyinit.python.service import notify

MANAGER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGCHLD)


def catch_signals() -> tuple[int, int]:
    """Route MANAGER_SIGNALS to a new pipe now; returns its (read, write) ends."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in MANAGER_SIGNALS:
        signal.signal(signum, _noop)
    return read_fd, write_fd


def _noop(signum: int, frame: object) -> None:
    """The wakeup fd carries the signal to the loop (STYLE rule 1)."""


def send(pid: int, signum: int) -> None:
    """kill(), where a worker already gone is no error: its exit reaches the reaping."""
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def reap_workers(pids: Collection[int]) -> list[tuple[int, ExitStatus]]:
    """The workers among `pids` that exited, with their statuses (see the module docstring)."""
    if os.getpid() == 1:
        return [(pid, status) for pid, status in reap() if pid in pids]
    ended = []
    for pid in list(pids):
        try:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done:
            ended.append((pid, ExitStatus.from_wait_status(wait_status)))
    return ended


def describe(status: ExitStatus) -> str:
    if status.signal is not None:
        return f"killed by {signal_name(status.signal)}"
    return f"exited with status {status.code}"


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def notify_ready_once() -> None:
    """cotyledon tells systemd READY=1 at run() and hides NOTIFY_SOCKET from workers."""
    if os.environ.get("NOTIFY_SOCKET"):
        notify("READY=1")
        del os.environ["NOTIFY_SOCKET"]


def log_from_environment() -> Log:
    level = os.environ.get("PYINIT_LOG_LEVEL", "").strip().lower()
    fmt = os.environ.get("PYINIT_LOG_FORMAT", "").strip().lower()
    return Log(level if level in LEVELS else "info", "json" if fmt == "json" else "text")
