"""Readiness probes (pyinit.supervise.probes) on a real loop, real sockets, real processes.

The test plays the supervisor's part for exec checks: `spawn_check` starts
the command with posix_spawn, watches a pidfd on the loop, reaps exactly that
pid with os.waitpid and hands the status to `probe.child_exited`, as the
supervisor's reaper does.

"Nothing polls once ready" is checked on the loop itself: no live timer in
`loop._timers`, no writer, and no fd left open.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyinit.config.model import Readiness, ReadinessKind
from pyinit.core.logs import Log
from pyinit.core.loop import Loop
from pyinit.core.model import ExitStatus
from pyinit.supervise.probes import Probe

INTERVAL = 0.05


def run_until(loop: Loop, predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Run the loop until `predicate()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"loop: condition not met within {timeout} s")
        wake = loop.call_at(deadline, lambda: None)  # so a silent loop still returns
        loop._run_once()
        wake.cancel()


def run_for(loop: Loop, seconds: float) -> None:
    """Let the loop run `seconds` (whatever it has to do in that time)."""
    done: list[bool] = []
    timer = loop.call_later(seconds, lambda: done.append(True))
    run_until(loop, lambda: done, timeout=seconds + 5)
    timer.cancel()


def live_timers(loop: Loop) -> list[object]:
    return [t for t in loop._timers if not t.cancelled]


def open_fds() -> set[str]:
    """The sockets this process holds, by inode (`socket:[123]`).

    Sockets, not fd numbers: other tests' reader threads in this pytest
    process may still be closing pipes while these run.
    """
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def assert_idle(loop: Loop) -> None:
    """Nothing left that could wake the loop: no timer, no fd watched."""
    assert live_timers(loop) == []
    assert loop._writers == {}
    assert loop._readers == {}


@pytest.fixture
def loop() -> Loop:
    return Loop(Log("debug"))


class Ready:
    """on_ready, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def no_spawn(argv: list[str]) -> int:
    raise AssertionError(f"no check should be spawned, got {argv}")


class Checks:
    """The supervisor's side of exec checks: spawn, then reap through a pidfd."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.probe: Probe | None = None
        self.running: dict[int, int] = {}  # pid -> pidfd
        self.spawned: list[int] = []
        self.results: list[tuple[int, ExitStatus, bool]] = []  # pid, status, probe's answer
        self.most_at_once = 0

    def spawn(self, argv: list[str]) -> int:
        pid = os.posix_spawnp(argv[0], argv, os.environ)
        pidfd = os.pidfd_open(pid)
        self.running[pid] = pidfd
        self.spawned.append(pid)
        self.most_at_once = max(self.most_at_once, len(self.running))
        self.loop.add_reader(pidfd, lambda: self._reap(pid))
        return pid

    def _reap(self, pid: int) -> None:
        pidfd = self.running.pop(pid)
        self.loop.remove_reader(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        exit_status = ExitStatus.from_wait_status(status)
        assert self.probe is not None
        self.results.append((pid, exit_status, self.probe.child_exited(pid, exit_status)))

    def close(self) -> None:
        for pid, pidfd in list(self.running.items()):
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        self.running.clear()


@pytest.fixture
def checks(loop: Loop) -> Iterator[Checks]:
    tracker = Checks(loop)
    yield tracker
    tracker.close()


def probe_for(
    loop: Loop,
    readiness: Readiness,
    ready: Ready,
    spawn: Callable[[list[str]], int] = no_spawn,
    attempt_timeout: float | None = None,
) -> Probe:
    return Probe(
        loop,
        readiness,
        on_ready=ready,
        spawn_check=spawn,
        log=Log("debug"),
        attempt_timeout=attempt_timeout,
    )


# -- tcp ------------------------------------------------------------------------


def test_tcp_is_ready_once_the_port_listens_and_not_before(loop: Loop) -> None:
    # Bound but not listening: connects are refused, and the port is ours.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    fds = open_fds()
    ready = Ready()
    readiness = Readiness(kind=ReadinessKind.TCP, port=port, interval=INTERVAL)
    probe = probe_for(loop, readiness, ready)
    try:
        probe.start()
        run_until(loop, lambda: probe.attempts >= 4)
        assert ready.calls == 0 and not probe.ready
        assert len(live_timers(loop)) == 1  # the next attempt, nothing more

        server.listen(1)
        run_until(loop, lambda: ready.calls)
        assert probe.ready
        assert_idle(loop)
        assert open_fds() == fds
        # It really connected: the handshake is waiting in the listener's queue.
        server.settimeout(1)
        conn, _ = server.accept()
        conn.close()
        # Ready is final: more loop time calls nothing again.
        run_for(loop, 3 * INTERVAL)
        assert ready.calls == 1
    finally:
        probe.cancel()
        server.close()


def test_tcp_by_host_name(loop: Loop) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    ready = Ready()
    readiness = Readiness(
        kind=ReadinessKind.TCP, host="localhost", port=server.getsockname()[1], interval=INTERVAL
    )
    probe = probe_for(loop, readiness, ready)
    try:
        probe.start()
        run_until(loop, lambda: ready.calls)
        assert_idle(loop)
    finally:
        probe.cancel()
        server.close()


def test_tcp_attempt_that_gets_no_answer_times_out_and_retries(loop: Loop) -> None:
    """A full accept queue drops SYNs, so the connect hangs: the attempt
    timeout ends it, and a later attempt succeeds once there is room."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the backlog of 0 (+1)
    ready = Ready()
    readiness = Readiness(kind=ReadinessKind.TCP, port=port, interval=INTERVAL)
    probe = probe_for(loop, readiness, ready, attempt_timeout=0.2)
    try:
        probe.start()
        run_until(loop, lambda: probe.attempts >= 2)
        assert ready.calls == 0
        conn, _ = server.accept()  # room again
        conn.close()
        run_until(loop, lambda: ready.calls)
        assert_idle(loop)
    finally:
        probe.cancel()
        filler.close()
        server.close()


