"""Issue 7, the edges: hostile configuration input, the control socket, notify, health port.

Each test runs the real `pyinit` (the installed command) as a user would, and
checks what a user sees: exit status 2 with one `pyinit: error:` line, a ctl
verb's exit status, a probe answered. Tests that need pyinit as PID 1 with
read-only /run or /tmp run it under `unshare --pid --fork --mount
--mount-proc` behind a small `sh` that remounts before it execs pyinit.
Every test names its issue 7 item.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import installed_pyinit
from support.helpers import InitProcess, base_env, wait_until
from support.svc_helpers import wait_log

NOBODY = 65534
TIMEOUT = 10.0


def pyinit_cmd() -> str:
    return installed_pyinit()


def run_pyinit(
    *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """One pyinit run to its end (bounded), output captured."""
    return subprocess.run(
        [pyinit_cmd(), *args],
        env=base_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def assert_usage_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, one `pyinit: error:` line on stderr naming `words`, no traceback."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done
    assert len(lines) == 1 and lines[0].startswith("pyinit: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def ctl(*args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT):
    return subprocess.run(
        [pyinit_cmd(), "ctl", *args],
        env=base_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def started() -> Iterator[list[InitProcess]]:
    """InitProcesses a test starts; all killed at teardown."""
    procs: list[InitProcess] = []
    yield procs
    for proc in procs:
        # SIGTERM first: a service killed under a live pyinit is restarted, and
        # that new child would outlive close()'s list of processes to kill.
        if proc.poll() is None:
            try:
                proc.send(signal.SIGTERM)
                proc.wait(5)
            except (AssertionError, ProcessLookupError):
                pass
        proc.close()


def start(
    procs: list[InitProcess], argv: list[str], env: dict[str, str], prefix: list[str] | None = None
) -> InitProcess:
    proc = InitProcess(argv, env=base_env(env), prefix=prefix or ())
    procs.append(proc)
    return proc


# -- item 3: --config must name a regular file of sane size -----------------------------


def test_issue_7_3_config_fifo_is_refused_not_waited_on(tmp_path: Path):
    """A FIFO as --config hung PID 1 forever with no message."""
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    done = run_pyinit("--config", str(fifo), timeout=5)
    assert_usage_error(done, str(fifo), "not a regular file")
    done = run_pyinit("--check", "--config", str(fifo), timeout=5)
    assert_usage_error(done, str(fifo), "not a regular file")


def test_issue_7_3_config_dev_zero_and_huge_file_are_refused(tmp_path: Path):
    """/dev/zero gave a MemoryError traceback; a 50 MB file took 40 s and 518 MB."""
    done = run_pyinit("--config", "/dev/zero", timeout=5)
    assert_usage_error(done, "/dev/zero", "not a regular file")
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as file:
        file.write(b'[services.web]\ncmd = "sleep 1"\n')
        file.write(b"# padding\n" * 300_000)  # 3 MB of comments: valid TOML
    began = time.monotonic()
    done = run_pyinit("--config", str(huge), timeout=5)
    assert_usage_error(done, str(huge), "1 MiB")
    assert time.monotonic() - began < 3


def test_issue_7_3_config_directory_unreadable_and_not_utf8(tmp_path: Path):
    """Each is one line naming the file, exit 2."""
    assert_usage_error(run_pyinit("--config", str(tmp_path)), str(tmp_path), "directory")
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'[services.web]\ncmd = "caf\xe9"\n')
    assert_usage_error(run_pyinit("--config", str(latin)), str(latin), "UTF-8")
    secret = tmp_path / "secret.toml"
    secret.write_text('[services.web]\ncmd = "sleep 1"\n')
    secret.chmod(0)
    os.chmod(tmp_path, 0o755)
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         pyinit_cmd(), "--config", str(secret)],
        env=base_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert_usage_error(done, str(secret), "Permission denied")


def test_issue_7_3_reload_refuses_a_fifo_config(tmp_path: Path, started: list[InitProcess]):
    """At reload the same check refuses the reload: the old services keep running."""
    config = tmp_path / "pyinit.toml"
    config.write_text('[services.web]\ncmd = ["sleep", "100"]\n')
    sock = tmp_path / "ctl" / "ctl.sock"
    env = {"PYINIT_CTL_SOCKET": str(sock)}
    proc = start(started, [pyinit_cmd(), "--config", str(config)], env)
    wait_until(sock.exists, message="the control socket")
    config.unlink()
    os.mkfifo(config)
    done = ctl("reload", env=env, timeout=5)
    assert done.returncode == 1, done
    assert "not a regular file" in done.stderr
    wait_log(proc, r"reload refused.*not a regular file")
    assert proc.poll() is None


# -- item 6: every number is bounded -------------------------------------------------------


@pytest.mark.parametrize(
    "services",
    [
        "a[99999999999999999999999]: true",
        "a[workers=10001]: true",
        "a[max_restarts=99999999999999999999999]: true",
        "a[grace=1e300]: true",
        "a[every=99999999999d]: true",
        "a[ready_timeout=1e30]: true",
        "a[restart_window=1e300]: true",
    ],
)
def test_issue_7_6_huge_numbers_fail_check_and_start(services: str):
    """`a[99999999999999999999999]: true` passed --check, then died of MemoryError at start."""
    env = {"PYINIT_SERVICES": services}
    assert_usage_error(run_pyinit("--check", env=env), "PYINIT_SERVICES entry 1 (a)")
    assert_usage_error(run_pyinit(env=env), "PYINIT_SERVICES entry 1 (a)")


@pytest.mark.parametrize(
    "table",
    [
        "workers = 99999999999999999",
        "max_restarts = 9223372036854775807",
        "grace = 1e300",
        'backoff = { max_delay = "999999999d" }',
        "backoff = { threshold = 1e100 }",
        'ready = "tcp:99999999999999999999999"',
    ],
)
def test_issue_7_6_huge_numbers_in_the_toml_file(tmp_path: Path, table: str):
    """The same bounds hold in the TOML form."""
    config = tmp_path / "pyinit.toml"
    config.write_text(f'[services.a]\ncmd = "true"\n{table}\n')
    assert_usage_error(run_pyinit("--check", "--config", str(config)), f"{config}:3")


def test_issue_7_6_the_bounds_themselves_are_accepted():
    """The largest values allowed still pass --check (the bound is not off by one)."""
    env = {"PYINIT_SERVICES": "a[workers=10000, max_restarts=1000000, grace=36500d]: true"}
    done = run_pyinit("--check", env=env)
    assert done.returncode == 0, done


# -- item 16: no services configured is an error at start as at --check --------------------


def test_issue_7_16_empty_config_file_is_refused_at_start(tmp_path: Path):
    """An empty file ran zero services at start, while --check said exit 2."""
    config = tmp_path / "empty.toml"
    config.write_text("# nothing yet\n")
    assert_usage_error(run_pyinit("--check", "--config", str(config)), "no services configured")
    assert_usage_error(run_pyinit("--config", str(config), timeout=5), "no services configured")
    env = {"PYINIT_SERVICES": " ; ;"}
    assert_usage_error(run_pyinit(env=env, timeout=5), "no services configured")


def test_issue_7_16_empty_config_file_with_a_command_is_fine(tmp_path: Path):
    """With a main COMMAND, a file without services is allowed (the command is the service)."""
    config = tmp_path / "empty.toml"
    config.write_text("[pyinit]\ngrace = 3\n")
    done = run_pyinit("--config", str(config), "--", "sh", "-c", "exit 7")
    assert done.returncode == 7, done


def test_issue_7_16_reload_of_an_emptied_file_is_refused(
    tmp_path: Path, started: list[InitProcess]
):
    """At reload an empty file stopped every service; now it is refused."""
    config = tmp_path / "pyinit.toml"
    config.write_text('[services.web]\ncmd = ["sleep", "100"]\n')
    sock = tmp_path / "ctl" / "ctl.sock"
    env = {"PYINIT_CTL_SOCKET": str(sock)}
    start(started, [pyinit_cmd(), "--config", str(config)], env)
    wait_until(sock.exists, message="the control socket")
    config.write_text("")
    done = ctl("reload", env=env, timeout=5)
    assert done.returncode == 1 and "no services configured" in done.stderr, done
    status = json.loads(ctl("status", "--json", env=env).stdout)
    assert [row["service"] for row in status] == ["web"] and status[0]["pid"] > 0


# -- item 24: `pyinit ctl reload` says when the reload was refused ---------------------------


def test_issue_7_24_ctl_reload_fails_when_the_reload_is_refused(
    tmp_path: Path, started: list[InitProcess]
):
    """`pyinit ctl reload` exited 0 when the file was invalid and nothing was applied."""
    config = tmp_path / "pyinit.toml"
    config.write_text('[services.web]\ncmd = ["sleep", "100"]\n')
    sock = tmp_path / "ctl" / "ctl.sock"
    env = {"PYINIT_CTL_SOCKET": str(sock)}
    start(started, [pyinit_cmd(), "--config", str(config)], env)
    wait_until(sock.exists, message="the control socket")
    config.write_text('[services.web]\ncmd = ["sleep", "100"]\nworkers = "many"\n')
    done = ctl("reload", env=env, timeout=5)
    assert done.returncode == 1, done
    assert "reload failed" in done.stderr and f"{config}:3" in done.stderr, done
    config.write_text('[services.web]\ncmd = ["sleep", "100"]\nworkers = 2\n')
    done = ctl("reload", env=env, timeout=5)
    assert done.returncode == 0, done


# -- item 22: [pyinit] settings of the file take effect ----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str = "/healthz", timeout: float = 2.0) -> int:
    """Status code of one GET, or 0 when the connection failed."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def test_issue_7_22_pyinit_table_settings_take_effect(tmp_path: Path, started: list[InitProcess]):
    """log_format, log_level, ctl_socket and health_port were accepted, then ignored."""
    sock = tmp_path / "from-file" / "ctl.sock"
    port = free_port()
    config = tmp_path / "pyinit.toml"
    config.write_text(
        textwrap.dedent(f"""\
            [pyinit]
            log_format = "json"
            log_level = "debug"
            ctl_socket = "{sock}"
            health_port = "127.0.0.1:{port}"
            [services.web]
            cmd = ["sleep", "100"]
            """)
    )
    proc = start(started, [pyinit_cmd(), "--config", str(config)], {})
    wait_until(sock.exists, message=lambda: f"the socket from the file; {proc.describe()}")
    wait_until(lambda: http_get(port) == 200, message="the health port from the file")
    lines = wait_log(proc, r"web\[0\]")
    assert json.loads(lines[0])["service"] == "web"
    levels = {json.loads(line)["level"].lower() for line in proc.stderr_lines(0)}
    assert "debug" in levels, proc.stderr_lines(0)
    done = ctl("--ctl-socket", str(sock), "ready")
    assert done.returncode == 0, done


