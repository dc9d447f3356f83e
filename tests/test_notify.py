"""sd_notify both ways (pyinit.core.notify), with real sockets and real clients.

Upstream: pyinit's messages reach a datagram socket the test binds (a path
and an abstract `@` name), in exactly the fields systemd reads. Downstream:
the `sdnotify` package, `systemd-notify` and a plain python socket talk to
pyinit's socket; the sender pid must come from the kernel, whatever the
message says. resolve_sender places senders in a real process tree.

systemd-notify (systemd 252 here), for the record of what works:
- `systemd-notify --ready` with NOTIFY_SOCKET in its environment is enough.
  It sends READY=1, then BARRIER=1 carrying a pipe fd, and waits (up to 5 s,
  then exits 1 "Failed to invoke barrier") until the receiver closes that
  fd. Downstream closes every fd it receives, so the call returns at once.
- As root it sends with the credentials of the process that invoked it (its
  parent, e.g. the service's shell; `--pid=auto`), so the message is placed
  even after systemd-notify itself is gone. Without privileges it falls
  back to its own pid, and the barrier keeps it alive until we have read
  the message, so resolve_sender still finds it.
- `--pid=N` only adds MAINPID=N to the message, which pyinit ignores.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.helpers import kill_quietly, wait_until

from pyinit.core.logs import Log
from pyinit.core.loop import Loop
from pyinit.core.notify import Upstream
from pyinit.supervise.notify_socket import (
    MAX_DATAGRAM,
    Downstream,
    default_directory,
    default_notify_path,
    parse_message,
    resolve_sender,
)

Message = tuple[int, dict[str, str]]
UCRED = struct.Struct("iII")


# -- helpers ------------------------------------------------------------------


def run_until(loop: Loop, predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Run the loop until `predicate()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"loop: condition not met within {timeout} s")
        wake = loop.call_at(deadline, lambda: None)  # so a silent loop still returns
        loop._run_once()
        wake.cancel()


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture
def loop() -> Loop:
    return Loop(Log("debug"))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Popen objects a test started; killed and waited for (their own pid) on teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                kill_quietly(proc.pid)
        proc.wait(timeout=5)


class Receiver:
    """A listening datagram socket standing in for systemd: what Upstream sends lands here."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def receive(self, timeout: float = 2.0) -> tuple[int, bytes]:
        """(sender pid from the kernel, datagram)."""
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(UCRED.size))
        pid = next(UCRED.unpack(d[: UCRED.size])[0] for _, kind, d in ancillary if kind == 2)
        return pid, data

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            os.unlink(self.address)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    if request.param == "path":
        address = str(tmp_path / "upstream.sock")
    else:
        address = f"@pyinit-test-{uuid.uuid4().hex}"
    listener = Receiver(address)
    yield listener
    listener.close()


@pytest.fixture(params=["path", "abstract"])
def downstream(
    request: pytest.FixtureRequest, loop: Loop, tmp_path: Path
) -> Iterator[tuple[Downstream, list[Message]]]:
    """pyinit's notify socket on the loop, and the messages it delivered."""
    received: list[Message] = []
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
    else:
        path = f"@pyinit-test-{uuid.uuid4().hex}"
    server = Downstream(
        loop, path, lambda pid, fields: received.append((pid, fields)), Log("debug")
    )
    yield server, received
    server.close()


def client_env(path: str) -> dict[str, str]:
    return dict(os.environ, NOTIFY_SOCKET=path)


