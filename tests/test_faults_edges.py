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
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.helpers import InitProcess, base_env, wait_until
from support.svc_helpers import wait_log

from conftest import installed_pyinit

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
    proc = start(started, [pyinit_cmd(), "--config", str(config)], env)
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