def test_issue_7_22_flags_and_variables_win_over_the_file(
    tmp_path: Path, started: list[InitProcess]
):
    """flag > variable > file > default."""
    config = tmp_path / "pyinit.toml"
    config.write_text(
        '[pyinit]\nlog_format = "json"\nlog_level = "error"\n'
        '[services.web]\ncmd = ["sleep", "100"]\n'
    )
    sock = tmp_path / "ctl" / "ctl.sock"
    env = {"PYINIT_CTL_SOCKET": str(sock), "PYINIT_LOG_FORMAT": "text"}
    proc = start(started, [pyinit_cmd(), "-v", "--config", str(config)], env)
    lines = wait_log(proc, r"web\[0\]")
    assert lines[0].startswith("pyinit: "), lines  # text (variable), at debug/info (-v)


# -- item 7: a ctl client that hangs up early costs pyinit nothing ---------------------------


def test_issue_7_7_ctl_client_closing_before_its_reply_kills_nothing(
    tmp_path: Path, started: list[InitProcess]
):
    """An exec probe killed at its timeout raised SIGPIPE in pyinit, forwarded to every service."""
    sock = tmp_path / "ctl" / "ctl.sock"
    port = free_port()
    env = {
        "PYINIT_CTL_SOCKET": str(sock),
        "PYINIT_HEALTH_PORT": f"127.0.0.1:{port}",
        "PYINIT_SERVICES": "web: sleep 100",
    }
    proc = start(started, [pyinit_cmd()], env)
    wait_until(sock.exists, message="the control socket")
    wait_until(lambda: http_get(port) == 200, message="the health port")
    before = json.loads(ctl("status", "--json", env=env).stdout)[0]["pid"]
    for _ in range(20):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(sock))
        client.sendall(b'{"verb": "status"}\n')
        client.close()
        probe = socket.create_connection(("127.0.0.1", port), timeout=2)
        probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        probe.close()
    assert ctl("ready", env=env).returncode == 0
    rows = json.loads(ctl("status", "--json", env=env).stdout)
    assert rows[0]["pid"] == before and rows[0]["restarts"] == 0, rows
    assert not [line for line in proc.stderr_lines(0) if "SIGPIPE" in line]