def send_from_child(path: str, payload: str, processes: list[subprocess.Popen[bytes]]) -> int:
    """A separate process sends `payload` and then waits to be killed; returns its pid."""
    code = (
        "import os, socket, sys\n"
        "a = os.environ['NOTIFY_SOCKET']\n"
        "a = '\\0' + a[1:] if a[0] == '@' else a\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.sendto(sys.argv[1].encode(), a)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, payload],
        env=client_env(path),
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    processes.append(proc)
    return proc.pid


# -- upstream ---------------------------------------------------------------------


def test_upstream_sends_each_message_as_systemd_reads_it(receiver: Receiver) -> None:
    upstream = Upstream.from_environ({"NOTIFY_SOCKET": receiver.address})
    assert upstream.address == receiver.address
    try:
        assert upstream.ready()
        assert receiver.receive() == (os.getpid(), b"READY=1")

        assert upstream.status("2/3 services ready")
        assert receiver.receive()[1] == b"STATUS=2/3 services ready"

        # A newline would start a new field: STATUS stays one line. UTF-8, not latin-1.
        assert upstream.status("reload failed:\n/etc/pyinit.toml:3: bad ✗")
        assert receiver.receive()[1] == "STATUS=reload failed: /etc/pyinit.toml:3: bad ✗".encode()

        before = time.monotonic_ns() // 1000
        assert upstream.reloading()
        after = time.monotonic_ns() // 1000
        lines = receiver.receive()[1].decode().split("\n")
        assert lines[0] == "RELOADING=1"
        key, _, usec = lines[1].partition("=")
        assert key == "MONOTONIC_USEC" and len(lines) == 2
        assert before <= int(usec) <= after

        assert upstream.stopping()
        assert receiver.receive()[1] == b"STOPPING=1"
        assert upstream.watchdog()
        assert receiver.receive()[1] == b"WATCHDOG=1"
    finally:
        upstream.close()


def test_upstream_without_notify_socket_is_a_silent_no_op() -> None:
    for environ in (
        {},
        {"NOTIFY_SOCKET": ""},
        {"NOTIFY_SOCKET": "@"},
        {"NOTIFY_SOCKET": "vsock:2:9"},
    ):
        upstream = Upstream.from_environ(environ | {"WATCHDOG_USEC": "1000000"})
        assert upstream.address is None, environ
        assert upstream.ready() is False
        assert upstream.reloading() is False
        assert upstream.watchdog_interval() is None


def test_upstream_never_raises_when_nobody_listens(tmp_path: Path) -> None:
    upstream = Upstream.from_environ({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert upstream.ready() is False
    regular = tmp_path / "not-a-socket"
    regular.write_text("")
    assert Upstream.from_environ({"NOTIFY_SOCKET": str(regular)}).stopping() is False
    too_long = "/" + "x" * 200
    assert Upstream.from_environ({"NOTIFY_SOCKET": too_long}).ready() is False


def test_upstream_never_blocks_on_a_listener_that_stopped_reading(tmp_path: Path) -> None:
    """The receive queue holds max_dgram_qlen (10) datagrams; then sends fail at once."""
    listener = Receiver(str(tmp_path / "full.sock"))
    upstream = Upstream.from_environ({"NOTIFY_SOCKET": listener.address})
    try:
        started = time.monotonic()
        results = [upstream.watchdog() for _ in range(200)]
        elapsed = time.monotonic() - started
        assert results[0] is True
        assert results[-1] is False, "the queue never filled: the test proves nothing"
        assert elapsed < 1.0
    finally:
        upstream.close()
        listener.close()


def test_upstream_reaches_a_listener_recreated_at_the_same_path(tmp_path: Path) -> None:
    """sdnotify connects once and would keep sending to the old, closed socket."""
    path = str(tmp_path / "again.sock")
    first = Receiver(path)
    upstream = Upstream.from_environ({"NOTIFY_SOCKET": path})
    try:
        assert upstream.ready()
        assert first.receive()[1] == b"READY=1"
        first.close()
        assert upstream.status("nobody") is False
        second = Receiver(path)
        try:
            assert upstream.status("back")
            assert second.receive()[1] == b"STATUS=back"
        finally:
            second.close()
    finally:
        upstream.close()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "<self>"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # pid 1 is not us
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_when_meant_for_us(
    environ: dict[str, str], expected: float | None
) -> None:
    environ = {k: v.replace("<self>", str(os.getpid())) for k, v in environ.items()}
    upstream = Upstream.from_environ({"NOTIFY_SOCKET": "/run/nowhere.sock", **environ})
    assert upstream.watchdog_interval() == expected


# -- downstream ---------------------------------------------------------------------


def test_downstream_hears_a_python_socket_client_and_trusts_only_the_kernel(
    loop: Loop,
    downstream: tuple[Downstream, list[Message]],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    server, received = downstream
    pid = send_from_child(server.path, "READY=1\nMAINPID=1\nSTATUS=up", processes)
    run_until(loop, lambda: received)
    assert received == [(pid, {"READY": "1", "MAINPID": "1", "STATUS": "up"})]
    assert pid != os.getpid() and pid != 1


def test_downstream_hears_the_sdnotify_package(
    loop: Loop,
    downstream: tuple[Downstream, list[Message]],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    server, received = downstream
    code = (
        "import sdnotify, sys\n"
        "n = sdnotify.SystemdNotifier(debug=True)\n"
        "n.notify('READY=1')\n"
        "n.notify('STATUS=indexing\\nWATCHDOG=1')\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=client_env(server.path), stdin=subprocess.PIPE
    )
    processes.append(proc)
    run_until(loop, lambda: len(received) == 2)
    assert received == [
        (proc.pid, {"READY": "1"}),
        (proc.pid, {"STATUS": "indexing", "WATCHDOG": "1"}),
    ]


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="systemd-notify not installed")
def test_downstream_hears_systemd_notify_and_answers_its_barrier(
    loop: Loop, downstream: tuple[Downstream, list[Message]]
) -> None:
    """As root, systemd-notify sends with its invoker's pid (here: this test);
    exit 0 at once shows the barrier was answered (it waits 5 s otherwise)."""
    server, received = downstream
    proc = subprocess.Popen(
        ["systemd-notify", "--ready", "--status=warming up"], env=client_env(server.path)
    )
    try:
        run_until(loop, lambda: len(received) == 2)  # the message, then the barrier
        assert proc.wait(timeout=3) == 0  # the barrier waits 5 s, then exits 1
    finally:
        kill_quietly(proc.pid)
        proc.wait(timeout=5)
    # The message under its invoker's pid; the barrier (sent with an fd) under its own.
    assert received == [
        (os.getpid(), {"READY": "1", "STATUS": "warming up"}),
        (proc.pid, {"BARRIER": "1"}),
    ]


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="systemd-notify not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a client as nobody")
def test_systemd_notify_as_another_user_reaches_the_socket_and_is_placed(
    loop: Loop, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A service that dropped to `user = nobody`: the 0711 directory and the 0666
    socket let it in; without privileges systemd-notify sends as itself and
    the barrier keeps it alive until resolve_sender has seen it."""
    directory = f"/tmp/pyinit-test-{uuid.uuid4().hex}"
    path = f"{directory}/notify.sock"
    placed: list[tuple[str | None, dict[str, str]]] = []
    worker: subprocess.Popen[bytes] | None = None

    def on_message(pid: int, fields: dict[str, str]) -> None:
        assert worker is not None
        placed.append((resolve_sender(pid, {worker.pid: "web"}), fields))

    server = Downstream(loop, path, on_message, Log("debug"))
    try:
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o711
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        # The worker is a shell in its own session, as pyinit starts it.
        worker = subprocess.Popen(
            ["sh", "-c", "systemd-notify --ready; echo rc=$?; exec sleep 60"],
            env=client_env(path),
            user=65534,
            group=65534,
            extra_groups=[],
            start_new_session=True,
            stdout=subprocess.PIPE,
        )
        processes.append(worker)
        # Keep the loop running until the barrier has been read (and its fd closed).
        run_until(loop, lambda: len(placed) == 2)
        assert placed == [("web", {"READY": "1"}), ("web", {"BARRIER": "1"})]
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"rc=0\n"
    finally:
        server.close()
        os.rmdir(directory)


def test_downstream_drops_oversized_and_garbage_datagrams_and_keeps_serving(
    loop: Loop, downstream: tuple[Downstream, list[Message]]
) -> None:
    server, received = downstream
    address = "\0" + server.path[1:] if server.path.startswith("@") else server.path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.sendto(b"STATUS=" + b"x" * MAX_DATAGRAM, address)  # over the limit
        client.sendto(b"READY=1\0MAINPID=1", address)  # NUL byte
        client.sendto(b"\xff\xfe READY=1", address)  # not UTF-8
        client.sendto(b"", address)
        client.sendto(b"no equals sign\n=empty key\nbad key=1", address)  # nothing valid
        client.sendto(b"garbage\nREADY=1\n\nSTATUS=a=b\nSTATUS_2=ok", address)  # partly valid
        client.sendto(b"WATCHDOG=1", address)
    run_until(loop, lambda: len(received) >= 2)
    assert received == [
        (os.getpid(), {"READY": "1", "STATUS": "a=b", "STATUS_2": "ok"}),
        (os.getpid(), {"WATCHDOG": "1"}),
    ]


def test_downstream_closes_descriptors_that_come_with_a_message(
    loop: Loop, downstream: tuple[Downstream, list[Message]]
) -> None:
    """FDSTORE=1/BARRIER=1 pass fds; keeping them would leak one per message."""
    server, received = downstream
    address = "\0" + server.path[1:] if server.path.startswith("@") else server.path
    read_end, write_end = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", write_end))]
            client.sendmsg([b"BARRIER=1"], rights, 0, address)
        os.close(write_end)  # the copy in flight is now the only write end
        before = open_fds()
        run_until(loop, lambda: received)
        assert received == [(os.getpid(), {"BARRIER": "1"})]
        assert open_fds() == before
        # No write end is left anywhere: the reader sees end of file (the barrier).
        os.set_blocking(read_end, False)
        assert os.read(read_end, 1) == b""
    finally:
        os.close(read_end)


def test_downstream_drains_a_burst_bigger_than_one_batch(
    loop: Loop,
    downstream: tuple[Downstream, list[Message]],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    server, received = downstream
    code = (
        "import os, socket\n"
        "a = os.environ['NOTIFY_SOCKET']\n"
        "a = '\\0' + a[1:] if a[0] == '@' else a\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "for i in range(300): s.sendto(f'STATUS={i}'.encode(), a)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=client_env(server.path))
    processes.append(proc)
    run_until(loop, lambda: len(received) == 300)
    assert [f["STATUS"] for _, f in received] == [str(i) for i in range(300)]


def test_downstream_survives_a_failing_handler(loop: Loop, tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(pid: int, fields: dict[str, str]) -> None:
        seen.append(fields["STATUS"])
        if fields["STATUS"] == "boom":
            raise RuntimeError("handler bug")

    path = str(tmp_path / "n.sock")
    server = Downstream(loop, path, handler, Log("error"))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(b"STATUS=boom", path)
            client.sendto(b"STATUS=after", path)
        run_until(loop, lambda: len(seen) == 2)
        assert seen == ["boom", "after"]
    finally:
        server.close()


def test_downstream_socket_file_lifecycle(loop: Loop, tmp_path: Path) -> None:
    """A stale socket from an earlier run is replaced; close() removes ours and its fd."""
    path = tmp_path / "sub" / "notify.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stale:
        stale.bind(str(path))
    assert path.exists()
    before = open_fds()
    server = Downstream(loop, str(path), lambda pid, fields: None, Log("error"))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o666
    assert server.fileno() in loop._readers
    server.close()
    server.close()  # idempotent
    assert not path.exists()
    assert open_fds() == before
    assert loop._readers == {}


def test_downstream_refuses_a_directory_owned_by_another_user(loop: Loop, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    squatted = tmp_path / "squat"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, 65534, 65534)
    # Refused, logged, and replaced by an abstract address (issue 7.17).
    downstream = Downstream(loop, str(squatted / "notify.sock"), lambda p, f: None, Log("error"))
    try:
        assert downstream.path.startswith("@pyinit-notify-")
        assert not (squatted / "notify.sock").exists()
    finally:
        downstream.close()


def test_default_locations_follow_the_ctl_socket_order() -> None:
    directory = default_directory()
    notify = default_notify_path()
    uid = os.geteuid()
    assert directory in ("/run/pyinit", f"/tmp/pyinit-{uid}") or directory.endswith("/pyinit")
    # Not inside the owner-only ctl directory: services of other users must reach it.
    assert not notify.startswith(directory + "/")
    assert re.search(rf"/notify-{os.getpid()}-[0-9a-f]{{8}}\.sock$", notify)
    assert os.path.dirname(os.path.dirname(notify)) == os.path.dirname(directory)


def test_parse_message_is_systemd_line_format() -> None:
    assert parse_message(b"READY=1\nSTATUS=x=y\n") == {"READY": "1", "STATUS": "x=y"}
    assert parse_message(b"READY=1\nREADY=0") == {"READY": "0"}
    assert parse_message(b"EXTEND_TIMEOUT_USEC=18446744073709551615") == {
        "EXTEND_TIMEOUT_USEC": "18446744073709551615"
    }
    assert parse_message(b"A B=1\nk\xc3\xa9=1\n=1\nnothing") == {}
    assert parse_message(b"READY=1\0") is None
    assert parse_message(b"STATUS=\xc3") is None


# -- resolve_sender -----------------------------------------------------------------

TREE = r"""
import os, sys, time
def child(setsid):
    pid = os.fork()
    if pid == 0:
        if setsid:
            os.setsid()
        sys.stdin.read()
        os._exit(0)
    return pid
kept = child(False)     # stays in the worker's session and group
escaped = child(True)   # its own session: only the parent chain ties it to the worker
grand = os.fork()       # a grandchild of the worker, below the escaped one's level
if grand == 0:
    os.setsid()
    inner = os.fork()
    if inner == 0:
        sys.stdin.read()
        os._exit(0)
    os.write(1, f"inner {inner}\n".encode())  # one write: the two lines must not mix
    sys.stdin.read()
    os._exit(0)
os.write(1, f"tree {kept} {escaped} {grand}\n".encode())
sys.stdin.read()
"""


def test_resolve_sender_walks_a_real_process_tree(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", TREE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,  # as pyinit starts workers: session and group leader
    )
    processes.append(worker)
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    processes.append(stranger)
    assert worker.stdout is not None
    lines = dict(worker.stdout.readline().decode().split(" ", 1) for _ in range(2))
    inner = int(lines["inner"])
    kept, escaped, grand = (int(p) for p in lines["tree"].split())
    all_pids = [kept, escaped, grand, inner]
    try:
        wait_until(
            lambda: all(os.getsid(p) != worker.pid for p in (escaped, grand, inner)),
            message="the setsid() children to leave the worker's session",
        )
        groups = {worker.pid: "web", stranger.pid: "db"}
        assert resolve_sender(worker.pid, groups) == "web"
        assert resolve_sender(kept, groups) == "web"  # same session and group
        assert resolve_sender(escaped, groups) == "web"  # parent is the worker
        assert resolve_sender(inner, groups) == "web"  # parent's parent is the worker
        assert resolve_sender(stranger.pid, groups) == "db"
        assert resolve_sender(os.getpid(), groups) is None  # pyinit (here: the test) itself
        assert resolve_sender(1, groups) is None
        assert resolve_sender(0, groups) is None
        assert resolve_sender(inner, {stranger.pid: "db"}) is None
    finally:
        for pid in all_pids:
            kill_quietly(pid)


def test_resolve_sender_of_a_process_already_reaped_is_none() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert resolve_sender(proc.pid, {os.getpid(): "self"}) is None
