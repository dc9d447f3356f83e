"""`pyinit.ServiceManager`: an application that is its own entrypoint.

The app script below is what a cotyledon user writes, with the import
changed. It runs as a real process (and as PID 1 of a PID namespace); the
tests watch its output and its workers in /proc.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap

import pytest
from support.helpers import InitProcess, descendants, wait_until

APP = textwrap.dedent(
    """
    import os
    from pyinit import Service, ServiceManager

    def say(line):
        # One write(2) per line: workers share the pipe, print() may split a line.
        os.write(1, (line + "\\n").encode())

    class Printer(Service):
        name = "printer"

        def __init__(self, worker_id, greeting="hi"):
            super().__init__(worker_id)
            self.greeting = greeting

        def run(self):
            say(f"{self.greeting} {self.worker_id} {os.getpid()}")

        def terminate(self):
            say(f"terminate {self.worker_id}")

    def on_new_worker(service_id, worker_id):
        say(f"new {service_id} {worker_id}")

    if __name__ == "__main__":
        manager = ServiceManager(graceful_shutdown_timeout=5)
        printer = manager.add(Printer, workers=2, kwargs={"greeting": "hello"})
        manager.register_hooks(
            on_new_worker=on_new_worker,
            on_reload=lambda: manager.reconfigure(printer, 3),
            on_terminate=lambda: say("terminating"),
        )
        manager.run()
    """
)


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


def start_app(app, prefix=()) -> InitProcess:
    env = dict(os.environ)
    env.pop("PYINIT_SERVICES", None)
    return InitProcess([sys.executable, str(app)], prefix=list(prefix), env=env, cwd=app.parent)


def hello_lines(proc: InitProcess, count: int) -> dict[int, int]:
    """worker_id -> pid from `hello ID PID` lines."""
    seen: dict[int, int] = {}
    while len(seen) < count:
        line = proc.next_line(15)
        match = re.fullmatch(r"hello (\d+) (\d+)", line)
        if match:
            seen[int(match[1])] = int(match[2])
    return seen


@pytest.mark.parametrize("prefix", [(), ("unshare", "--pid", "--fork", "--mount-proc")])
def test_workers_get_their_ids_and_kwargs_and_sigterm_exits_0(app, prefix):
    if prefix and os.geteuid() != 0:
        pytest.skip("unshare --pid needs root")
    with start_app(app, prefix) as proc:
        workers = hello_lines(proc, 2)
        assert sorted(workers) == [0, 1]
        proc.send(signal.SIGTERM)
        assert proc.wait(15) == 0
        lines = proc.stdout_lines
        assert "terminating" in lines
        assert {"terminate 0", "terminate 1"} <= set(lines)


def test_a_dead_worker_comes_back_with_the_same_id(app):
    with start_app(app) as proc:
        workers = hello_lines(proc, 2)
        os.kill(workers[1], signal.SIGKILL)
        again = hello_lines(proc, 1)
        assert list(again) == [1]
        assert again[1] != workers[1]
        proc.send(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_reload_hook_can_reconfigure_the_number_of_workers(app):
    with start_app(app) as proc:
        hello_lines(proc, 2)
        proc.send(signal.SIGHUP)
        # Printer has no reload(): 0 and 1 start afresh, and the hook adds 2.
        after = hello_lines(proc, 3)
        assert sorted(after) == [0, 1, 2]
        wait_until(
            lambda: len([p for p in descendants(proc.pid) if p in after.values()]) == 3,
            10,
            "three printer workers alive",
        )
        proc.send(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_new_worker_hook_runs_in_the_manager_for_each_start(app):
    with start_app(app) as proc:
        hello_lines(proc, 2)
        proc.send(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert {"new printer 0", "new printer 1"} <= set(proc.stdout_lines)
