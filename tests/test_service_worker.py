"""The child side of Python services: `pyinit.python.command.command_line()` and its worker.

Every test runs a real worker process from the command line the supervisor
would spawn, with the example classes of tests/support/services_examples.py
on its PYTHONPATH, and talks to it with real signals and a real notify
socket. The supervisor itself is not involved: this is its contract with
the worker (argv, environment, signals in, exit status and sd_notify out).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from support.helpers import (
    SUPPORT_DIR,
    InitProcess,
    base_env,
    cmdline,
    proc_stat,
    stays_true,
    wait_until,
)

import pyinit
from pyinit.python.command import (
    BOOTSTRAP,
    ENV_SERVICE_ARGS,
    ENV_SERVICE_NAME,
    ENV_WORKER_ID,
    command_line,
)
from pyinit.python.shapes import Periodic, parse_interval
from pyinit.python.worker import USEC_INFINITY, Worker, exit_code

StartWorker = Callable[..., InitProcess]


@pytest.fixture
def start_worker(start_init: Callable[..., InitProcess]) -> StartWorker:
    """Start worker `worker_id` of `service` running `target`, as the supervisor would."""

    def start(
        target: str,
        *,
        service: str = "svc",
        worker_id: int = 0,
        args: tuple[object, ...] = (),
        kwargs: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> InitProcess:
        argv, extra = command_line(target, service, worker_id, args, kwargs or {})
        full = base_env({"PYTHONPATH": str(SUPPORT_DIR), **extra, **(env or {})})
        return start_init(argv, env=full)

    return start


class NotifyListener:
    """A bound AF_UNIX datagram socket standing in for pyinit's downstream notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)

    def receive(self, timeout: float = 5.0) -> str:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no datagram on {self.address} within {timeout}s") from None

    def pending(self) -> list[str]:
        """Datagrams already queued (after the sender exited: all it ever sent)."""
        self.sock.setblocking(False)
        found = []
        while True:
            try:
                found.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return found


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[NotifyListener]:
    """A listener on a filesystem path (short: sun_path is 108 bytes) or an @abstract name."""
    with tempfile.TemporaryDirectory(prefix="pit-", dir="/tmp") as tmp:
        if request.param == "path":
            address = os.path.join(tmp, "notify")
        else:
            address = f"@pyinit-test-{os.getpid()}-{os.path.basename(tmp)}"
        listener = NotifyListener(address)
        yield listener
        listener.sock.close()


def stopped_within(proc: InitProcess, sig: int, timeout: float = 5.0) -> int:
    proc.send(sig)
    return proc.wait(timeout)


# --------------------------------------------------------------------------- the command line


def test_command_line_shape() -> None:
    argv, env = command_line("app.jobs:Indexer", "indexer", 2, (1, "x"), {"batch": 100})
    root = str(Path(pyinit.__file__).resolve().parent.parent)
    assert argv == [sys.executable, "-c", BOOTSTRAP, root, "indexer[2]", "app.jobs:Indexer"]
    assert env[ENV_WORKER_ID] == "2"
    assert env[ENV_SERVICE_NAME] == "indexer"
    assert json.loads(env[ENV_SERVICE_ARGS]) == {"args": [1, "x"], "kwargs": {"batch": 100}}


def test_run_gets_worker_id_args_and_a_readable_title(start_worker: StartWorker) -> None:
    proc = start_worker(
        "services_examples:Recorder",
        service="indexer",
        worker_id=2,
        args=(1, "x"),
        kwargs={"batch": 5},
    )
    match = proc.expect_line(r"run worker_id=(\d+) env=(\d+) leaked=(\w+)")
    assert match.group(1) == match.group(2) == "2"
    assert match.group(3) == "False", "PYINIT_SERVICE_ARGS is plumbing, not for the app"
    payload = proc.expect_line(r"payload (.*)").group(1)
    assert json.loads(payload) == {"args": [1, "x"], "kwargs": {"batch": 5}}
    stat = proc_stat(proc.pid)
    assert stat is not None and stat.comm == "indexer[2]"
    assert "indexer[2]" in cmdline(proc.pid)
    assert stopped_within(proc, signal.SIGTERM) == 0
    assert "terminate" in proc.stdout_lines