# -- items 17 and 19: sockets in a hostile /tmp, or with no writable file system --------------

#: `sh -c` prelude run as PID 1 of fresh PID and mount namespaces, then exec pyinit:
#: /run read-only, /tmp a private tmpfs (writable unless TMP_RO), so pyinit falls back
#: to /tmp, or to no file system at all.
NAMESPACE_SH = """
set -e
config=$(cat "$CONFIG")
mount -t tmpfs -o ro,size=64k tmpfs /run
mount -t tmpfs -o size=1m tmpfs /tmp
printf '%s\\n' "$config" > /tmp/pyinit.toml
{setup}
[ -n "$TMP_RO" ] && mount -o remount,ro /tmp
exec "$@"
"""
#: --net too: abstract sockets live per network namespace, and the machine's own
#: pyinits (other tests) must neither see ours nor be seen.
NAMESPACE_PREFIX = ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--net"]

#: A service that says READY=1 over $NOTIFY_SOCKET (a path, or @abstract), then idles.
NOTIFIER = (
    "import os, socket, time\n"
    "a = os.environ['NOTIFY_SOCKET']\n"
    "a = '\\0' + a[1:] if a.startswith('@') else a\n"
    "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', a)\n"
    "time.sleep(100)\n"
)


#: The interpreter a container has; outside /tmp, which the namespace replaces.
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def outside_tmp(pyz_path: Path) -> Iterator[list[str]]:
    """How to run pyinit where a fresh /tmp cannot hide it: the pyz copied to
    /dev/shm, run by the system python (the checkout, its venv and pytest's
    tmp dirs may all live under /tmp)."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"no {SYSTEM_PYTHON}")
    place = tempfile.mkdtemp(prefix="pyinit-faults-", dir="/dev/shm")
    copy = os.path.join(place, "pyinit.pyz")
    shutil.copy(pyz_path, copy)
    yield [SYSTEM_PYTHON, copy]
    shutil.rmtree(place, ignore_errors=True)


def in_namespace(
    started: list[InitProcess],
    tmp_path: Path,
    pyinit: list[str],
    setup: str = "",
    tmp_read_only: bool = False,
) -> InitProcess:
    """pyinit as PID 1 with /run read-only, running `web` (ready=notify) and `idle`."""
    config = tmp_path / "pyinit.toml"
    config.write_text(
        "[services.web]\n"
        f"cmd = {json.dumps([SYSTEM_PYTHON, '-c', NOTIFIER])}\n"
        'ready = "notify"\n'
        "ready_timeout = 20\n"
        "[services.idle]\n"
        'cmd = ["sleep", "100"]\n'
    )
    script = NAMESPACE_SH.format(setup=setup)
    env = {"TMP_RO": "1" if tmp_read_only else "", "CONFIG": str(config)}
    argv = ["sh", "-c", script, "sh", *pyinit, "--config", "/tmp/pyinit.toml"]
    return start(started, argv, env, prefix=NAMESPACE_PREFIX)


def ns_ctl(proc: InitProcess, pyinit: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`pyinit ctl ARGS` run inside pyinit's mount, PID and network namespaces."""
    return subprocess.run(
        ["nsenter", f"--target={proc.pid}", "--mount", "--pid", "--net", "--",
         *pyinit, "ctl", *args],
        env=base_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip


def assert_no_traceback(proc: InitProcess) -> None:
    assert not [line for line in proc.stderr_lines(0) if "Traceback" in line], proc.describe()


def test_issue_7_17_notify_directory_owned_by_another_user(
    tmp_path: Path, started: list[InitProcess], outside_tmp: list[str]
):
    """/tmp/pyinit-notify-0 made by user nobody: pyinit died with a traceback."""
    setup = f"mkdir -m 0777 /tmp/pyinit-notify-0 && chown {NOBODY} /tmp/pyinit-notify-0"
    proc = in_namespace(started, tmp_path, outside_tmp, setup)
    wait_log(proc, r"web\[0\]: ready", timeout=15)
    wait_log(proc, r"pyinit-notify-0.*(uid 65534|belongs)")
    assert_no_traceback(proc)
    assert proc.poll() is None


def test_issue_7_17_notify_directory_symlink_is_not_followed(
    tmp_path: Path, started: list[InitProcess], outside_tmp: list[str]
):
    """A symlink in /tmp led pyinit's notify socket into a directory its planter controls."""
    setup = "mkdir -m 1777 /tmp/trap && ln -s /tmp/trap /tmp/pyinit-notify-0"
    proc = in_namespace(started, tmp_path, outside_tmp, setup)
    wait_log(proc, r"web\[0\]: ready", timeout=15)
    wait_log(proc, r"pyinit-notify-0")
    trap = subprocess.run(
        ["nsenter", f"--target={proc.pid}", "--mount", "ls", "-A", "/tmp/trap"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert trap.returncode == 0 and trap.stdout == "", trap
    assert_no_traceback(proc)


def test_issue_7_19_read_only_run_and_tmp_still_answer_ctl(
    tmp_path: Path, started: list[InitProcess], outside_tmp: list[str]
):
    """readOnlyRootFilesystem: no control socket, so `pyinit ctl ready` failed forever."""
    proc = in_namespace(started, tmp_path, outside_tmp, tmp_read_only=True)
    wait_log(proc, r"web\[0\]: ready", timeout=15)  # the notify socket works too
    done = wait_until(
        lambda: (d := ns_ctl(proc, outside_tmp, "ready")).returncode == 0 and d,
        message=lambda: f"ctl ready inside the namespace; {proc.describe()}",
    )
    assert done.stdout.startswith("ready"), done
    status = json.loads(ns_ctl(proc, outside_tmp, "status", "--json").stdout)
    assert sorted(row["service"] for row in status) == ["idle", "web"]
    assert_no_traceback(proc)


# -- item 18: the client trusts only a socket of its own user or root ------------------------

#: A fake pyinit: binds `path` (abstract if it starts with @) as root, drops to
#: `uid` before listen() (SO_PEERCRED reports the listener's credentials),
#: says "ready" to anyone and prints whatever it reads.
FAKE_SERVER = """
import os, socket, sys
path, uid = sys.argv[1], int(sys.argv[2])
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\\0" + path[1:] if path.startswith("@") else path)
os.setgid(uid); os.setuid(uid)
server.listen(8)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.settimeout(2)
    try:
        data = conn.recv(65536)
    except OSError:
        data = b""
    print(repr(data), flush=True)
    try:
        conn.sendall(b'{"ok": true, "result": {"ready": true, "detail": "fake"}}\\n')
    except OSError:
        pass
    conn.close()
"""


class FakeServer:
    """FAKE_SERVER in a process; `received()` stops it and returns what it read."""

    def __init__(self, path: str, uid: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FAKE_SERVER, path, str(uid)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "listening\n"

    def received(self) -> str:
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=5)
        return out


@pytest.fixture
def fake_server() -> Iterator:
    procs: list[subprocess.Popen[str]] = []

    def run(path: str, uid: int = NOBODY) -> FakeServer:
        server = FakeServer(path, uid)
        procs.append(server.proc)
        return server

    yield run
    for proc in procs:
        proc.kill()
        proc.wait(5)


def test_issue_7_18_ctl_refuses_a_socket_in_another_users_directory(tmp_path: Path, fake_server):
    """A socket planted by another user in a directory it owns was trusted."""
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    os.chown(planted, NOBODY, NOBODY)
    sock = planted / "ctl.sock"
    record = fake_server(str(sock))
    done = ctl("--ctl-socket", str(sock), "ready", timeout=5)
    assert done.returncode == 1, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and str(planted) in lines[0] and "uid 65534" in lines[0], lines
    assert "verb" not in record.received()  # it read nothing


def test_issue_7_18_ctl_refuses_a_server_of_another_user(tmp_path: Path, fake_server):
    """The directory is ours, but the listener is nobody's: SO_PEERCRED says so."""
    directory = tmp_path / "ours"
    directory.mkdir(mode=0o700)
    sock = directory / "ctl.sock"
    record = fake_server(str(sock))
    done = ctl("--ctl-socket", str(sock), "ready", timeout=5)
    assert done.returncode == 1, done
    assert "uid 65534" in done.stderr and len(done.stderr.splitlines()) == 1, done
    assert "verb" not in record.received()  # it read nothing


def test_issue_7_18_ctl_refuses_an_abstract_socket_of_another_user(tmp_path: Path, fake_server):
    """The abstract fallback (item 19) has no permissions: only the peer check guards it."""
    env = {"PYINIT_CTL_SOCKET": f"@pyinit-test-{os.getpid()}"}
    record = fake_server(env["PYINIT_CTL_SOCKET"])
    done = ctl("ready", env=env, timeout=5)
    assert done.returncode == 1 and "uid 65534" in done.stderr, done
    assert "verb" not in record.received()  # it read nothing
    ours = fake_server(f"@pyinit-test-ours-{os.getpid()}", uid=0)
    done = ctl("ready", env={"PYINIT_CTL_SOCKET": f"@pyinit-test-ours-{os.getpid()}"}, timeout=5)
    assert done.returncode == 0, done
    assert '"verb": "ready"' in ours.received()


# -- item 20: slow clients cannot starve the health probes ------------------------------------


class SlowClients:
    """`count` connections to the port, each sending one byte a second, reconnecting when cut."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.connects = 0  # connections made so far (+= under the GIL is enough here)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    self.connects += 1
                    for byte in b"GET /healthz HTTP/1.0\r\n\r\n":
                        sock.send(bytes([byte]))
                        if self.stop.wait(1.0):
                            return
            except OSError:
                self.stop.wait(0.05)

    def close(self) -> None:
        self.stop.set()
        deadline = time.monotonic() + 3
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.01))


def test_issue_7_20_probes_are_answered_despite_slow_connections(
    tmp_path: Path, started: list[InitProcess]
):
    """40 connections at 1 byte/s made /healthz answer 4 of 22 probes."""
    port = free_port()
    env = {
        "PYINIT_HEALTH_PORT": f"127.0.0.1:{port}",
        "PYINIT_CTL_SOCKET": str(tmp_path / "ctl" / "ctl.sock"),
        "PYINIT_SERVICES": "web: sleep 100",
    }
    start(started, [pyinit_cmd()], env)
    wait_until(lambda: http_get(port) == 200, message="the health port")
    slow = SlowClients(port, 40)
    try:
        wait_until(lambda: slow.connects >= 40, message="40 slow connections")
        answers = []
        for _ in range(22):
            answers.append(http_get(port, timeout=2.0))
            time.sleep(0.1)
    finally:
        slow.close()
    assert answers.count(200) == 22, answers


# -- item 26: --check imports Python classes as a worker would ---------------------------


def test_issue_7_26_check_refuses_a_class_that_cannot_be_imported(tmp_path: Path):
    """`--check` exited 0 on `py:no_such_module:Worker`."""
    env = {"PYINIT_SERVICES": "web: sleep 1; w[2]: py:no_such_module:Worker"}
    line = assert_usage_error(run_pyinit("--check", env=env), "PYINIT_SERVICES entry 2 (w)")
    assert "no_such_module" in line and "ModuleNotFoundError" in line, line


def test_issue_7_26_check_imports_with_the_services_cwd_and_pythonpath(tmp_path: Path):
    """The class is found the way its worker finds it: the service's cwd and PYTHONPATH."""
    app, lib = tmp_path / "app", tmp_path / "lib"
    app.mkdir()
    lib.mkdir()
    (app / "inapp.py").write_text("from pyinit import Service\nclass Worker(Service):\n    pass\n")
    (lib / "inlib.py").write_text("class Job:\n    def run(self):\n        pass\n")
    config = tmp_path / "pyinit.toml"
    config.write_text(
        "[services.a]\n"
        'class = "inapp:Worker"\n'
        f'cwd = "{app}"\n'
        "[services.b]\n"
        'class = "inlib:Job"\n'
        f'env = {{ PYTHONPATH = "{lib}" }}\n'
        "[services.c]\n"
        'class = "inlib:Missing"\n'
        f'env = {{ PYTHONPATH = "{lib}" }}\n'
    )
    line = assert_usage_error(run_pyinit("--check", "--config", str(config)), f"{config}:7 (c)")
    assert "Missing" in line, line
    config.write_text(config.read_text().rsplit("[services.c]", 1)[0])
    done = run_pyinit("--check", "--config", str(config))
    assert done.returncode == 0, done
