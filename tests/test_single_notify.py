"""Single-command mode under systemd/podman: READY=1 upstream, child kept out.

A real datagram socket stands in for systemd's notify socket.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest
from support.helpers import INSTALLED_ONLY, base_env


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(10)
    yield path, sock
    sock.close()


def messages(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


@INSTALLED_ONLY
def test_ready_then_stopping_and_the_child_never_sees_the_socket(pyinit_argv, listener):
    path, sock = listener
    env = base_env({"NOTIFY_SOCKET": path})
    proc = subprocess.Popen(
        [*pyinit_argv, "--", "sh", "-c", 'echo "child: ${NOTIFY_SOCKET:-unset}"; exec sleep 30'],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert messages(sock, 1) == ["READY=1"]
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "child: unset"
        proc.send_signal(signal.SIGTERM)
        assert messages(sock, 1) == ["STOPPING=1"]
        assert proc.wait(10) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


@INSTALLED_ONLY
def test_watchdog_pings_at_half_the_interval(pyinit_argv, listener):
    path, sock = listener
    env = base_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    proc = subprocess.Popen([*pyinit_argv, "--", "sleep", "30"], env=env, stderr=subprocess.DEVNULL)
    try:
        assert messages(sock, 1) == ["READY=1"]
        started = time.monotonic()
        assert messages(sock, 4) == ["WATCHDOG=1"] * 4
        # 4 pings at 0.2 s intervals, the first at once: about 0.6 s.
        assert 0.4 < time.monotonic() - started < 3
    finally:
        proc.kill()
        proc.wait()


@INSTALLED_ONLY
def test_the_notify_code_is_imported_only_when_notify_socket_is_set(pyinit_argv, listener):
    """Start-up stays lean: no NOTIFY_SOCKET, no pyinit.core.notify import."""
    path, _ = listener

    def imports_notify(extra: dict[str, str]) -> bool:
        env = base_env({"PYTHONVERBOSE": "1", **extra})
        done = subprocess.run(
            [*pyinit_argv, "--", "true"], env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return "import 'pyinit.core.notify'" in done.stderr

    assert not imports_notify({})
    assert imports_notify({"NOTIFY_SOCKET": path})
