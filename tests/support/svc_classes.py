"""Python Service classes for the services-mode tests, run by pyinit as `svc_classes:Name`.

They report to the same event log format as svc_child.py (see svc_helpers.Events):

    NAME start TIME PID WORKER_ID PGID      run() began
    NAME signal 1 TIME PID                  reload() was called (Recorder only)
    NAME stop TIME PID                      terminate() was called

The worker id written is the one pyinit passed to the constructor.
"""

from __future__ import annotations

import os
import threading
import time

from pyinit import Service


class Plain(Service):
    """run() blocks until terminate(); no reload(), so SIGHUP restarts the worker."""

    name = "plain"

    def __init__(self, worker_id: int, log: str, tag: str = "rec") -> None:
        super().__init__(worker_id)
        self._log = log
        self._tag = tag
        self._stopped = threading.Event()

    def _event(self, *fields: object) -> None:
        line = " ".join([self._tag, *(str(f) for f in fields)]) + "\n"
        fd = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def run(self) -> None:
        self._event("start", time.monotonic(), os.getpid(), self.worker_id, os.getpgrp())
        self._stopped.wait()

    def terminate(self) -> None:
        self._event("stop", time.monotonic(), os.getpid())
        self._stopped.set()


class Recorder(Plain):
    """Plain with a reload() that only reports the call."""

    name = "recorder"

    def reload(self) -> None:
        self._event("signal", 1, time.monotonic(), os.getpid())
