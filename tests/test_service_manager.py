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
import time

import pytest
from support.helpers import (
    SUPPORT_DIR,
    InitProcess,
    assert_no_traceback,
    base_env,
    cmdline,
    descendants,
    is_dead,
    proc_stat,
    stays_true,
    wait_until,
    zombie_children,
)

REPO_ROOT = SUPPORT_DIR.parent.parent

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

    def on_new_worker(service_id, worker_id, service):
        say(f"new {service_id} {worker_id} {service.greeting} {os.getpid()}")

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


def exited(proc: InitProcess, timeout: float = 15) -> int:
    """Exit status, once stdout is read to its end (workers may write until they exit)."""
    code = proc.wait(timeout)
    proc._out.closed.wait(5)
    return code


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
        assert exited(proc) == 0
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
        assert exited(proc) == 0


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
        assert exited(proc) == 0


def test_new_worker_hook_runs_in_each_worker_with_its_service(app):
    """cotyledon calls on_new_worker(service_id, worker_id, service) in the new worker."""
    with start_app(app) as proc:
        workers = hello_lines(proc, 2)
        proc.send(signal.SIGTERM)
        assert exited(proc) == 0
        news = {line for line in proc.stdout_lines if line.startswith("new ")}
        assert news == {f"new printer {i} hello {workers[i]}" for i in (0, 1)}


# ------------------------------------------------------------------- issue 10: fork like cotyledon

FORK_APP = SUPPORT_DIR / "fork_app.py"


def start_fork_app(scenario: str, prefix=()) -> InitProcess:
    """tests/support/fork_app.py (no __main__ guard) running `scenario`."""
    env = base_env({"PYTHONPATH": str(REPO_ROOT)})
    return InitProcess([sys.executable, str(FORK_APP), scenario], prefix=list(prefix), env=env)


def run_lines(proc: InitProcess, count: int, name: str = r"\S+") -> dict[int, int]:
    """worker_id -> pid from the next `run NAME ID PID ...` lines."""
    seen: dict[int, int] = {}
    while len(seen) < count:
        match = proc.expect_line(rf"run {name} (\d+) (\d+).*", 15)
        seen[int(match[1])] = int(match[2])
    return seen


def test_issue_10_a_script_without_main_guard_forks_its_workers():
    """Without `if __name__ == "__main__":` every worker used to start a nested
    ServiceManager and crash-loop on `No module named '__mp_main__'`."""
    with start_fork_app("basic") as proc:
        workers = run_lines(proc, 2, "Echo")
        assert sorted(workers) == [0, 1]
        for pid in workers.values():
            assert proc_stat(pid).ppid == proc.pid  # forked by the manager itself
        proc.send(signal.SIGTERM)
        assert exited(proc) == 0
        assert "terminate hook" in proc.stdout_lines
        assert {"terminate Echo 0", "terminate Echo 1"} <= set(proc.stdout_lines)
        assert_no_traceback(proc.stderr_lines())


def test_issue_10_args_are_never_serialised():
    """A tuple used to arrive as a list and an object as its str() (JSON)."""
    with start_fork_app("objects") as proc:
        proc.expect_line(r"run Echo 0 \d+ tuple,Marker,function", 15)
        proc.send(signal.SIGTERM)
        assert exited(proc) == 0


def test_issue_10_add_takes_factories_and_partials_and_refuses_bad_input():
    """cotyledon's add(): any callable returning a Service; TypeError for a
    non-callable, ValueError for workers < 1; one ServiceManager per process;
    Service.name defaults to the class name."""
    with start_fork_app("factories") as proc:
        proc.expect_lines(
            [
                r"refused TypeError: .*'service' must be a callable.*",
                r"refused ValueError: .*workers.*",
                r"seatbelt .*one.*ServiceManager.*",
                r"default name Echo",
                r"run Echo 0 \d+ str",
                r"run Echo 0 \d+ int",
            ],
            15,
        )
        proc.send(signal.SIGTERM)
        assert exited(proc) == 0
        assert_no_traceback(proc.stderr_lines())


def test_issue_10_worker_hooks_have_cotyledons_arguments_and_call_sites():
    """on_new_worker runs in the new worker with (service_id, worker_id, service);
    on_dead_worker gets -9 for a SIGKILLed worker (it used to get 137)."""
    with start_fork_app("hooks") as proc:
        seen = proc.expect_lines(
            [
                r"new (\S+) 0 Echo in-worker=True",
                r"new (\S+) 1 Echo in-worker=True",
                r"run Echo 0 (\d+) -",
                r"run Echo 1 (\d+) -",
            ],
            15,
        )
        service_id = seen[r"new (\S+) 0 Echo in-worker=True"][1]
        workers = {1: int(seen[r"run Echo 1 (\d+) -"][1])}
        os.kill(workers[1], signal.SIGKILL)
        proc.expect_line(rf"dead {re.escape(service_id)} 1 -9", 15)
        proc.expect_line(r"new \S+ 1 Echo in-worker=True", 15)
        proc.send(signal.SIGTERM)
        assert exited(proc) == 0
        # Workers stopped by the shutdown are not reported as dead workers.
        assert [line for line in proc.stdout_lines if line.startswith("dead ")] == [
            f"dead {service_id} 1 -9"
        ]


def test_issue_10_shutdown_from_a_hook_stops_everything_with_status_0():
    """ServiceManager.shutdown() did not exist: the hook logged an AttributeError
    and the workers kept restarting."""
    with start_fork_app("shutdown") as proc:
        proc.expect_line(r"dead \S+ 0 3", 15)
        assert exited(proc) == 0
        lines = proc.stdout_lines
        assert "terminate hook" in lines
        assert len([line for line in lines if line.startswith("dead ")]) == 1
        assert len([line for line in lines if line.startswith("run short ")]) == 1


