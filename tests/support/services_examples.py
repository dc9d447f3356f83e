"""Example user service classes for tests/test_service_worker.py.

Each prints marker lines (flushed) on stdout so a test can follow it from the
outside: `run worker_id=0 ...`, `terminate`, `reload`, ... They are written
the way users write them, with no knowledge of the tests.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from pyinit import Service


def say(*parts: object) -> None:
    print(*parts, flush=True)


class Recorder(Service):
    """run() reports its arguments and blocks; terminate() and reload() leave a mark."""

    def __init__(self, worker_id: int, *args: object, **kwargs: object) -> None:
        super().__init__(worker_id)
        self.args = args
        self.kwargs = kwargs
        self.stopped = threading.Event()

    def run(self) -> None:
        payload = {"args": list(self.args), "kwargs": self.kwargs}
        leaked = "PYINIT_SERVICE_ARGS" in os.environ
        say(f"run worker_id={self.worker_id} env={os.environ['PYINIT_WORKER_ID']} leaked={leaked}")
        say("payload", json.dumps(payload))
        self.stopped.wait()

    def terminate(self) -> None:
        say("terminate")
        self.stopped.set()

    def reload(self) -> None:
        say("reload")


class Returns(Service):
    """run() returns at once: the worker must keep running until stopped."""

    def run(self) -> None:
        say("run returned")

    def terminate(self) -> None:
        say("terminate")


class ExitThree(Service):
    """terminate() chooses the exit status."""

    def run(self) -> None:
        say("running")

    def terminate(self) -> None:
        raise SystemExit(3)


class Boom(Service):
    """run() fails: traceback on stderr, exit 1."""

    def run(self) -> None:
        raise RuntimeError("boom from run")


class BadReload(Service):
    def run(self) -> None:
        say("running")

    def reload(self) -> None:
        raise ValueError("bad config")


class NoReload(Service):
    """No reload(): SIGHUP stops it (terminate, exit 0) for a fresh start."""

    def run(self) -> None:
        say("running")

    def terminate(self) -> None:
        say("terminate")


class Bare(Service):
    """Nothing overridden: waits for the stop signal, exits 0."""

    name = "bare-named"


class Ready(Service):
    """run() sends READY=1 and a status."""

    def run(self) -> None:
        say("ready sent", self.notify_ready(), self.notify_status("indexing 3 files"))


class SlowStop(Service):
    """terminate() never finishes: the worker gives up after its own timeout."""

    graceful_shutdown_timeout = 1

    def run(self) -> None:
        say("running")

    def terminate(self) -> None:
        say("terminate")
        threading.Event().wait()


class WaitForever(Service):
    """graceful_shutdown_timeout = 0: asks pyinit to wait forever."""

    graceful_shutdown_timeout = 0

    def run(self) -> None:
        say("running")

    def terminate(self) -> None:
        say("terminate")


class Duck:
    """Not a Service subclass, but has run(): constructed with worker_id, cotyledon style."""

    def __init__(self, worker_id: int, greeting: str = "hi") -> None:
        self.worker_id = worker_id
        self.greeting = greeting

    def run(self) -> None:
        say(f"duck {self.greeting} {self.worker_id}")


class OsloShaped:
    """oslo.service ServiceBase shape: start/stop/wait/reset, no run()."""

    def __init__(self, label: str = "oslo") -> None:
        self.label = label
        self.stopped = threading.Event()

    def start(self) -> None:
        say(f"start {self.label}")

    def wait(self) -> None:
        self.stopped.wait()
        say("wait returned")

    def stop(self) -> None:
        say("stop")
        self.stopped.set()

    def reset(self) -> None:
        say("reset")


class OsloFinishes(OsloShaped):
    """wait() returns by itself: the worker exits 0."""

    def wait(self) -> None:
        say("wait returned")


class Periodic:
    """jumpscale-style: job() every 0.2 s, first run at start."""

    interval = 0.2
    schedule_on_start = True

    def __init__(self) -> None:
        self.count = 0

    def job(self) -> None:
        self.count += 1
        say(f"job {self.count} at {time.monotonic():.3f}")


class SlowPeriodic:
    """job() takes 0.5 s but is due every 0.2 s: runs are skipped, never stacked."""

    interval = "0.2"
    schedule_on_start = False

    def __init__(self) -> None:
        self.active = 0

    def job(self) -> None:
        self.active += 1
        say(f"job start active={self.active} at {time.monotonic():.3f}")
        time.sleep(0.5)  # the work itself, not synchronisation
        say(f"job end at {time.monotonic():.3f}")
        self.active -= 1


class FlakyPeriodic:
    """job() fails every other run: logged, and the schedule goes on."""

    interval = 0.1
    schedule_on_start = True

    def __init__(self) -> None:
        self.count = 0

    def job(self) -> None:
        self.count += 1
        say(f"job {self.count}")
        if self.count % 2:
            raise OSError(f"flaky run {self.count}")


class ShowImports(Service):
    """Reports where pyinit and the dependencies the pyz also carries came from."""

    def run(self) -> None:
        import pyinit

        found = {"pyinit": pyinit.__file__, "path_tail": sys.path[-1]}
        for name in ("psutil", "sdnotify"):
            try:
                module = __import__(name)
                found[name] = module.__file__
            except ImportError as error:
                found[name] = f"ImportError: {error}"
        say("imports", json.dumps(found))


class CronPeriodic:
    """A cron schedule (every minute): needs cronsim, from the pyz when nothing else has it."""

    interval = "* * * * *"

    def __init__(self) -> None:
        say("cron constructed")

    def job(self) -> None:
        say("cron job")


class ChildSignals(Service):
    """Reports the signal dispositions a process started by the service inherits."""

    def run(self) -> None:
        import subprocess

        status = subprocess.run(
            ["cat", "/proc/self/status"], capture_output=True, text=True, check=True
        ).stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        say(f"child SigIgn={fields['SigIgn'].strip()} SigBlk={fields['SigBlk'].strip()}")
