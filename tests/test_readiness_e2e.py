"""Readiness end to end (SPEC 4 downstream, SPEC 6 `pyinit ctl`), pyinit as PID 1.

Services become ready the ways real programs say so: `systemd-notify --ready`,
the `sdnotify` package, a Python Service's notify_ready(), a file appearing,
an exec check passing. Each notifying service waits for a gate file the test
creates, so "not ready before, ready after" is shown on one run, read back
through `pyinit ctl status --json` as a user would. Every pyinit gets its own
control socket under tmp_path (the default /run/pyinit/ctl.sock is shared by
every pyinit on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    PID1_ONLY,
    InitProcess,
    StartInit,
    base_env,
    descendants,
    stays_true,
    wait_until,
)
from support.svc_helpers import Events, services_env, svc_argv, wait_log, write_toml

#: Wait for a gate file, then exec the rest of argv (sh: no Python start-up cost).
GATE_SH = 'while [ ! -e "$0" ]; do sleep 0.02; done; exec "$@"'

#: sdnotify package client: wait for the gate file argv[1], then READY=1, then idle.
SDNOTIFY_CLIENT = """
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
import sdnotify
sdnotify.SystemdNotifier(debug=True).notify("READY=1")
while True:
    time.sleep(3600)
"""

#: A Python Service that calls notify_ready() once its gate file exists.
GATED_SERVICE = '''
import os
import threading

from pyinit import Service


class Gated(Service):
    """Ready (notify_ready) only once `gate` exists."""

    def __init__(self, worker_id, gate):
        super().__init__(worker_id)
        self.gate = gate
        self.stopped = threading.Event()

    def run(self):
        while not os.path.exists(self.gate):
            if self.stopped.wait(0.02):
                return
        self.notify_ready()
        self.stopped.wait()

    def terminate(self):
        self.stopped.set()
'''

#: A notify service with a watchdog: READY=1, then WATCHDOG=1 every 0.3 s, `argv[1]` times
#: (-1: forever), then silence.
PINGER = """
import os, socket, sys, time
count = int(sys.argv[1])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(text):
    sock.sendto(text.encode(), os.environ["NOTIFY_SOCKET"])
send("READY=1")
while count != 0:
    time.sleep(0.3)
    send("WATCHDOG=1")
    count -= 1
while True:
    time.sleep(3600)
"""


class Ctl:
    """`pyinit ctl --ctl-socket PATH ...`, run as a user would."""

    def __init__(self, pyinit: str, path: Path) -> None:
        self.pyinit = pyinit
        self.path = path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.pyinit, "ctl", "--ctl-socket", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=base_env(),
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"pyinit ctl {' '.join(args)}: {done}"
        return done.stdout

    def rows(self) -> list[dict[str, object]]:
        done = self.run("status", "--json")
        # 3: a worker is not ok (failed, backing off, stopped, not ready): still a full answer.
        assert done.returncode in (0, 3), f"pyinit ctl status --json: {done}"
        return json.loads(done.stdout)

    def row(self, service: str, worker: int = 0) -> dict[str, object]:
        for row in self.rows():
            if row["service"] == service and row["worker"] == worker:
                return row
        raise AssertionError(f"no status row for {service}[{worker}]")

    def wait_row(self, service: str, predicate, timeout: float, what: str) -> dict[str, object]:
        return wait_until(
            lambda: (r := self.row(service)) and predicate(r) and r,
            timeout,
            lambda: f"{service}: {what}; rows: {self.rows()}",
        )


def start(
    start_init: StartInit,
    pyinit_argv: list[str],
    as_pid1: list[str],
    tmp_path: Path,
    services: dict[str, dict[str, object]],
    *flags: str,
) -> tuple[InitProcess, Ctl]:
    config = write_toml(tmp_path / "pyinit.toml", services)
    ctl_path = tmp_path / "ctl" / "ctl.sock"
    env = services_env(PYINIT_CTL_SOCKET=str(ctl_path))
    proc = start_init([*pyinit_argv, "--config", str(config), *flags], prefix=as_pid1, env=env)
    ctl = Ctl(pyinit_argv[0], ctl_path)
    wait_until(ctl_path.exists, 10, lambda: f"the control socket ({proc.describe()})")
    return proc, ctl


def notify_socket_of(proc: InitProcess) -> str:
    """The NOTIFY_SOCKET pyinit gave its services, read from a service's environment."""

    def look() -> str | None:
        for pid in descendants(proc.pid):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for entry in environ:
                if entry.startswith(b"NOTIFY_SOCKET="):
                    return entry.partition(b"=")[2].decode()
        return None

    return wait_until(look, 10, "a service with NOTIFY_SOCKET in its environment")


