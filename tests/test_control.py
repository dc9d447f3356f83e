"""The control socket, `pyinit ctl` and the health port, over real sockets.

The server runs on a real `Loop`, driven from the test by `run_until`; the
client is the real `main_ctl` in its own process (exit status, stdout and
stderr as a user sees them), or a raw socket when a test needs to misbehave.
`FakeControlled` stands in for the supervisor: it is the policy interface
(`listener.Controlled`), not `os`, so faking it keeps the no-mocks rule.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyinit.control import health as health_port
from pyinit.control import listener, usage
from pyinit.control import server as control
from pyinit.control.client import ClientError, find_socket, request
from pyinit.control.health import HealthServer, parse_health_port
from pyinit.control.protocol import REQUEST_LIMIT, default_socket_path, socket_candidates, synopsis
from pyinit.control.server import ControlError, ControlServer
from pyinit.core.logs import Log
from pyinit.core.loop import Loop

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT = (
    "import os, sys; from pyinit.control.client import main_ctl;"
    " sys.exit(main_ctl(sys.argv[1:], os.environ))"
)
NOBODY = 65534


# -- helpers -------------------------------------------------------------------------------


class RecordingLog(Log):
    """pyinit's Log, keeping (level, message) instead of writing to stderr."""

    def __init__(self) -> None:
        super().__init__("debug")
        self.records: list[tuple[str, str]] = []

    def _emit(self, level: str, message: str, fields: dict[str, object]) -> None:
        self.records.append((level, message))


class FakeControlled:
    """The supervisor's side of `listener.Controlled`, recording what it was asked."""

    def __init__(self, workers: dict[str, int] | None = None) -> None:
        self.services = workers if workers is not None else {"web": 2, "db": 1}
        self.ready = True
        self.calls: list[tuple[str, ...]] = []
        self.fail_with: Exception | None = None

    def status(self) -> list[dict[str, object]]:
        if self.fail_with is not None:
            raise self.fail_with
        rows: list[dict[str, object]] = []
        for name, count in self.services.items():
            for worker in range(count):
                rows.append(
                    {
                        "service": name,
                        "worker": worker,
                        # A real pid, so RSS and CPU have something to measure.
                        "pid": os.getpid() if (name, worker) == ("web", 0) else 0,
                        "state": "running" if worker == 0 else "backoff",
                        "ready": self.ready and worker == 0,
                        "uptime": 3725.5 if worker == 0 else None,
                        "restarts": worker,
                        "last_exit": None if worker == 0 else "exit status 3",
                    }
                )
        return rows

    def is_ready(self) -> bool:
        return self.ready

    def _named(self, action: str, name: str, *more: str) -> str:
        if name not in self.services:
            raise KeyError(name)
        self.calls.append((action, name, *more))
        return f"{name}: {action} done"

    def start(self, name: str) -> str:
        return self._named("start", name)

    def stop(self, name: str) -> str:
        return self._named("stop", name)

    def restart(self, name: str) -> str:
        return self._named("restart", name)

    def send_signal(self, name: str, signum: int) -> str:
        return self._named("signal", name, str(signum))

    def reload(self) -> str:
        self.calls.append(("reload",))
        return "reload applied"


