"""Sockets held by pyinit (issue 9 item 1) and `reload_to` (item 4), end to end.

pyinit runs as PID 1 of a PID namespace (the host's network: ports are
picked free). The servers are tests/support/listen_app.py: each answers a
connection with what it was given (pid, LISTEN_*, uid, its fds), so every
check reads what the service itself saw, through a real client connection.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, installed_pyinit
from support.helpers import (
    INSTALLED_ONLY,
    PID1_ONLY,
    SUPPORT_DIR,
    InitProcess,
    StartInit,
    assert_no_traceback,
    base_env,
    stays_true,
    support_script,
    wait_until,
)
from support.svc_helpers import host_pid, services_env, wait_log, write_toml
from test_readiness_e2e import Ctl


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ask(port: int | str, timeout: float = 5.0) -> dict[str, object]:
    """Connect (a TCP port on 127.0.0.1, or a unix socket path), read the JSON line."""
    if isinstance(port, str):
        conn = socket.socket(socket.AF_UNIX)
        conn.settimeout(timeout)
        conn.connect(port)
    else:
        conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with conn:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def answers(port: int | str) -> dict[str, object] | None:
    """ask(), or None while nothing answers yet."""
    try:
        return ask(port, timeout=1.0)
    except (OSError, ValueError):
        return None


def http_get(port: int) -> dict[str, object] | None:
    """GET / from listen_app.HttpService: its JSON, or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except OSError:
        return None


def app(*args: str) -> list[str]:
    return support_script("listen_app.py", *args)


def listening_inode(port: int) -> str | None:
    """Inode of the socket in LISTEN state on 127.0.0.1:`port` (/proc/net/tcp), or None."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":
            return fields[9]
    return None


def start(
    start_init: StartInit,
    pyinit_argv: list[str],
    as_pid1: list[str],
    tmp_path: Path,
    config: Path | None = None,
    **env: str,
) -> tuple[InitProcess, Ctl]:
    ctl_path = tmp_path / "ctl" / "ctl.sock"
    argv = [*pyinit_argv, *(["--config", str(config)] if config else [])]
    env["PYINIT_CTL_SOCKET"] = str(ctl_path)
    proc = start_init(argv, prefix=as_pid1, env=services_env(**env))
    wait_until(ctl_path.exists, 10, lambda: f"the control socket ({proc.describe()})")
    return proc, Ctl(installed_pyinit(), ctl_path)  # the pyz variant too: ctl is a client


@PID1_ONLY
def test_a_command_service_serves_on_fd_3_with_the_systemd_variables(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Compact form; LISTEN_PID is the worker's own pid; only that worker holds the socket."""
    port = free_port()
    services = f"web[listen=tcp:127.0.0.1:{port}]: {' '.join(app())}; other: sleep 1000"
    proc, ctl = start(start_init, pyinit_argv, as_pid1, tmp_path, PYINIT_SERVICES=services)
    got = wait_until(lambda: answers(port), 15, lambda: f"an answer on {port} ({proc.describe()})")
    assert got["listen_pid"] == str(got["pid"]), got
    assert got["listen_fds"] == "1" and got["listen_fdnames"] == "web", got
    assert got["fds"] == [0, 1, 2, 3], f"fd 3 only, the shim's copies closed: {got}"
    assert got["sockname"] == str(("127.0.0.1", port))
    other = host_pid(proc, int(ctl.row("other")["pid"]))
    assert sorted(os.listdir(f"/proc/{other}/fd")) == ["0", "1", "2"], "no socket leaks"
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert answers(port) is None, "closed when pyinit exits"


@INSTALLED_ONLY
@PID1_ONLY
def test_the_socket_survives_a_restart_and_a_connection_during_it_is_queued(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """`ctl restart`: while the old worker no longer accepts and the new one is not
    up yet, a client's connect() succeeds and the new worker answers it."""
    port = free_port()
    marker = tmp_path / "stopping"
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "web": {
                "cmd": app("--marker", str(marker), "--linger", "0.5"),
                "listen": [f"tcp:127.0.0.1:{port}"],
            },
        },
    )
    proc, ctl = start(start_init, pyinit_argv, as_pid1, tmp_path, config)
    first = wait_until(lambda: answers(port), 15, lambda: f"an answer ({proc.describe()})")
    inode = listening_inode(port)
    assert inode is not None
    ctl.ok("restart", "web")
    wait_until(marker.exists, 10, "the old worker to stop accepting")
    during = ask(port, timeout=10)  # connect() while nobody accepts: queued, not refused
    assert during["pid"] != first["pid"], "answered by the new worker"
    assert listening_inode(port) == inode, "the same socket: never closed or bound again"

    # Many clients through a second restart: none refused.
    failures: list[str] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                ask(port, timeout=10)
            except (OSError, ValueError) as error:
                failures.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        ctl.ok("restart", "web")
        wait_until(
            lambda: (answers(port) or {}).get("pid") not in (None, during["pid"]),
            10,
            "the third worker to answer",
        )
    finally:
        done.set()
        for thread in threads:
            thread.join(15)
    assert not failures, failures[:5]