def stop(proc: InitProcess) -> None:
    proc.send(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.describe()


# --------------------------------------------------------------------------- notify


@INSTALLED_ONLY
@PID1_ONLY
@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="systemd-notify not installed")
def test_notify_clients_make_their_own_service_ready_and_strangers_cannot(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """systemd-notify, sdnotify and notify_ready() each flip exactly their service to
    ready, and only after their gate opened; `after` waits for that readiness; a
    READY=1 (claiming another MAINPID) from a process outside every service is ignored."""
    events = Events(tmp_path / "events")
    gates = {name: tmp_path / f"gate-{name}" for name in ("sysd", "sdn", "klass")}
    (tmp_path / "gatedmod.py").write_text(GATED_SERVICE)
    proc, ctl = start(
        start_init,
        pyinit_argv,
        as_pid1,
        tmp_path,
        {
            "sysd": {
                "cmd": [
                    "sh",
                    "-c",
                    GATE_SH,
                    str(gates["sysd"]),
                    "sh",
                    "-c",
                    "systemd-notify --ready && exec sleep 1000",
                ],
                "ready": "notify",
            },
            "sdn": {
                "cmd": [sys.executable, "-c", SDNOTIFY_CLIENT, str(gates["sdn"])],
                "ready": "notify",
            },
            "klass": {
                "class": "gatedmod:Gated",
                "kwargs": {"gate": str(gates["klass"])},
                "env": {"PYTHONPATH": str(tmp_path)},
                "ready": "notify",
            },
            "never": {"cmd": ["sleep", "1000"], "ready": "notify"},
            "dep": {"cmd": svc_argv(events.path, "dep"), "after": ["sysd"]},
        },
        "--log-level",
        "debug",
    )
    events.context = proc.describe
    notify_path = notify_socket_of(proc)
    names = ("sysd", "sdn", "klass", "never")
    wait_until(
        lambda: all(ctl.row(n)["state"] == "starting" and ctl.row(n)["pid"] for n in names),
        10,
        lambda: f"every notify service started, not ready: {ctl.rows()}",
    )
    assert not any(ctl.row(n)["ready"] for n in names), ctl.rows()
    assert not events.starts("dep"), "dep started before sysd was ready"

    # Strangers: one in pyinit's PID namespace but in no service, one outside it.
    never_pid = ctl.row("never")["pid"]
    stranger = (
        "import sdnotify; sdnotify.SystemdNotifier()"
        f".notify('READY=1\\nMAINPID={never_pid}\\nSTATUS=impostor')"
    )
    stranger_env = {**base_env(), "NOTIFY_SOCKET": notify_path}
    inside = ["nsenter", "-t", str(proc.pid), "-p", "--", sys.executable, "-c", stranger]
    for argv in (inside, [sys.executable, "-c", stranger]):
        done = subprocess.run(argv, env=stranger_env, capture_output=True, timeout=10)
        assert done.returncode == 0, done

    opened: dict[str, float] = {}
    for name in ("sysd", "sdn", "klass"):
        opened[name] = time.monotonic()
        gates[name].touch()
        row = ctl.wait_row(name, lambda r: r["ready"], 10, "ready after its gate opened")
        assert row["state"] == "running"
        others = {n: ctl.row(n)["ready"] for n in names if n != name and n not in opened}
        assert not any(others.values()), f"{name}'s READY=1 made others ready: {others}"

    # The strangers' datagrams came before the gates opened: handled by now, and ignored.
    wait_log(proc, r"notify message from pid \d+, not a service: ignored")
    wait_log(proc, r"notify: dropped a datagram with no sender pid in our namespace")
    never = ctl.row("never")
    assert not never["ready"] and never["state"] == "starting", never
    assert never.get("status", "") != "impostor", never
    assert ctl.run("ready").returncode == 1, "not ready while `never` waits"

    (dep,) = events.wait_starts("dep", 1)
    assert dep.time > opened["sysd"], "dep waited for sysd to be ready, not just started"
    wait_log(proc, r"sysd\[0\]: ready")
    stop(proc)


@INSTALLED_ONLY
@PID1_ONLY
def test_ready_timeout_and_watchdog_restart_silent_services(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """ready_timeout: a notify service that never says READY=1 is restarted. watchdog:
    the one that stops sending WATCHDOG=1 is restarted, the one that keeps sending is not."""
    fast = {"threshold": "0.2s", "min_delay": "0.1s", "max_delay": "0.1s"}
    proc, ctl = start(
        start_init,
        pyinit_argv,
        as_pid1,
        tmp_path,
        {
            "mute": {
                "cmd": ["sleep", "1000"],
                "ready": "notify",
                "ready_timeout": "1s",
                "backoff": fast,
            },
            "steady": {
                "cmd": [sys.executable, "-S", "-c", PINGER, "-1"],
                "ready": "notify",
                "watchdog": "1s",
                "backoff": fast,
            },
            "lapsed": {
                "cmd": [sys.executable, "-S", "-c", PINGER, "2"],
                "ready": "notify",
                "watchdog": "1s",
                "backoff": fast,
            },
        },
    )
    first = {
        n: ctl.wait_row(n, lambda r: r["pid"], 10, "started")["pid"]
        for n in ("mute", "steady", "lapsed")
    }
    ctl.wait_row("steady", lambda r: r["ready"], 5, "ready")
    ctl.wait_row("lapsed", lambda r: r["ready"], 5, "ready")

    wait_log(proc, r"mute\[0\]: not ready within 1 s", timeout=5)
    mute = ctl.wait_row("mute", lambda r: r["pid"] and r["pid"] != first["mute"], 5, "a new pid")
    assert mute["restarts"] >= 1 and not mute["ready"], mute

    # lapsed pinged until ~0.6 s after READY=1: its watchdog runs out ~1 s later.
    wait_log(proc, r"lapsed\[0\]: no WATCHDOG=1 for 1 s", timeout=5)
    lapsed = ctl.wait_row(
        "lapsed", lambda r: r["pid"] and r["pid"] != first["lapsed"], 5, "a new pid"
    )
    assert lapsed["restarts"] >= 1, lapsed

    stays_true(lambda: ctl.row("steady")["pid"] == first["steady"], 1.5, "steady keeps its pid")
    steady = ctl.row("steady")
    assert steady["ready"] and steady["restarts"] == 0, steady
    assert not [line for line in proc.stderr_lines(0) if "steady[0]: no WATCHDOG" in line]
    stop(proc)


# --------------------------------------------------------------------------- probes, ctl


def http_status(port: int, path: str) -> int:
    """Status code of GET path on 127.0.0.1:port (a kubelet httpGet probe);
    0 while nothing listens yet (pyinit still starting), as a probe sees it."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        return 0
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return int(data.split()[1])


@INSTALLED_ONLY
@PID1_ONLY
def test_file_and_exec_readiness_gate_after_ctl_ready_and_readyz(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """file: and exec readiness hold back `after` and the whole pod's readiness:
    `pyinit ctl ready` exits 1 and /readyz says 503 until both pass, then 0 and 200."""
    events = Events(tmp_path / "events")
    flag_file, exec_flag = tmp_path / "flag-file", tmp_path / "flag-exec"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc, ctl = start(
        start_init,
        pyinit_argv,
        as_pid1,
        tmp_path,
        {
            "filesvc": {"cmd": ["sleep", "1000"], "ready": f"file:{flag_file}"},
            "execsvc": {
                "cmd": ["sleep", "1000"],
                "ready": {"exec": ["test", "-e", str(exec_flag)], "interval": "0.2s"},
            },
            "web": {"cmd": svc_argv(events.path, "web"), "after": ["filesvc", "execsvc"]},
        },
        "--health-port",
        f"127.0.0.1:{port}",
    )
    events.context = proc.describe
    wait_until(lambda: http_status(port, "/healthz") == 200, 5, "/healthz 200")
    assert http_status(port, "/readyz") == 503
    not_ready = ctl.run("ready")
    assert not_ready.returncode == 1 and not_ready.stdout.startswith("not ready"), not_ready
    assert "filesvc[0]" in not_ready.stdout and "execsvc[0]" in not_ready.stdout, not_ready

    exec_flag.touch()
    ctl.wait_row("execsvc", lambda r: r["ready"], 5, "ready once the check passes")
    stays_true(
        lambda: not events.starts("web") and ctl.run("ready").returncode == 1,
        0.5,
        "web waits for filesvc too; still not ready",
    )
    assert http_status(port, "/readyz") == 503
    opened = time.monotonic()
    flag_file.touch()
    (web,) = events.wait_starts("web", 1, timeout=5)
    assert web.time > opened
    wait_until(lambda: ctl.run("ready").returncode == 0, 5, "pyinit ctl ready exits 0")
    assert ctl.ok("ready") == "ready\n"  # issue 11: one word when ready
    assert http_status(port, "/readyz") == 200

    # Readiness flips back when a service goes away, and again when it returns.
    ctl.ok("stop", "web")
    wait_until(lambda: ctl.run("ready").returncode == 1, 5, "not ready with web stopped")
    assert http_status(port, "/readyz") == 503
    ctl.ok("start", "web")
    wait_until(lambda: http_status(port, "/readyz") == 200, 5, "/readyz 200 again")
    stop(proc)


@INSTALLED_ONLY
@PID1_ONLY
def test_ctl_verbs_end_to_end(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """status (table and --json), stop, start, restart, signal and reload on a live pyinit."""
    events = Events(tmp_path / "events")
    proc, ctl = start(
        start_init,
        pyinit_argv,
        as_pid1,
        tmp_path,
        {
            "web": {"cmd": svc_argv(events.path, "web"), "workers": 2},
            "worker": {"cmd": svc_argv(events.path, "worker")},
        },
    )
    events.context = proc.describe
    events.wait_starts("web", 2)
    events.wait_starts("worker", 1)
    wait_until(lambda: ctl.run("ready").returncode == 0, 5, "ready")

    table = ctl.ok("status").splitlines()
    header = table[0].split()
    assert header == [
        "SERVICE",
        "WORKER",
        "PID",
        "STATE",
        "READY",
        "UPTIME",
        "RESTARTS",
        "LAST",
        "EXIT",
        "RSS",
        "CPU",
    ], table[0]
    assert sorted(line.split()[:2] for line in table[1:]) == [
        ["web", "0"],
        ["web", "1"],
        ["worker", "0"],
    ], table

    rows = ctl.rows()
    fields = {
        "service",
        "worker",
        "pid",
        "state",
        "ready",
        "uptime",
        "restarts",
        "last_exit",
        "rss",
        "cpu",
    }
    for row in rows:
        assert fields <= set(row), row
        assert row["state"] == "running" and row["ready"] is True and row["restarts"] == 0
        assert isinstance(row["rss"], int) and row["rss"] > 1_000_000, row
        assert isinstance(row["cpu"], float) and isinstance(row["uptime"], float), row
    pids = {(r["service"], r["worker"]): r["pid"] for r in rows}
    started = {(e.name, int(e.worker)): e.pid for e in events.all() if e.kind == "start"}
    assert pids == started, "status pids are the services' own (namespace) pids"

    # signal NAME SIG: to every worker of that service only.
    assert "SIGUSR1" in ctl.ok("signal", "web", "USR1")
    events.wait_for(
        lambda ev: len([e for e in ev if e.name == "web" and e.signum == signal.SIGUSR1]) == 2,
        5,
        "SIGUSR1 at both web workers",
    )
    assert not [e for e in events.of("worker", "signal")], "worker got web's signal"

    # stop NAME: stays stopped; start NAME: back, new pid.
    ctl.ok("stop", "worker")
    events.wait_for(lambda ev: events.of("worker", "stop"), 5, "worker stopped")
    row = ctl.wait_row("worker", lambda r: r["state"] == "stopped", 5, "stopped")
    assert row["pid"] == 0 and not row["ready"], row
    stays_true(lambda: len(events.starts("worker")) == 1, 0.5, "a stopped service stays stopped")
    ctl.ok("start", "worker")
    again = events.wait_starts("worker", 2)[-1]
    assert ctl.wait_row("worker", lambda r: r["ready"], 5, "running")["pid"] == again.pid

    # restart NAME: each worker stops and comes back, same worker ids.
    before = {r["worker"]: r["pid"] for r in ctl.rows() if r["service"] == "web"}
    ctl.ok("restart", "web")
    events.wait_starts("web", 4)
    wait_until(
        lambda: (
            {
                r["worker"]: r["pid"] for r in ctl.rows() if r["service"] == "web" and r["ready"]
            }.keys()
            == {0, 1}
        ),
        5,
        "both web workers back",
    )
    after = {r["worker"]: r["pid"] for r in ctl.rows() if r["service"] == "web"}
    assert all(after[w] != before[w] for w in (0, 1)), (before, after)

    # reload: no file change, so each service gets its reload signal (SIGHUP).
    assert "reload" in ctl.ok("reload")
    events.wait_for(
        lambda ev: len([e for e in ev if e.signum == signal.SIGHUP]) == 3, 5, "SIGHUP at all 3"
    )

    # Errors: an unknown service, a bad signal.
    done = ctl.run("restart", "nope")
    assert done.returncode == 1 and "no such service" in done.stderr, done
    assert ctl.run("signal", "web", "NOPE").returncode == 2
    stop(proc)
    # pyinit gone: its socket is gone too, and ctl says so clearly.
    done = ctl.run("status")
    assert done.returncode == 1, done
    assert "is pyinit running?" in done.stderr and "Traceback" not in done.stderr, done


@INSTALLED_ONLY
def test_ctl_without_a_running_pyinit_is_a_clear_error(
    pyinit_argv: list[str], tmp_path: Path
) -> None:
    """Every verb, with nothing listening: one line on stderr, exit 1, never a traceback."""
    ctl = Ctl(pyinit_argv[0], tmp_path / "ctl" / "ctl.sock")
    for verb in (["status"], ["status", "--json"], ["ready"], ["reload"], ["stop", "web"]):
        done = ctl.run(*verb)
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyinit"), done
        assert str(ctl.path) in lines[0] and "pyinit running" in lines[0], done
        assert not done.stdout
    # A socket file nobody listens on (a pyinit that was SIGKILLed) reads the same.
    ctl.path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(ctl.path))
    stale.close()
    done = ctl.run("status")
    assert done.returncode == 1 and "pyinit running" in done.stderr, done
    os.unlink(ctl.path)
