"""pyinit as an sd_notify client of whoever started it (SPEC 4, upstream), end to end.

pyinit runs as PID 1 of a PID namespace with NOTIFY_SOCKET pointing at a
datagram socket the test binds (support.notify_listener), as systemd with
Type=notify or `podman run --sdnotify=container` would give it. Every message
is stamped on arrival with time.monotonic(), the clock the services stamp
their own events with, so "no READY=1 before the port was open" is a
comparison of two timestamps, not a guess about sleeps.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from pathlib import Path

from support.helpers import INSTALLED_ONLY, PID1_ONLY, StartInit, stays_true, wait_until
from support.notify_listener import NotifyListener
from support.svc_helpers import Events, services_env, svc_argv, wait_log, write_toml

#: A service that opens PORT only after a second, saying when (monotonic) in OPENED.
LATE_LISTENER = """
import socket, sys, time
port, opened = int(sys.argv[1]), sys.argv[2]
time.sleep(1.0)
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
stamp = time.monotonic()
sock.bind(("127.0.0.1", port))
sock.listen(8)
open(opened, "w").write(repr(stamp))
while True:
    sock.accept()[0].close()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@INSTALLED_ONLY
@PID1_ONLY
def test_ready_status_watchdog_reload_and_stopping_reach_the_upstream_manager(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """One run, in the order a manager sees it: STATUS N/3 while starting, READY=1
    only after the oneshot exited 0 and the late port opened, WATCHDOG=1 twice a
    second, RELOADING=1 + MONOTONIC_USEC then READY=1 around SIGHUP, STOPPING=1."""
    events = Events(tmp_path / "events")
    port = free_port()
    opened = tmp_path / "opened"
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "migrate": {"cmd": svc_argv(events.path, "migrate", "--run", "0.3"), "oneshot": True},
            "web": {
                "cmd": [sys.executable, "-S", "-c", LATE_LISTENER, str(port), str(opened)],
                "after": ["migrate"],
                "ready": f"tcp:{port}",
                "reload": "none",
            },
            # A child prints its environment: the upstream socket must not be in it.
            "envdump": {
                "cmd": ["sh", "-c", "env; echo ENV-END; exec sleep 1000"],
                "reload": "none",
                "output": "inherit",  # raw lines (beside other services the default is prefix)
            },
        },
    )
    with NotifyListener() as upstream:
        env = services_env(
            NOTIFY_SOCKET=upstream.path,
            WATCHDOG_USEC="1000000",
            PYINIT_CTL_SOCKET=str(tmp_path / "ctl" / "ctl.sock"),
        )
        env.pop("WATCHDOG_PID", None)
        started = time.monotonic()
        proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=env)
        events.context = proc.describe

        ready = upstream.wait_for("READY", "1", timeout=10, context=proc.describe)
        (migrate,) = events.starts("migrate")
        port_opened = float(opened.read_text())
        assert migrate.time + 0.3 < port_opened, "web started only after migrate exited 0"
        assert ready.time >= port_opened, (
            f"READY=1 at {ready.time - started:.2f}s, before web's port opened "
            f"at {port_opened - started:.2f}s"
        )
        assert ready.time - port_opened < 1.5, "READY=1 within a probe interval of the port"

        statuses = [m for m in upstream.messages if "STATUS" in m.fields]
        texts = [m.fields["STATUS"] for m in statuses]
        assert all(re.fullmatch(r"[0-3]/3 services ready", t) for t in texts), texts
        assert texts[-1] == "3/3 services ready", texts
        assert len(texts) == len(set(texts)), f"STATUS only when it changes: {texts}"
        assert len(texts) >= 2 and texts[0] != texts[-1], f"no progress reported: {texts}"
        counts = [int(t.split("/")[0]) for t in texts]
        assert counts == sorted(counts), f"readiness went backwards while starting: {texts}"
        assert all(m.time < port_opened for m in statuses[:-1]), "N<3 only before the port"
        assert len(upstream.with_field("READY")) == 1, "READY=1 once"

        # WATCHDOG_USEC=1 s and no WATCHDOG_PID: a ping every 0.5 s from the start.
        pings = wait_until(
            lambda: (w := upstream.with_field("WATCHDOG", "1")) and len(w) >= 6 and w,
            10,
            lambda: f"6 WATCHDOG=1; got {[m.raw for m in upstream.messages]}",
        )
        gaps = [b.time - a.time for a, b in zip(pings, pings[1:], strict=False)]
        assert pings[0].time - started < 1.5, "the watchdog starts with pyinit"
        assert all(0.35 < gap < 0.7 for gap in gaps), f"WATCHDOG=1 gaps {gaps}, expected ~0.5 s"

        # The children's environment: no upstream NOTIFY_SOCKET.
        proc.expect_line("ENV-END", timeout=5)
        child_env = [line for line in proc.stdout_lines if "=" in line]
        assert any(line == "PYINIT_WORKER_ID=0" for line in child_env), child_env
        leaked = [line for line in child_env if line.startswith("NOTIFY_SOCKET=")]
        assert not leaked, f"a child saw the upstream socket: {leaked}"

        # SIGHUP: RELOADING=1 with MONOTONIC_USEC (same clock), then READY=1 again.
        hup_at = time.monotonic()
        proc.send(signal.SIGHUP)
        reloading = upstream.wait_for("RELOADING", "1", after=hup_at, context=proc.describe)
        usec = int(reloading.fields["MONOTONIC_USEC"])
        assert hup_at - 0.1 < usec / 1e6 <= reloading.time, (
            f"MONOTONIC_USEC {usec} is not CLOCK_MONOTONIC between SIGHUP {hup_at} "
            f"and arrival {reloading.time}"
        )
        again = upstream.wait_for("READY", "1", after=reloading.time, context=proc.describe)
        assert again.time - hup_at < 2.0, "READY=1 again soon after the reload"
        assert again.time >= reloading.time

        # SIGTERM: STOPPING=1 before pyinit exits, and nothing more claims readiness.
        term_at = time.monotonic()
        proc.send(signal.SIGTERM)
        stopping = upstream.wait_for("STOPPING", "1", after=term_at, context=proc.describe)
        assert proc.wait(10) == 0
        assert stopping.time <= proc.ended_at
        late = [m.raw for m in upstream.messages if m.time > stopping.time and "READY" in m.fields]
        assert not late, f"READY after STOPPING: {late}"