@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
@PID1_ONLY
def test_a_python_service_serves_http_on_its_socket(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    port = free_port()
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "api": {
                "class": "listen_app:HttpService",
                "listen": [f"tcp:127.0.0.1:{port}"],
                "env": {"PYTHONPATH": str(SUPPORT_DIR)},
            },
        },
    )
    proc, _ = start(start_init, pyinit_argv, as_pid1, tmp_path, config)
    got = wait_until(lambda: http_get(port), 20, lambda: f"an HTTP answer ({proc.describe()})")
    assert got["worker"] == 0 and got["count"] == 1, got
    assert got["listen_pid"] == str(got["pid"]) and got["listen_fdnames"] == "api", got
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


@PID1_ONLY
def test_port_80_for_a_service_running_as_nobody(
    pyz_path: Path, as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """pyinit binds as root; the worker runs as nobody and serves port 80.

    pyinit runs on /usr/bin/python3 here: the exec shim runs pyinit's own
    interpreter as the service's user, and the test run's pyenv one is in
    /root, which nobody cannot enter (a container's python is world-readable).
    """
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if listening_inode(80) is not None:
        pytest.skip("port 80 is taken on this host")
    script = str(SUPPORT_DIR / "listen_app.py")
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "web": {
                "cmd": ["/usr/bin/python3", "-S", script],
                "listen": ["tcp:127.0.0.1:80"],
                "user": "nobody",
            },
        },
    )
    pyinit = ["/usr/bin/python3", str(pyz_path)]
    proc, _ = start(start_init, pyinit, as_pid1, tmp_path, config)
    got = wait_until(lambda: answers(80), 15, lambda: f"an answer on 80 ({proc.describe()})")
    assert got["uid"] == 65534 and got["listen_pid"] == str(got["pid"]), got