def run_until(loop: Loop, predicate: Callable[[], object], timeout: float, message: str) -> None:
    """Run the real loop until `predicate()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout

    def check() -> None:
        if predicate() or time.monotonic() > deadline:
            loop.stop()
        else:
            loop.call_later(0.005, check)

    loop.stopped = False
    loop.call_later(0, check)
    loop.run()
    assert predicate(), f"timed out after {timeout}s waiting for: {message}"


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def ctl(
    loop: Loop,
    *argv: str,
    env: dict[str, str] | None = None,
    user: int | None = None,
    python: str = sys.executable,
) -> Ran:
    """Run `pyinit ctl ARGV` (main_ctl in a fresh process) while the loop serves it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYINIT_")}
    environ["PYTHONPATH"] = str(REPO_ROOT)
    environ.update(env or {})
    proc = subprocess.Popen(
        [python, "-c", CLIENT, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        user=user,
        cwd="/",
    )
    try:
        run_until(loop, lambda: proc.poll() is not None, 15, f"pyinit ctl {' '.join(argv)}")
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Ran(proc.returncode, out, err)


class RawClient:
    """A misbehaving client: a non-blocking Unix or TCP socket the test drives by hand."""

    def __init__(self, address: str | tuple[str, int]) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(2)
        self.sock.connect(address)
        self.sock.setblocking(False)
        self.received = bytearray()
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def done(self) -> bool:
        """Read what has arrived; True once the server closed the connection."""
        while not self.closed:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                chunk = b""
            self.received += chunk
            self.closed = not chunk
        return True

    def reply(self) -> dict[str, object]:
        value = json.loads(self.received.split(b"\n", 1)[0])
        assert isinstance(value, dict)
        return value

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def log() -> RecordingLog:
    return RecordingLog()


@pytest.fixture
def loop(log: RecordingLog) -> Loop:
    return Loop(log)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temporary directory: AF_UNIX paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pit-ctl-"))
    os.chmod(path, 0o755)  # so that nobody can look inside in the uid tests
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def controlled() -> FakeControlled:
    return FakeControlled()


@pytest.fixture
def server(
    loop: Loop, short_dir: Path, controlled: FakeControlled, log: RecordingLog
) -> Iterator[ControlServer]:
    srv = ControlServer(loop, str(short_dir / "pyinit" / "ctl.sock"), controlled, log, timeout=0.5)
    yield srv
    srv.close()


def sock_env(server: ControlServer) -> dict[str, str]:
    return {"PYINIT_CTL_SOCKET": server.path}


# -- the socket's place and modes -------------------------------------------------------


def test_socket_is_0600_in_a_0700_directory_and_close_removes_it(
    server: ControlServer, short_dir: Path
) -> None:
    directory = short_dir / "pyinit"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    info = os.lstat(server.path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    server.close()
    assert not os.path.exists(server.path)


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
def test_existing_directory_open_to_others_is_refused(
    loop: Loop, short_dir: Path, log: RecordingLog, mode: int
) -> None:
    directory = short_dir / "open"
    directory.mkdir()
    os.chmod(directory, mode)
    with pytest.raises(ControlError, match=f"open to other users.*{mode:04o}"):
        ControlServer(loop, str(directory / "ctl.sock"), FakeControlled(), log)
    assert not (directory / "ctl.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_existing_directory_of_another_user_is_refused(
    loop: Loop, short_dir: Path, log: RecordingLog
) -> None:
    directory = short_dir / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    with pytest.raises(ControlError, match=f"belongs to uid {NOBODY}"):
        ControlServer(loop, str(directory / "ctl.sock"), FakeControlled(), log)


def test_symlinked_directory_is_refused(loop: Loop, short_dir: Path, log: RecordingLog) -> None:
    real = short_dir / "real"
    real.mkdir(mode=0o700)
    (short_dir / "link").symlink_to(real)
    with pytest.raises(ControlError, match="not a directory"):
        ControlServer(loop, str(short_dir / "link" / "ctl.sock"), FakeControlled(), log)


def test_stale_socket_is_replaced_but_a_live_one_is_not(
    loop: Loop, short_dir: Path, log: RecordingLog
) -> None:
    directory = short_dir / "run"
    directory.mkdir(mode=0o700)
    path = str(directory / "ctl.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a killed pyinit leaves behind
    stale.close()
    first = ControlServer(loop, path, FakeControlled(), log)
    try:
        with pytest.raises(ControlError, match="already listening"):
            ControlServer(loop, path, FakeControlled(), log)
        assert ctl(loop, "--ctl-socket", path, "reload").code == 0, "the first one still answers"
    finally:
        first.close()


# -- every verb through the real client --------------------------------------------------


def test_status_table(loop: Loop, server: ControlServer) -> None:
    ran = ctl(loop, "status", env=sock_env(server))
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0].split() == [
        "SERVICE", "WORKER", "PID", "STATE", "READY", "UPTIME",
        "RESTARTS", "LAST", "EXIT", "RSS", "CPU",
    ]  # fmt: skip
    web0 = lines[1].split()
    assert web0[:7] == ["web", "0", str(os.getpid()), "running", "yes", "1h02m", "0"]
    assert web0[7] == "-"  # no last exit
    assert web0[8][-1] in "KMG" and web0[9].endswith("s"), web0  # RSS and CPU measured
    web1 = lines[2].split()
    assert web1[:7] == ["web", "1", "-", "backoff", "no", "-", "1"]
    assert web1[7:] == ["exit", "status", "3", "-", "-"]
    assert lines[3].split()[0] == "db"
    assert len(lines) == 4


def test_status_json_carries_rss_bytes_and_cpu_seconds(loop: Loop, server: ControlServer) -> None:
    ran = ctl(loop, "status", "--json", env=sock_env(server))
    assert ran.code == 0, ran.err
    rows = json.loads(ran.out)
    assert [(r["service"], r["worker"]) for r in rows] == [("web", 0), ("web", 1), ("db", 0)]
    web0 = rows[0]
    assert web0["pid"] == os.getpid() and web0["ready"] is True
    assert web0["last_exit"] is None and web0["uptime"] == 3725.5
    rss, cpu = usage.usage_from_proc(os.getpid())
    assert rss is not None and cpu is not None
    assert isinstance(web0["rss"], int) and abs(web0["rss"] - rss) < 64 << 20
    assert isinstance(web0["cpu"], float) and 0 < web0["cpu"] <= cpu + 1
    assert rows[1]["rss"] is None and rows[1]["cpu"] is None  # no process
    assert rows[1]["last_exit"] == "exit status 3"


def test_ready_exits_0_when_ready_and_1_when_not(
    loop: Loop, server: ControlServer, controlled: FakeControlled
) -> None:
    # Issue 11: one word when ready, and who is not when not.
    ran = ctl(loop, "ready", env=sock_env(server))
    assert (ran.code, ran.out) == (0, "ready\n")
    controlled.ready = False
    ran = ctl(loop, "ready", env=sock_env(server))
    assert ran.code == 1
    assert ran.out == "not ready: web[0], web[1], db[0]\n"


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (["start", "web"], ("start", "web")),
        (["stop", "db"], ("stop", "db")),
        (["restart", "web"], ("restart", "web")),
        (["signal", "web", "HUP"], ("signal", "web", str(int(signal.SIGHUP)))),
        (["signal", "web", "SIGUSR2"], ("signal", "web", str(int(signal.SIGUSR2)))),
        (["signal", "db", "10"], ("signal", "db", "10")),
        (["reload"], ("reload",)),
    ],
)
def test_action_verbs_reach_the_supervisor(
    loop: Loop,
    server: ControlServer,
    controlled: FakeControlled,
    log: RecordingLog,
    argv: list[str],
    call: tuple[str, ...],
) -> None:
    ran = ctl(loop, "--ctl-socket", server.path, *argv)
    assert ran.code == 0, ran.err
    assert controlled.calls == [call]
    assert ran.out.strip() == (
        "reload applied" if call == ("reload",) else f"{call[1]}: {call[0]} done"
    )
    assert any(level == "info" and msg.startswith(f"ctl: {argv[0]}") for level, msg in log.records)