def test_cancel_during_a_connect_leaves_no_fd_and_no_timer(loop: Loop) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    fds = open_fds()
    ready = Ready()
    readiness = Readiness(kind=ReadinessKind.TCP, port=server.getsockname()[1], interval=INTERVAL)
    probe = probe_for(loop, readiness, ready)
    try:
        probe.start()  # connect() in progress: a socket open and watched
        assert len(open_fds()) == len(fds) + 1
        assert len(loop._writers) == 1
        probe.cancel()
        assert open_fds() == fds
        assert_idle(loop)
        server.listen(1)  # a listener now must not wake a cancelled probe
        run_for(loop, 3 * INTERVAL)
        assert ready.calls == 0
    finally:
        server.close()


# -- file -------------------------------------------------------------------------


def test_file_is_ready_when_it_appears(loop: Loop, tmp_path: Path) -> None:
    flag = tmp_path / "ready.flag"
    ready = Ready()
    probe = probe_for(
        loop, Readiness(kind=ReadinessKind.FILE, path=str(flag), interval=INTERVAL), ready
    )
    probe.start()
    run_until(loop, lambda: probe.attempts >= 3)
    assert ready.calls == 0
    flag.touch()
    run_until(loop, lambda: ready.calls)
    assert ready.calls == 1
    assert_idle(loop)


def test_file_already_there_is_ready_at_start(loop: Loop, tmp_path: Path) -> None:
    flag = tmp_path / "ready.flag"
    flag.touch()
    ready = Ready()
    probe = probe_for(loop, Readiness(kind=ReadinessKind.FILE, path=str(flag), interval=60), ready)
    probe.start()
    assert ready.calls == 1 and probe.attempts == 1
    assert_idle(loop)


def test_cancelled_file_probe_never_fires(loop: Loop, tmp_path: Path) -> None:
    flag = tmp_path / "ready.flag"
    ready = Ready()
    probe = probe_for(
        loop, Readiness(kind=ReadinessKind.FILE, path=str(flag), interval=INTERVAL), ready
    )
    probe.start()
    assert len(live_timers(loop)) == 1
    probe.cancel()
    assert_idle(loop)
    flag.touch()
    probe.start()  # a cancelled probe stays cancelled
    assert_idle(loop)
    assert ready.calls == 0


# -- exec ---------------------------------------------------------------------------