@INSTALLED_ONLY
@PID1_ONLY
def test_a_port_in_use_is_one_error_line_and_exit_2_with_nothing_started(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    port = free_port()
    started = tmp_path / "started"
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "first": {"cmd": ["touch", str(started)], "oneshot": True},
            "web": {"cmd": app(), "listen": [f"tcp:127.0.0.1:{port}"], "after": ["first"]},
        },
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = start_init(
            [*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=services_env()
        )
        assert proc.wait(10) == 2
    lines = proc.stderr_lines()
    assert lines == [
        f"pyinit: error: web: cannot listen on tcp:127.0.0.1:{port}: Address already in use"
    ], lines
    assert not started.exists(), "nothing started"


@INSTALLED_ONLY
def test_bad_listen_entries_are_configuration_errors(
    pyinit_argv: list[str], tmp_path: Path
) -> None:
    cases = {
        "web[listen=tcp:80000]: true": "expected a port from 1 to 65535",
        "web[listen=http:80]: true": 'expected "tcp:[HOST:]PORT"',
        "web[listen=unix:run/a.sock]: true": "absolute path",
        "a[listen=tcp:9000]: true; web[listen=tcp:0.0.0.0:9000]: true": "also listed by 'a'",
        "web[listen_mode=0660]: true": "needs a unix socket in listen",
        "web[listen=unix:/tmp/x.sock, listen_mode=999]: true": "octal",
        "web[reload_to=all]: true": "one of main, group",
        "web[listen=tcp:8000, ready=tcp:8000]: true": "a tcp check of it always passes",
    }
    for services, message in cases.items():
        done = subprocess.run(
            [*pyinit_argv, "--check"],
            capture_output=True,
            text=True,
            timeout=20,
            env=services_env(services),
        )
        assert done.returncode == 2, (services, done)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyinit: error: "), (services, lines)
        assert message in lines[0] and "(web)" in lines[0], (services, lines)
        assert_no_traceback(lines)


@INSTALLED_ONLY
def test_check_prints_the_listen_addresses(pyinit_argv: list[str], tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "web": {
                "cmd": "gunicorn --bind fd://3 app:app",
                "listen": ["tcp:8000", "tcp:[::]:8443", "unix:/run/app.sock", "udp:5353"],
                "listen_mode": "0660",
                "listen_owner": "nobody",
            },
        },
    )
    done = subprocess.run(
        [*pyinit_argv, "--check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
        env=base_env(),
    )
    assert done.returncode == 0, done
    assert (
        "  listen   tcp:0.0.0.0:8000 (fd 3), tcp:[::]:8443 (fd 4),"
        " unix:/run/app.sock (fd 5, mode 0660, owner nobody), udp:0.0.0.0:5353 (fd 6)"
    ) in done.stdout.splitlines(), done.stdout


@INSTALLED_ONLY
@PID1_ONLY
def test_a_reload_opens_and_closes_only_the_entries_it_adds_and_removes(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    kept, added, busy = free_port(), free_port(), free_port()
    path = tmp_path / "pyinit.toml"

    def write(*ports: int) -> None:
        write_toml(path, {"web": {"cmd": app(), "listen": [f"tcp:127.0.0.1:{p}" for p in ports]}})

    write(kept)
    proc, _ = start(start_init, pyinit_argv, as_pid1, tmp_path, path)
    wait_until(lambda: answers(kept), 15, lambda: f"an answer ({proc.describe()})")
    inode = listening_inode(kept)

    write(kept, added)
    proc.send(signal.SIGHUP)
    got = wait_until(lambda: answers(added), 15, lambda: f"the added port ({proc.describe()})")
    assert got["listen_fds"] == "2"
    assert listening_inode(kept) == inode, "the kept socket is not bound again"
    # With held sockets the default strategy is rolling: the old worker serves
    # `kept` until the new one (serving both) has taken over.
    wait_until(
        lambda: (answers(kept) or {}).get("pid") == got["pid"],
        15,
        lambda: f"one worker serving both ({proc.describe()})",
    )

    # A port that cannot be bound: the reload fails and nothing changes.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", busy))
        taken.listen()
        write(kept, added, busy)
        proc.send(signal.SIGHUP)
        (line,) = wait_log(proc, r"reload refused")
        assert f"web: cannot listen on tcp:127.0.0.1:{busy}: Address already in use" in line
        stays_true(
            lambda: (answers(added) or {}).get("pid") == got["pid"],
            0.5,
            "the same worker, both sockets kept",
        )

    write(kept)
    proc.send(signal.SIGHUP)
    wait_until(lambda: listening_inode(added) is None, 10, "the removed port to close")
    assert listening_inode(kept) == inode
    assert (wait_until(lambda: answers(kept), 10, "an answer"))["listen_fds"] == "1"


@INSTALLED_ONLY
@PID1_ONLY
def test_reload_signal_goes_to_the_main_process_unless_reload_to_is_group(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    log = tmp_path / "events"
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "main": {"cmd": support_script("group_app.py", str(log), "m")},
            "group": {"cmd": support_script("group_app.py", str(log), "g"), "reload_to": "group"},
        },
    )
    proc, _ = start(start_init, pyinit_argv, as_pid1, tmp_path, config)

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    wait_until(
        lambda: len([x for x in lines() if " start " in x]) == 4,
        15,
        lambda: f"4 processes up ({proc.describe()})",
    )
    proc.send(signal.SIGHUP)
    wait_until(
        lambda: (
            {"m main hup", "g main hup", "g child hup"} <= {x.rsplit(" ", 1)[0] for x in lines()}
        ),
        10,
        lambda: f"the HUPs ({lines()})",
    )
    stays_true(
        lambda: not [x for x in lines() if x.startswith("m child hup")],
        0.5,
        "the main service's child gets no SIGHUP",
    )
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


@INSTALLED_ONLY
@PID1_ONLY
def test_unix_and_udp_sockets_with_mode_and_owner(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """The socket file gets its mode and owner; a stale one is replaced; a udp
    socket is handed over too; the file is removed when pyinit exits."""
    path = tmp_path / "run" / "app.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # left by a server that is gone: nobody listens
    udp_port = free_port()
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "web": {
                "cmd": app(),
                "listen": [f"unix:{path}", f"udp:127.0.0.1:{udp_port}"],
                "listen_mode": "0660",
                "listen_owner": "nobody",
            },
        },
    )
    proc, _ = start(start_init, pyinit_argv, as_pid1, tmp_path, config)
    got = wait_until(lambda: answers(str(path)), 15, lambda: f"an answer ({proc.describe()})")
    assert got["listen_fds"] == "2" and got["fds"] == [0, 1, 2, 3, 4], got
    info = path.stat()
    assert oct(info.st_mode & 0o777) == oct(0o660) and info.st_uid == 65534
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(b"hello", ("127.0.0.1", udp_port))
        data, _ = client.recvfrom(65536)
    assert json.loads(data)["sockname"] == str(("127.0.0.1", udp_port))
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not path.exists(), "pyinit removes the socket file it created"

    path.write_text("not a socket")
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=services_env())
    assert proc.wait(10) == 2
    assert proc.stderr_lines() == [
        f"pyinit: error: web: cannot listen on unix:{path}: {path} exists and is not a socket"
    ]
    assert path.read_text() == "not a socket", "a file that is not a socket is never removed"