@INSTALLED_ONLY
@PID1_ONLY
def test_no_ready_while_a_oneshot_before_the_services_fails(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """A oneshot that exits 1 keeps its dependents from starting: no READY=1 is ever
    sent; the STATUS says how far it got."""
    events = Events(tmp_path / "events")
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "migrate": {"cmd": svc_argv(events.path, "migrate", "--exit", "1"), "oneshot": True},
            "web": {"cmd": svc_argv(events.path, "web"), "after": ["migrate"]},
            "side": {"cmd": svc_argv(events.path, "side")},
        },
    )
    with NotifyListener() as upstream:
        env = services_env(
            NOTIFY_SOCKET=upstream.path, PYINIT_CTL_SOCKET=str(tmp_path / "ctl" / "ctl.sock")
        )
        proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=env)
        events.context = proc.describe
        events.wait_starts("side", 1)
        events.wait_starts("migrate", 1)
        upstream.wait_for("STATUS", "1/3 services ready", context=proc.describe)
        # migrate has exited 1 (never restarted: oneshot); give pyinit a moment to act on it.
        wait_log(proc, r"migrate\[0\]: exit(ed with)? (status|code) 1")
        stays_true(
            lambda: not upstream.with_field("READY") and not events.starts("web"),
            0.7,
            "no READY=1 and no web while the oneshot before it failed",
        )
        proc.send(signal.SIGTERM)
        upstream.wait_for("STOPPING", "1", context=proc.describe)
        assert proc.wait(10) == 0


@INSTALLED_ONLY
@PID1_ONLY
def test_watchdog_variables_are_pyinits_own_and_each_service_gets_its_own(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """WATCHDOG_USEC from the manager is meant for pyinit (like NOTIFY_SOCKET): children
    must not inherit it, or an sd_watchdog_enabled() program pings on pyinit's schedule.
    A service with `watchdog = "3s"` gets WATCHDOG_USEC=3000000, as systemd gives a unit
    with WatchdogSec=3, so libraries that read it (sd_watchdog_enabled) ping in time."""
    dump = "env > {}.env; mv {}.env {}; {}exec sleep 1000"
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "plain": {"cmd": ["sh", "-c", dump.format(plain, plain, plain, "")]},
            "watched": {
                "cmd": [
                    "sh",
                    "-c",
                    dump.format(watched, watched, watched, "systemd-notify --ready; "),
                ],
                "ready": "notify",
                "watchdog": "3s",
            },
        },
    )
    with NotifyListener() as upstream:
        env = services_env(
            NOTIFY_SOCKET=upstream.path,
            WATCHDOG_USEC="1000000",
            PYINIT_CTL_SOCKET=str(tmp_path / "ctl" / "ctl.sock"),
        )
        proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=env)
        wait_until(lambda: plain.exists() and watched.exists(), 10, proc.describe)
        plain_env = [v for v in plain.read_text().splitlines() if v.startswith("WATCHDOG_")]
        watched_env = [v for v in watched.read_text().splitlines() if v.startswith("WATCHDOG_")]
        proc.send(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert plain_env == [], "the manager's watchdog variables leaked to a child"
    assert "WATCHDOG_USEC=3000000" in watched_env, watched_env