def test_exec_fails_then_succeeds_one_check_at_a_time(
    loop: Loop, checks: Checks, tmp_path: Path
) -> None:
    flag = tmp_path / "up"
    readiness = Readiness(
        kind=ReadinessKind.EXEC,
        command=("sh", "-c", f'sleep 0.02; test -e "{flag}"'),
        interval=INTERVAL,
    )
    ready = Ready()
    probe = probe_for(loop, readiness, ready, checks.spawn)
    checks.probe = probe
    probe.start()
    run_until(loop, lambda: len(checks.results) >= 3)
    assert ready.calls == 0
    assert all(status.code == 1 and ours for _, status, ours in checks.results)
    flag.touch()
    run_until(loop, lambda: ready.calls)
    assert checks.results[-1][1].code == 0
    assert checks.most_at_once == 1  # never two checks at once
    assert len(checks.spawned) == len(checks.results)  # every check was reaped
    assert_idle(loop)


def test_exec_check_that_cannot_start_is_retried(loop: Loop, tmp_path: Path) -> None:
    """The supervisor's spawn_check returns 0 (or raises) when the command is missing."""
    answers: list[object] = [0, OSError(2, "No such file or directory"), 0]
    ready = Ready()

    def spawn(argv: list[str]) -> int:
        answer = answers.pop(0) if answers else 0
        if isinstance(answer, OSError):
            raise answer
        assert isinstance(answer, int)
        return answer

    readiness = Readiness(kind=ReadinessKind.EXEC, command=("missing",), interval=INTERVAL)
    probe = probe_for(loop, readiness, ready, spawn)
    probe.start()
    run_until(loop, lambda: probe.attempts >= 4)
    assert ready.calls == 0
    assert probe.child_exited(0, ExitStatus(0, None)) is False  # 0 is never a check
    assert len(live_timers(loop)) == 1
    probe.cancel()
    assert_idle(loop)


def test_exec_check_that_hangs_is_killed_and_retried(loop: Loop, checks: Checks) -> None:
    readiness = Readiness(kind=ReadinessKind.EXEC, command=("sleep", "30"), interval=INTERVAL)
    ready = Ready()
    probe = probe_for(loop, readiness, ready, checks.spawn, attempt_timeout=0.2)
    checks.probe = probe
    probe.start()
    run_until(loop, lambda: len(checks.results) >= 1 and len(checks.spawned) >= 2)
    pid, status, ours = checks.results[0]
    assert (status.signal, ours) == (signal.SIGKILL, True)
    assert checks.most_at_once == 1
    assert ready.calls == 0
    probe.cancel()


def test_cancel_kills_the_running_check_and_forgets_it(loop: Loop, checks: Checks) -> None:
    readiness = Readiness(kind=ReadinessKind.EXEC, command=("sleep", "30"), interval=INTERVAL)
    ready = Ready()
    probe = probe_for(loop, readiness, ready, checks.spawn)
    checks.probe = probe
    probe.start()
    assert len(checks.running) == 1
    probe.cancel()
    assert live_timers(loop) == []
    # Its exit still reaches the probe, which says it is not its own any more.
    run_until(loop, lambda: checks.results)
    pid, status, ours = checks.results[0]
    assert pid == checks.spawned[0]
    assert status.signal == signal.SIGKILL
    assert ours is False
    assert ready.calls == 0
    assert_idle(loop)


def test_exit_of_a_stranger_is_not_the_probes(loop: Loop, checks: Checks) -> None:
    readiness = Readiness(kind=ReadinessKind.EXEC, command=("sleep", "30"), interval=INTERVAL)
    probe = probe_for(loop, readiness, Ready(), checks.spawn)
    checks.probe = probe
    probe.start()
    assert probe.child_exited(checks.spawned[0] + 100_000, ExitStatus(0, None)) is False
    assert not probe.ready
    probe.cancel()


# -- none, notify ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ReadinessKind.NONE, ReadinessKind.NOTIFY])
def test_none_and_notify_need_nothing_from_a_probe(loop: Loop, kind: ReadinessKind) -> None:
    ready = Ready()
    probe = probe_for(loop, Readiness(kind=kind), ready)
    probe.start()
    assert ready.calls == 0 and probe.attempts == 0
    assert_idle(loop)
    probe.cancel()