@pytest.mark.parametrize("argv", [["restart", "nope"], ["signal", "nope", "TERM"]])
def test_unknown_service_is_an_error_reply(
    loop: Loop, server: ControlServer, controlled: FakeControlled, argv: list[str]
) -> None:
    ran = ctl(loop, *argv, env=sock_env(server))
    assert ran.code == 1
    assert ran.err == "pyinit: error: no such service: 'nope'\n"
    assert controlled.calls == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "a verb is needed"),
        (["bogus"], "unknown verb 'bogus'"),
        (["restart"], "usage: pyinit ctl restart NAME"),
        (["restart", "a", "b"], "usage: pyinit ctl restart NAME"),
        (["status", "--yaml"], "usage: pyinit ctl status [--json]"),
        (["signal", "web", "SIGNOPE"], "unknown signal: 'SIGNOPE'"),
        (["signal", "web"], "usage: pyinit ctl signal NAME SIG"),
        (["--frob", "status"], "unknown option '--frob'"),
    ],
)
def test_usage_errors_exit_2_without_asking_pyinit(
    loop: Loop, argv: list[str], message: str
) -> None:
    # No server anywhere: a usage error must be found before connecting.
    ran = ctl(loop, *argv, env={"PYINIT_CTL_SOCKET": "/nonexistent/ctl.sock"})
    assert ran.code == 2
    assert ran.err.startswith("pyinit: error: ctl: ") and message in ran.err, ran.err
    assert len(ran.err.splitlines()) == 1