@INSTALLED_ONLY
@PID1_ONLY
def test_service_manager_workers_forked_from_a_listen_service_serve_on_its_socket(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """A ServiceManager app as a command service: each forked worker's
    `self.sockets` is the manager's socket from pyinit, LISTEN_PID its own pid."""
    port = free_port()
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "app": {
                "cmd": support_script("listen_manager.py"),
                "listen": [f"tcp:127.0.0.1:{port}"],
                "env": {"PYTHONPATH": os.pathsep.join([str(SUPPORT_DIR), str(REPO_ROOT)])},
            }
        },
    )
    proc, _ = start(start_init, pyinit_argv, as_pid1, tmp_path, config)
    seen: dict[int, dict[str, object]] = {}

    def both_workers() -> bool:
        got = http_get(port)
        if got is not None:
            seen[int(got["worker"])] = got  # type: ignore[call-overload]
        return set(seen) == {0, 1}

    wait_until(both_workers, 20, lambda: f"both workers answering, saw {seen} ({proc.describe()})")
    for got in seen.values():
        assert got["listen_pid"] == str(got["pid"]) and got["count"] == 1, got
    assert seen[0]["pid"] != seen[1]["pid"]


@INSTALLED_ONLY
@PID1_ONLY
def test_gunicorn_serves_on_the_socket_and_reloads_gracefully_on_sighup(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """gunicorn takes LISTEN_FDS (no --bind: LISTEN_PID must be the master's own
    pid, or gunicorn ignores them and binds its default :8000); a SIGHUP reload reaches
    its master (reload_to = "main", the default), which replaces its 2 workers
    gracefully: clients making new connections meanwhile see no failure."""
    pytest.importorskip("gunicorn")
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    port = free_port()
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "web": {
                "cmd": [gunicorn, "-w", "2", "--chdir", str(SUPPORT_DIR), "wsgi_app:app"],
                "listen": [f"tcp:127.0.0.1:{port}"],
            }
        },
    )
    proc, ctl = start(start_init, pyinit_argv, as_pid1, tmp_path, config)

    def pid_answering() -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return int(response.read().split()[1])
        except OSError:
            return None

    wait_until(pid_answering, 20, lambda: f"gunicorn answering ({proc.describe()})")
    master = ctl.row("web")["pid"]
    failures: list[str] = []
    served: list[int] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                    served.append(int(response.read().split()[1]))
            except OSError as error:
                failures.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            before = set(served)
            proc.send(signal.SIGHUP)
            wait_until(lambda before=before: set(served[-20:]) - before, 20, "new gunicorn workers")
    finally:
        done.set()
        for thread in threads:
            thread.join(15)
    assert not failures, failures[:5]
    assert ctl.row("web")["pid"] == master, "the master was reloaded, not restarted"


@INSTALLED_ONLY
@PID1_ONLY
def test_a_command_that_cannot_be_run_reads_as_an_exec_error(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Through the exec shim, "command not found" is still one line and status 127."""
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "web": {
                "cmd": ["no-such-command-xyz"],
                "listen": [f"tcp:127.0.0.1:{free_port()}"],
                "restart": "never",
                "critical": True,
            }
        },
    )
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=services_env())
    assert proc.wait(10) == 127
    lines = proc.stderr_lines()
    assert "pyinit: no-such-command-xyz: No such file or directory" in lines, lines
    assert_no_traceback(lines)