def test_issue_10_sigterm_before_run_is_queued_not_fatal():
    """A SIGTERM that arrived before run() killed the manager with 143; cotyledon exits 0."""
    with start_fork_app("early-term") as proc:
        proc.expect_line(r"still alive before run\(\)", 15)
        assert exited(proc) == 0
        assert "terminate hook" in proc.stdout_lines
        assert not [line for line in proc.stdout_lines if line.startswith("run ")]


def test_issue_10_workers_die_with_a_sigkilled_manager():
    """A SIGKILLed manager left its workers running as orphans. Now the kernel
    tells them (PDEATHSIG) and they stop gracefully, as under cotyledon."""
    with start_fork_app("basic") as proc:
        workers = run_lines(proc, 2, "Echo")
        proc.send(signal.SIGKILL)
        assert exited(proc) == -signal.SIGKILL
        wait_until(lambda: all(is_dead(pid) for pid in workers.values()), 10, "workers to die")
        wait_until(
            lambda: {"terminate Echo 0", "terminate Echo 1"} <= set(proc.stdout_lines),
            5,
            lambda: f"terminate() in each worker: {proc.stdout_lines}",
        )


def test_issue_10_sigint_exits_1_at_once_without_terminate():
    """cotyledon: SIGINT is the fast exit: workers exit 1 without terminate(), the manager 1."""
    with start_fork_app("basic") as proc:
        workers = run_lines(proc, 2, "Echo")
        proc.send(signal.SIGINT)
        assert exited(proc) == 1
        wait_until(lambda: all(is_dead(pid) for pid in workers.values()), 10, "workers to die")
        assert not [line for line in proc.stdout_lines if line.startswith("terminate")]


@pytest.mark.parametrize("as_pid1", ["pid1"], indirect=True)
def test_issue_10_as_pid1_orphans_of_workers_are_reaped(as_pid1):
    """The manager as PID 1 of a namespace reaps what its workers leave behind."""
    with start_fork_app("orphans", prefix=as_pid1) as proc:
        run_lines(proc, 1, "Echo")
        proc.expect_line(r"run orphaner 0 \d+", 15)
        proc.expect_line(r"run orphaner 0 \d+", 15)  # restarted: the first one is gone
        wait_until(lambda: not zombie_children(proc.pid), 5, "no zombie below the manager")
        wait_until(
            lambda: not [p for p in descendants(proc.pid) if "sleep" in cmdline(p)],
            5,
            "the orphaned sleeps reaped",
        )
        proc.send(signal.SIGTERM)
        assert exited(proc) == 0


def test_issue_10_the_pyz_at_the_end_of_sys_path_leaves_the_apps_packages_alone(
    pyz_path, tmp_path
):
    """The README's way to `import pyinit` from the pyz: a .pth file, so that the
    application's own psutil wins over the copy inside the pyz (PYTHONPATH broke it).
    Run by the system's python, where pyinit is not installed."""
    python = "/usr/bin/python3"
    if not os.path.exists(python):
        pytest.skip("no /usr/bin/python3")
    (tmp_path / "pyinit.pth").write_text(f"{pyz_path}\n")
    own = tmp_path / "app" / "psutil"
    own.mkdir(parents=True)
    (own / "__init__.py").write_text("OWNER = 'the application'\n")
    code = (
        "import site, sys, runpy\n"
        f"site.addsitedir({str(tmp_path)!r})\n"  # as python does for site-packages' .pth
        "import psutil, pyinit\n"
        "print('psutil', psutil.OWNER, flush=True)\n"
        "print('pyinit', pyinit.__file__, flush=True)\n"
        f"sys.argv = [{str(FORK_APP)!r}, 'basic']\n"
        f"runpy.run_path({str(FORK_APP)!r}, run_name='__main__')\n"
    )
    env = base_env({"PYTHONPATH": str(tmp_path / "app")})
    with InitProcess([python, "-c", code], env=env, cwd=tmp_path) as proc:
        proc.expect_line(r"psutil the application", 15)
        assert proc.expect_line(r"pyinit (.*)", 15)[1].startswith(str(pyz_path))
        run_lines(proc, 2, "Echo")
        proc.send(signal.SIGTERM)
        assert exited(proc) == 0


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGALRM"])
def test_issue_10_graceful_shutdown_timeout_and_sigalrm_end_a_hung_stop_with_status_1(stop):
    """cotyledon: terminate() hung past graceful_shutdown_timeout (1 s here), or a
    SIGALRM: the instantaneous exit, status 1, nothing left behind."""
    with start_fork_app("hang") as proc:
        workers = run_lines(proc, 2, "hang")
        started = time.monotonic()
        proc.send(getattr(signal, stop))
        assert exited(proc) == 1
        assert time.monotonic() - started < (3 if stop == "SIGTERM" else 1)
        wait_until(lambda: all(is_dead(pid) for pid in workers.values()), 5, "workers gone")


def test_issue_10_a_worker_added_from_another_thread_outlives_that_thread():
    """PDEATHSIG fires when the forking *thread* exits: reconfigure() from a
    short-lived thread must not fork there, or its new worker is stopped at once."""
    with start_fork_app("thread-scale") as proc:
        run_lines(proc, 1, "Echo")
        proc.send(signal.SIGHUP)  # the reload hook scales to 2 from a thread
        proc.expect_line("scaling thread gone", 15)
        worker = int(proc.expect_line(r"run Echo 1 (\d+) .*", 15)[1])
        stays_true(
            lambda: not is_dead(worker) and "terminate Echo 1" not in proc.stdout_lines,
            1.0,
            "worker 1 keeps running after the thread that asked for it ended",
        )
        proc.send(signal.SIGTERM)
        assert exited(proc) == 0