def test_help_lists_every_verb(loop: Loop) -> None:
    ran = ctl(loop, "--help")
    assert ran.code == 0
    for verb in control.VERBS:
        assert f"\n  {synopsis(verb)}" in ran.out


def test_no_pyinit_running_is_one_clear_line_and_status_1(loop: Loop, short_dir: Path) -> None:
    missing = str(short_dir / "none" / "ctl.sock")
    ran = ctl(loop, "status", env={"PYINIT_CTL_SOCKET": missing})
    assert ran.code == 1
    assert ran.err == (
        f"pyinit: error: cannot reach pyinit at {missing}: "
        "No such file or directory (is pyinit running?)\n"
    )
    dead = str(short_dir / "dead.sock")
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(dead)  # a socket file nobody listens on: connection refused
    leftover.close()
    ran = ctl(loop, f"--ctl-socket={dead}", "ready")
    assert ran.code == 1
    assert ran.err == (
        f"pyinit: error: cannot reach pyinit at {dead}: Connection refused (is pyinit running?)\n"
    )


def test_client_gives_up_on_a_pyinit_that_never_answers(short_dir: Path) -> None:
    path = str(short_dir / "mute.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(path)
    mute.listen(1)  # the kernel completes the connect; nobody ever reads
    try:
        started = time.monotonic()
        with pytest.raises(ClientError, match="did not answer within 0.3 s"):
            request(path, "status", [], timeout=0.3)
        assert time.monotonic() - started < 2
    finally:
        mute.close()


# -- peers with another uid ----------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running a client as nobody needs root")
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody, unlike a pyenv under /root


@needs_root
def test_other_user_cannot_even_reach_the_socket(loop: Loop, server: ControlServer) -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run a client as nobody")
    ran = ctl(loop, "status", env=sock_env(server), user=NOBODY, python=SYSTEM_PYTHON)
    assert ran.code == 1
    assert "permission denied" in ran.err, ran.err


@needs_root
def test_other_user_is_refused_by_peer_credentials_even_with_loose_modes(
    loop: Loop, server: ControlServer, controlled: FakeControlled, log: RecordingLog
) -> None:
    """File modes are the first lock; SO_PEERCRED the second: loosen the first, the second holds."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run a client as nobody")
    os.chmod(os.path.dirname(server.path), 0o711)
    os.chmod(server.path, 0o666)
    ran = ctl(loop, "reload", env=sock_env(server), user=NOBODY, python=SYSTEM_PYTHON)
    assert (ran.code, ran.err) == (1, "pyinit: error: permission denied\n")
    assert controlled.calls == []
    assert any(
        level == "warning" and f"uid {NOBODY}:" in msg and "refused" in msg
        for level, msg in log.records
    )
    assert ctl(loop, "reload", env=sock_env(server)).code == 0, "root is still served"


# -- hostile and broken clients ------------------------------------------------------------

GARBAGE = [
    b"\x00\xff\xfe not json\n",
    b"[]\n",
    b'"status"\n',
    b"{}\n",
    b'{"verb": 5}\n',
    b'{"verb": "status", "args": "web"}\n',
    b'{"verb": "status", "args": [1, 2]}\n',
    b'{"verb": "__class__"}\n',
    b'{"verb": "stop"}\n',
    b'{"verb": "signal", "args": ["web", "NOSUCH"]}\n',
    b"[" * 50_000 + b"\n",  # deep nesting: RecursionError inside json
    b'{"verb": "status", "args": [], "x": ' + b"9" * 10_000 + b"}\n",  # int too long
]


@pytest.mark.parametrize("payload", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_gets_an_error_reply_and_the_server_carries_on(
    loop: Loop, server: ControlServer, controlled: FakeControlled, payload: bytes
) -> None:
    client = RawClient(server.path)
    client.send(payload)
    run_until(loop, client.done, 5, "an error reply and a close")
    reply = client.reply()
    assert reply["ok"] is False and isinstance(reply["error"], str), reply
    client.close()
    assert controlled.calls == []
    assert ctl(loop, "status", "--json", env=sock_env(server)).code == 0


def test_request_without_newline_is_answered_at_end_of_input(
    loop: Loop, server: ControlServer, controlled: FakeControlled
) -> None:
    client = RawClient(server.path)
    client.send(b'{"verb": "stop", "args": ["web"]}')
    client.sock.shutdown(socket.SHUT_WR)
    run_until(loop, client.done, 5, "the reply")
    assert client.reply() == {"ok": True, "result": "web: stop done"}
    client.close()


def test_oversized_request_is_refused_and_the_server_carries_on(
    loop: Loop, server: ControlServer
) -> None:
    client = RawClient(server.path)
    client.send(b"x" * (REQUEST_LIMIT + 100))
    run_until(loop, client.done, 5, "a refusal and a close")
    assert client.reply() == {"ok": False, "error": "request too large (over 65536 bytes)"}
    client.close()
    assert ctl(loop, "ready", env=sock_env(server)).code == 0


def test_silent_client_is_dropped_and_does_not_block_others(
    loop: Loop, server: ControlServer
) -> None:
    silent = RawClient(server.path)
    half = RawClient(server.path)
    half.send(b'{"verb": "sta')  # and then nothing more
    started = time.monotonic()
    # Served while both hang on: nothing waits for them.
    assert ctl(loop, "ready", env=sock_env(server)).code == 0
    run_until(loop, lambda: silent.done() and half.done(), 5, "both slow clients dropped")
    assert time.monotonic() - started >= 0.4  # the server's 0.5 s deadline, not earlier
    assert silent.received == b"" and half.received == b""
    assert not server.connections
    silent.close()
    half.close()


def test_client_that_never_reads_a_big_reply_is_dropped(
    loop: Loop, short_dir: Path, log: RecordingLog
) -> None:
    many = FakeControlled({f"svc{i}": 1 for i in range(5000)})
    srv = ControlServer(loop, str(short_dir / "big" / "ctl.sock"), many, log, timeout=0.5)
    try:
        greedy = RawClient(srv.path)
        greedy.send(b'{"verb": "status"}\n')  # and never reads the ~1 MB reply
        reader = RawClient(srv.path)
        reader.send(b'{"verb": "status"}\n')
        run_until(loop, reader.done, 5, "the whole status reply")
        rows = reader.reply()["result"]
        assert isinstance(rows, list) and len(rows) == 5000
        assert len(reader.received) > 500_000  # more than fits in a socket buffer
        run_until(loop, lambda: not srv.connections, 5, "the greedy client dropped")
        greedy.close()
        reader.close()
    finally:
        srv.close()


def test_failing_supervisor_call_is_an_internal_error_reply(
    loop: Loop, server: ControlServer, controlled: FakeControlled, log: RecordingLog
) -> None:
    controlled.fail_with = RuntimeError("boom")
    ran = ctl(loop, "status", env=sock_env(server))
    assert (ran.code, ran.err) == (1, "pyinit: error: internal error in pyinit (see its log)\n")
    assert any(level == "error" and "error answering" in msg for level, msg in log.records)
    controlled.fail_with = None
    assert ctl(loop, "status", env=sock_env(server)).code == 0


def test_a_flood_of_connections_is_capped(
    loop: Loop, short_dir: Path, controlled: FakeControlled, log: RecordingLog
) -> None:
    srv = ControlServer(loop, str(short_dir / "flood" / "ctl.sock"), controlled, log, timeout=10)
    clients = [RawClient(srv.path) for _ in range(listener.MAX_CONNECTIONS + 10)]
    try:
        run_until(
            loop,
            lambda: sum(c.done() for c in clients) >= 10,
            5,
            "connections over the cap closed at once",
        )
        assert len(srv.connections) == listener.MAX_CONNECTIONS
        for client in clients:
            client.close()
        run_until(loop, lambda: not srv.connections, 5, "closed connections forgotten")
        assert ctl(loop, "--ctl-socket", srv.path, "ready").code == 0
    finally:
        for client in clients:
            client.close()
        srv.close()


# -- default paths ---------------------------------------------------------------------------


def test_default_socket_path_order(short_dir: Path) -> None:
    run, xdg, tmp = short_dir / "run", short_dir / "xdg", short_dir / "tmp"
    xdg.mkdir()
    uid = os.geteuid()
    environ = {"XDG_RUNTIME_DIR": str(xdg)}
    # /run missing (not writable): $XDG_RUNTIME_DIR, else /tmp/pyinit-UID.
    assert default_socket_path(environ, str(run), str(tmp)) == f"{xdg}/pyinit/ctl.sock"
    assert default_socket_path({}, str(run), str(tmp)) == f"{tmp}/pyinit-{uid}/ctl.sock"
    assert default_socket_path({"XDG_RUNTIME_DIR": "relative"}, str(run), str(tmp)) == (
        f"{tmp}/pyinit-{uid}/ctl.sock"
    )
    run.mkdir()
    assert default_socket_path(environ, str(run), str(tmp)) == f"{run}/pyinit/ctl.sock"
    assert default_socket_path(environ) in socket_candidates(environ)


def test_client_finds_the_first_existing_socket(short_dir: Path) -> None:
    run, xdg, tmp = short_dir / "run", short_dir / "xdg", short_dir / "tmp"
    environ = {"XDG_RUNTIME_DIR": str(xdg)}
    bound = []
    for where in (tmp / f"pyinit-{os.geteuid()}", xdg / "pyinit", run / "pyinit"):
        where.mkdir(parents=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(where / "ctl.sock"))
        bound.append(sock)
        # Each newly created socket comes earlier in the order, so it wins.
        assert find_socket(environ, str(run), str(tmp)) == str(where / "ctl.sock")
    given = {"PYINIT_CTL_SOCKET": "/elsewhere/ctl.sock", **environ}
    assert find_socket(given, str(run), str(tmp)) == "/elsewhere/ctl.sock"
    for sock in bound:
        sock.close()


# -- resource usage ----------------------------------------------------------------------------


def test_proc_fallback_agrees_with_psutil() -> None:
    psutil = pytest.importorskip("psutil")
    busy = "import sys; sum(range(10**7)); sys.stdin.read()"  # some CPU time, then wait
    child = subprocess.Popen([sys.executable, "-c", busy], stdin=subprocess.PIPE)
    try:
        rss, cpu = usage.usage_from_proc(child.pid)
        info = psutil.Process(child.pid)
        assert rss is not None and abs(rss - info.memory_info().rss) < 1 << 20
        times = info.cpu_times()
        assert cpu is not None and abs(cpu - (times.user + times.system)) < 0.5
        assert usage.process_usage(child.pid)[0] is not None
    finally:
        child.kill()
        child.wait()
    assert usage.usage_from_proc(child.pid) == (None, None)  # gone
    assert usage.process_usage(0) == (None, None)


# -- the health port --------------------------------------------------------------------------


def http_get(
    loop: Loop, port: int, path: str, method: str = "GET", host: str = "127.0.0.1"
) -> tuple[int, str]:
    """One request with the stdlib's HTTP client, in a thread while the loop serves it."""
    result: list[tuple[int, str] | BaseException] = []

    def fetch() -> None:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request(method, path)
            response = conn.getresponse()
            result.append((response.status, response.read().decode()))
            conn.close()
        except BaseException as error:  # reported in the test's thread
            result.append(error)

    thread = threading.Thread(target=fetch)
    thread.start()
    run_until(loop, lambda: result, 10, f"{method} {path}")
    thread.join(5)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


@pytest.fixture
def health(loop: Loop, controlled: FakeControlled, log: RecordingLog) -> Iterator[HealthServer]:
    srv = HealthServer(loop, "127.0.0.1", 0, controlled, log, timeout=0.5)
    yield srv
    srv.close()


def test_health_endpoints(loop: Loop, health: HealthServer, controlled: FakeControlled) -> None:
    assert http_get(loop, health.port, "/healthz") == (200, "ok\n")
    assert http_get(loop, health.port, "/readyz") == (200, "ready\n")
    controlled.ready = False
    assert http_get(loop, health.port, "/readyz") == (503, "not ready\n")
    assert http_get(loop, health.port, "/healthz?verbose=1") == (200, "ok\n")
    assert http_get(loop, health.port, "/healthz", method="HEAD") == (200, "")
    assert http_get(loop, health.port, "/metrics")[0] == 404
    assert http_get(loop, health.port, "/healthz", method="POST")[0] == 405


@pytest.mark.parametrize(
    "payload",
    [b"garbage\r\n\r\n", b"GET /healthz\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n"],
)
def test_health_bad_requests_get_400(loop: Loop, health: HealthServer, payload: bytes) -> None:
    client = RawClient(("127.0.0.1", health.port))
    client.send(payload)
    run_until(loop, client.done, 5, "a 400 and a close")
    assert client.received.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    client.close()
    assert http_get(loop, health.port, "/healthz") == (200, "ok\n")


def test_health_slow_and_oversized_clients_do_not_hurt(loop: Loop, health: HealthServer) -> None:
    silent = RawClient(("127.0.0.1", health.port))
    big = RawClient(("127.0.0.1", health.port))
    big.send(b"GET /healthz HTTP/1.1\r\n" + b"X-Junk: " + b"a" * health_port.HTTP_LIMIT)
    run_until(loop, big.done, 5, "the oversized request refused")
    assert big.received.startswith(b"HTTP/1.0 400 ")
    assert http_get(loop, health.port, "/healthz") == (200, "ok\n")
    run_until(loop, silent.done, 5, "the silent client dropped")
    assert silent.received == b""
    silent.close()
    big.close()


def test_health_on_ipv6_any_answers_ipv4_too(
    loop: Loop, controlled: FakeControlled, log: RecordingLog
) -> None:
    try:
        srv = HealthServer(loop, "::", 0, controlled, log)
    except ControlError as error:
        pytest.skip(f"no IPv6 here: {error}")
    try:
        assert http_get(loop, srv.port, "/healthz", host="::1") == (200, "ok\n")
        assert http_get(loop, srv.port, "/readyz", host="127.0.0.1") == (200, "ready\n")
    finally:
        srv.close()


def test_health_port_in_use_is_a_control_error(
    loop: Loop, health: HealthServer, controlled: FakeControlled, log: RecordingLog
) -> None:
    with pytest.raises(ControlError, match=f"cannot listen on 127.0.0.1:{health.port}"):
        HealthServer(loop, "127.0.0.1", health.port, controlled, log)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("8080", ("0.0.0.0", 8080)),
        (" 9000 ", ("0.0.0.0", 9000)),
        (":8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::]:8080", ("::", 8080)),
        ("[::1]:1", ("::1", 1)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_health_port(text: str, parsed: tuple[str, int]) -> None:
    assert parse_health_port(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a port"),
        ("0", "expected a port"),
        ("65536", "expected a port"),
        ("http", "expected a port"),
        ("８０", "expected a port"),
        ("::1:8080", "brackets"),
        ("[::1]8080", r"\[ADDRESS\]:PORT"),
        ("localhost:8080", "numeric IP address"),
        ("[127.0.0.1]:80", "numeric IP address"),
    ],
)
def test_parse_health_port_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_health_port(text)