def test_long_title_is_cut_to_the_kernel_limit(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:Recorder", service="a-very-long-service-name")
    proc.expect_line(r"run .*")
    stat = proc_stat(proc.pid)
    assert stat is not None and stat.comm == "a-very-long-ser"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_each_stop_signal_calls_terminate_then_exit_0(start_worker: StartWorker, sig: int) -> None:
    proc = start_worker("services_examples:Recorder")
    proc.expect_line(r"run .*")
    assert stopped_within(proc, sig) == 0
    proc.expect_line("terminate")
    assert not [line for line in proc.stderr_lines() if "Traceback" in line]


def test_run_returning_does_not_end_the_worker(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:Returns")
    proc.expect_line("run returned")
    stays_true(lambda: proc.poll() is None, 0.3, "worker alive after run() returned")
    assert stopped_within(proc, signal.SIGTERM) == 0
    proc.expect_line("terminate")


def test_systemexit_from_terminate_sets_the_status(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:ExitThree")
    proc.expect_line("running")
    assert stopped_within(proc, signal.SIGTERM) == 3


def test_exception_in_run_logs_traceback_and_exits_1(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:Boom", service="boom")
    assert proc.wait() == 1
    stderr = "\n".join(proc.stderr_lines())
    assert "Traceback (most recent call last)" in stderr
    assert "RuntimeError: boom from run" in stderr
    assert re.search(r"^pyinit: error: boom\[0\]: run\(\) raised RuntimeError", stderr, re.M)


def test_json_log_format_carries_the_traceback(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:Boom", env={"PYINIT_LOG_FORMAT": "json"})
    assert proc.wait() == 1
    records = [json.loads(line) for line in proc.stderr_lines() if line.startswith("{")]
    assert records, proc.stderr_lines()
    assert records[0]["level"].lower() == "error"
    assert records[0]["service"] == "svc" and records[0]["worker"] == 0
    assert "RuntimeError: boom from run" in records[0]["traceback"]


def test_sighup_calls_reload_and_the_worker_keeps_running(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:Recorder")
    proc.expect_line(r"run .*")
    for _ in range(2):
        proc.send(signal.SIGHUP)
        proc.expect_line("reload")
        assert proc.poll() is None
    assert stopped_within(proc, signal.SIGTERM) == 0


def test_sighup_without_reload_stops_with_status_0(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:NoReload")
    proc.expect_line("running")
    assert stopped_within(proc, signal.SIGHUP) == 0
    proc.expect_line("terminate")  # a graceful stop, as cotyledon's default reload() does


def test_exception_in_reload_exits_1(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:BadReload")
    proc.expect_line("running")
    assert stopped_within(proc, signal.SIGHUP) == 1
    assert "ValueError: bad config" in "\n".join(proc.stderr_lines())


def test_bare_service_waits_for_the_stop_signal_and_uses_its_name(
    start_worker: StartWorker,
) -> None:
    proc = start_worker("services_examples:Bare", worker_id=1)
    wait_until(
        lambda: (s := proc_stat(proc.pid)) is not None and s.comm == "bare-named[1]",
        message="the class's `name` in the process title",
    )
    stays_true(lambda: proc.poll() is None, 0.3, "a Service with no run() keeps running")
    assert stopped_within(proc, signal.SIGTERM) == 0


def test_duck_typed_class_with_run(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:Duck", worker_id=1, kwargs={"greeting": "hello"})
    proc.expect_line("duck hello 1")
    assert stopped_within(proc, signal.SIGTERM) == 0


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("services_examples:Missing", "AttributeError"),
        ("no_such_module_here:X", "ModuleNotFoundError"),
        ("threading:Event", "TypeError: threading:Event: not a service class"),
        ("services_examples", "ValueError: target 'services_examples' is not module:Class"),
    ],
)
def test_a_target_that_cannot_start_exits_1(
    start_worker: StartWorker, target: str, error: str
) -> None:
    proc = start_worker(target)
    assert proc.wait() == 1
    stderr = "\n".join(proc.stderr_lines())
    assert f"cannot start {target}" in stderr and error in stderr


def test_bad_environment_is_a_usage_error(start_init: Callable[..., InitProcess]) -> None:
    argv, extra = command_line("services_examples:Recorder", "svc", 0, (), {})
    extra[ENV_SERVICE_ARGS] = "not json"
    proc = start_init(argv, env=base_env({"PYTHONPATH": str(SUPPORT_DIR), **extra}))
    assert proc.wait() == 2
    assert proc.stderr_lines()[0].startswith("pyinit worker: error: bad worker environment")


def test_children_of_the_service_inherit_no_ignored_or_blocked_signal(
    start_worker: StartWorker,
) -> None:
    proc = start_worker("services_examples:ChildSignals")
    match = proc.expect_line(r"child SigIgn=([0-9a-f]+) SigBlk=([0-9a-f]+)")
    ignored, blocked = int(match.group(1), 16), int(match.group(2), 16)
    assert blocked == 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} ignored in a grandchild"
    assert stopped_within(proc, signal.SIGTERM) == 0


# --------------------------------------------------------------------------- sd_notify


def test_notify_ready_sends_a_datagram(
    start_worker: StartWorker, notify_socket: NotifyListener
) -> None:
    proc = start_worker("services_examples:Ready", env={"NOTIFY_SOCKET": notify_socket.address})
    assert notify_socket.receive() == "READY=1"
    assert notify_socket.receive() == "STATUS=indexing 3 files"
    proc.expect_line("ready sent True True")
    assert stopped_within(proc, signal.SIGTERM) == 0
    assert notify_socket.pending() == [], "no STOPPING=1 without graceful_shutdown_timeout"


def test_notify_without_socket_is_a_no_op(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:Ready")
    proc.expect_line("ready sent False False")
    assert stopped_within(proc, signal.SIGTERM) == 0


@pytest.mark.parametrize("notify_socket", ["path"], indirect=True)
def test_graceful_shutdown_timeout_extends_then_expires(
    start_worker: StartWorker, notify_socket: NotifyListener
) -> None:
    proc = start_worker("services_examples:SlowStop", env={"NOTIFY_SOCKET": notify_socket.address})
    proc.expect_line("running")
    sent = time.monotonic()
    proc.send(signal.SIGTERM)
    assert notify_socket.receive() == "STOPPING=1\nEXTEND_TIMEOUT_USEC=1000000"
    proc.expect_line("terminate")
    assert proc.wait(5) == 1
    elapsed = time.monotonic() - sent
    assert 0.9 <= elapsed < 4, f"exited {elapsed:.2f}s after SIGTERM, timeout is 1s"
    assert "graceful_shutdown_timeout=1s" in "\n".join(proc.stderr_lines())


@pytest.mark.parametrize("notify_socket", ["path"], indirect=True)
def test_graceful_shutdown_timeout_0_asks_for_infinity(
    start_worker: StartWorker, notify_socket: NotifyListener
) -> None:
    proc = start_worker(
        "services_examples:WaitForever", env={"NOTIFY_SOCKET": notify_socket.address}
    )
    proc.expect_line("running")
    assert stopped_within(proc, signal.SIGTERM) == 0
    assert notify_socket.receive() == f"STOPPING=1\nEXTEND_TIMEOUT_USEC={USEC_INFINITY}"
    assert USEC_INFINITY == 18446744073709551615


# --------------------------------------------------------------------------- oslo.service shape


def test_oslo_shaped_class_runs_unchanged(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:OsloShaped", kwargs={"label": "api"})
    proc.expect_line("start api")
    proc.send(signal.SIGHUP)
    proc.expect_line("reset")
    assert proc.poll() is None
    assert stopped_within(proc, signal.SIGTERM) == 0
    assert proc.stdout_lines[-2:] == ["stop", "wait returned"]


def test_oslo_wait_returning_ends_the_worker_with_0(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:OsloFinishes")
    assert proc.wait() == 0
    assert proc.stdout_lines == ["start oslo", "wait returned"]


# --------------------------------------------------------------------------- periodic shape


def job_times(lines: list[str], pattern: str) -> list[float]:
    return [float(m.group(1)) for line in lines if (m := re.fullmatch(pattern, line))]


def test_periodic_job_runs_every_interval(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:Periodic")
    first = proc.expect_line(r"job 1 at ([\d.]+)")  # schedule_on_start: at once
    proc.expect_line(r"job 6 at [\d.]+", timeout=5)
    assert stopped_within(proc, signal.SIGTERM) == 0
    times = job_times(proc.stdout_lines, r"job \d+ at ([\d.]+)")
    assert times[0] == float(first.group(1))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.1 <= gap <= 0.45 for gap in gaps), f"interval 0.2s, gaps {gaps}"
    # Fixed rate, not fixed delay: six runs span five intervals.
    assert 0.9 <= times[5] - times[0] <= 1.4, times


def test_periodic_job_overlap_is_skipped_not_stacked(start_worker: StartWorker) -> None:
    proc = start_worker("services_examples:SlowPeriodic")
    proc.expect_line(r"job end at [\d.]+", timeout=5)
    proc.expect_line(r"job end at [\d.]+", timeout=5)
    proc.expect_line(r"job start active=1 at [\d.]+", timeout=5)  # third run in progress
    assert stopped_within(proc, signal.SIGTERM) == 0
    lines = proc.stdout_lines
    assert all("active=1" in line for line in lines if line.startswith("job start"))
    assert lines[-1].startswith("job end"), "the stop waits for the run in progress"
    starts = job_times(lines, r"job start active=\d+ at ([\d.]+)")
    ends = job_times(lines, r"job end at ([\d.]+)")
    assert len(starts) == len(ends) == 3
    for start, previous_end in zip(starts[1:], ends, strict=False):
        assert start >= previous_end, "a run started while the previous one was going"
    # Due every 0.2s, each run takes 0.5s: runs land on every third slot.
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(0.5 <= gap <= 1.0 for gap in gaps), gaps
    assert "skipped" in "\n".join(proc.stderr_lines())


def test_periodic_job_exception_is_logged_and_the_schedule_goes_on(
    start_worker: StartWorker,
) -> None:
    proc = start_worker("services_examples:FlakyPeriodic")
    proc.expect_line("job 4")
    assert proc.poll() is None
    assert stopped_within(proc, signal.SIGTERM) == 0
    stderr = "\n".join(proc.stderr_lines())
    assert "OSError: flaky run 1" in stderr and "OSError: flaky run 3" in stderr


def test_interval_forms() -> None:
    assert parse_interval(2) == (2.0, None)
    assert parse_interval("0.5") == (0.5, None)
    assert parse_interval("*/5 * * * *") == (None, "*/5 * * * *")
    for bad in (0, -1, True, "every day", "* * * *", None):
        with pytest.raises(ValueError):
            parse_interval(bad)


def test_cron_schedule_waits_for_the_next_matching_minute() -> None:
    class Hourly:
        interval = "0 * * * *"

        def job(self) -> None:
            pass

    shape = Periodic(Worker("cron", 0, "x:Hourly", (), {}), Hourly())
    shape.start()
    delay = shape.timeout()
    assert delay is not None
    now = time.localtime()
    expected = 3600 - now.tm_min * 60 - now.tm_sec
    assert abs(delay - expected) <= 2, (delay, expected)


def test_exit_code_follows_sys_exit() -> None:
    assert exit_code(SystemExit()) == 0
    assert exit_code(SystemExit(3)) == 3
    assert exit_code(SystemExit(256 + 7)) == 7
    assert exit_code(SystemExit("fatal: message")) == 1


# --------------------------------------------------------------------------- from the pyz


def pyz_command_line(pyz: Path, target: str) -> tuple[list[str], dict[str, str]]:
    """command_line() as computed by a pyinit imported from the pyz, by Debian's python3."""
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    program = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        " import pyinit, pyinit.python.command as w;"
        "print(json.dumps([pyinit.__file__, w.command_line(sys.argv[2], 'imports', 0, (), {})]))"
    )
    done = subprocess.run(
        [python, "-I", "-c", program, str(pyz), target],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pyinit_file, (argv, env) = json.loads(done.stdout)
    assert pyinit_file.startswith(str(pyz) + os.sep), pyinit_file
    return argv, env


@pytest.mark.parametrize("shadow", [False, True], ids=["pyz-deps", "app-deps-win"])
def test_worker_runs_from_the_pyz(
    pyz_path: Path,
    start_init: Callable[..., InitProcess],
    tmp_path: Path,
    shadow: bool,
) -> None:
    """pyinit comes from the pyz, yet the app's own psutil/sdnotify win over the pyz's copies."""
    argv, extra = pyz_command_line(pyz_path, "services_examples:ShowImports")
    assert argv[3] == str(pyz_path)
    path = [str(SUPPORT_DIR)]
    if shadow:
        for name in ("psutil", "sdnotify"):
            (tmp_path / f"{name}.py").write_text(f"# the application's own {name}\n")
        path.insert(0, str(tmp_path))
    proc = start_init(argv, env=base_env({"PYTHONPATH": os.pathsep.join(path), **extra}))
    found = json.loads(proc.expect_line(r"imports (.*)").group(1))
    assert found["pyinit"].startswith(str(pyz_path) + os.sep)
    assert found["path_tail"] == str(pyz_path), "the pyz goes last on sys.path"
    if shadow:
        assert found["psutil"] == str(tmp_path / "psutil.py")
        assert found["sdnotify"] == str(tmp_path / "sdnotify.py")
    else:  # Debian's python3 has no sdnotify: the pyz's copy is found, at the end
        assert found["sdnotify"].startswith(str(pyz_path) + os.sep), found
    assert stopped_within(proc, signal.SIGTERM) == 0


def test_cron_periodic_from_the_pyz_uses_its_cronsim(
    pyz_path: Path, start_init: Callable[..., InitProcess]
) -> None:
    argv, extra = pyz_command_line(pyz_path, "services_examples:CronPeriodic")
    proc = start_init(argv, env=base_env({"PYTHONPATH": str(SUPPORT_DIR), **extra}))
    proc.expect_line("cron constructed")
    stays_true(lambda: proc.poll() is None, 0.3, "cron worker running (cronsim imported)")
    assert stopped_within(proc, signal.SIGTERM) == 0, proc.stderr_lines()
