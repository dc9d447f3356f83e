"""Rolling replacement (issue 9 items 2 and 3), end to end, pyinit as PID 1.

Clients (tests/support/loadgen.py: threads opening a new TCP connection per
request) hit a service while it is redeployed: a reload that changes its
`env`, or `pyinit ctl restart`. The servers answer `VERSION PID`, so every
answer says which generation and which process served it. The promise
checked: not one failed request, the new value served after each deploy,
and every old process gone once `ctl reload`/`ctl restart` returns (they
wait for the replacement they started). The servers take their socket from
pyinit (`listen`), which makes `strategy = "rolling"` the default.

A deploy whose new version never gets ready, or crashes, leaves the old
workers serving: zero failed requests, `ctl reload` exits 1 naming the
service, a log line, STATUS= upstream, and READY=1 kept.
"""

from __future__ import annotations

import json
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
    SUPPORT_DIR,
    InitProcess,
    StartInit,
    assert_no_traceback,
    base_env,
    stays_true,
    wait_until,
)
from support.loadgen import LoadGenerator
from support.notify_listener import NotifyListener
from support.svc_helpers import Events, services_env, svc_argv, wait_log, write_toml

pytestmark = INSTALLED_ONLY

APP = [sys.executable, "-S", str(SUPPORT_DIR / "http_app.py")]
DEPLOYS = 3  # of each kind per test (the bench does 20)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Deployment:
    """pyinit as PID 1 with one TOML file, and `pyinit ctl` to talk to it."""

    def __init__(
        self,
        start_init: StartInit,
        pyinit_argv: list[str],
        as_pid1: list[str],
        tmp_path: Path,
        services: dict[str, dict[str, object]],
        **env: str,
    ) -> None:
        self.config = write_toml(tmp_path / "pyinit.toml", services)
        self.socket = tmp_path / "ctl" / "ctl.sock"
        self.pyinit = pyinit_argv[0]
        self.proc: InitProcess = start_init(
            [*pyinit_argv, "--config", str(self.config)],
            prefix=as_pid1,
            env=services_env(
                PYINIT_CTL_SOCKET=str(self.socket), PYTHONPATH=str(SUPPORT_DIR), **env
            ),
        )
        wait_until(self.socket.exists, 10, lambda: f"the control socket ({self.proc.describe()})")

    def write(self, services: dict[str, dict[str, object]]) -> None:
        write_toml(self.config, services)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.pyinit, "ctl", "--ctl-socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=base_env(),
        )

    def ok(self, *args: str) -> str:
        done = self.ctl(*args)
        assert done.returncode == 0, f"pyinit ctl {' '.join(args)}: {done}; {self.proc.describe()}"
        return done.stdout

    def rows(self, service: str) -> list[dict[str, object]]:
        done = self.ctl("status", "--json")
        # 3: some worker is not ok (starting, not ready) right now; the rows are whole.
        assert done.returncode in (0, 3), f"pyinit ctl status --json: {done}"
        return [r for r in json.loads(done.stdout) if r["service"] == service]

    def serving_pids(self, service: str) -> set[int]:
        return {int(r["pid"]) for r in self.rows(service) if r["state"] == "running"}


def wait_version(load: LoadGenerator, version: str, since: float, what: str) -> None:
    try:
        load.wait_for_body(lambda body: body.split()[0] == version, 20, since=since)
    except TimeoutError as error:
        raise AssertionError(f"{what}: {error}") from None


def versions_after(load: LoadGenerator, since: float) -> set[str]:
    return {body.split()[0] for when, body in list(load.tally.answers) if when > since}


def roll_and_check(
    deployment: Deployment, load: LoadGenerator, services, name: str, workers: int
) -> None:
    """DEPLOYS env changes (SIGHUP and `ctl reload` in turn), then DEPLOYS `ctl restart`s."""
    table = services[name]
    for number in range(1, DEPLOYS + 1):
        version = f"v{number}"
        table["env"] = {**table["env"], "APP_VERSION": version}
        deployment.write(services)
        began = time.monotonic()
        if number % 2:
            deployment.proc.send(signal.SIGHUP)
            wait_version(load, version, began, f"deploy {number} by SIGHUP")
            wait_until(
                lambda: (
                    len(deployment.serving_pids(name)) == workers
                    and len(deployment.rows(name)) == workers
                ),
                20,
                lambda: f"{workers} workers after a deploy: {deployment.rows(name)}",
            )
        else:
            out = deployment.ok("reload")  # waits until the old workers are gone
            assert "replaced" in out, out
            assert len(deployment.rows(name)) == workers, deployment.rows(name)
        done = time.monotonic()
        load.wait_for_body(lambda _body: True, 5, since=done + 0.3)
        assert versions_after(load, done + 0.3) == {version}, "an old worker still answers"
    for number in range(1, DEPLOYS + 1):
        before = deployment.serving_pids(name)
        out = deployment.ok("restart", "--all" if number == DEPLOYS else name)
        assert "replaced" in out, out
        after = deployment.serving_pids(name)
        assert len(after) == workers and not after & before, (before, after)
    assert deployment.proc.poll() is None


def check_tally(load: LoadGenerator, deployment: Deployment) -> None:
    tally = load.stop()
    assert tally.sent > 100, f"the load barely ran: {tally.sent} requests"
    assert not tally.failures, (
        f"{len(tally.failures)} of {tally.sent} requests failed: {tally.failures[:5]};"
        f" {deployment.proc.describe()}"
    )
    assert_no_traceback(deployment.proc.stderr_lines(0))


@PID1_ONLY
@pytest.mark.parametrize("workers", [1, 4])
def test_stdlib_server_is_replaced_under_load_without_a_failed_request(
    pyinit_argv: list[str],
    as_pid1: list[str],
    start_init: StartInit,
    tmp_path: Path,
    workers: int,
) -> None:
    """One worker: no readiness check, so each new worker must live `settle` first;
    four: READY=1 from each new worker, one at a time (max_surge 1)."""
    port = free_port()
    web: dict[str, object] = {
        "cmd": APP,
        "listen": [f"tcp:127.0.0.1:{port}"],
        "workers": workers,
        "env": {"APP_VERSION": "v0"},
        "grace": 5,
    }
    if workers == 1:
        web["settle"] = "300ms"
    else:
        web["ready"] = "notify"
    services = {"web": web}
    deployment = Deployment(start_init, pyinit_argv, as_pid1, tmp_path, services)
    load = LoadGenerator("127.0.0.1", port, threads=4).start()
    try:
        wait_version(load, "v0", 0, "first start")
        roll_and_check(deployment, load, services, "web", workers)
    finally:
        check_tally(load, deployment)


@PID1_ONLY
@pytest.mark.parametrize("workers", [1, 4])
def test_gunicorn_on_the_held_socket_is_replaced_without_a_failed_request(
    pyinit_argv: list[str],
    as_pid1: list[str],
    start_init: StartInit,
    tmp_path: Path,
    workers: int,
) -> None:
    """gunicorn with 2 sync workers takes fd 3 (LISTEN_FDS); its master's early
    READY=1 is not used: `settle` covers the boot of its workers."""
    pytest.importorskip("gunicorn")
    port = free_port()
    # No --bind: gunicorn takes LISTEN_FDS itself. (`--bind fd://3` as well makes
    # gunicorn 27 adopt fd 3 twice and die of EBADF on the second.)
    command = [sys.executable, "-m", "gunicorn", "-w", "2"]
    command += ["--chdir", str(SUPPORT_DIR), "--graceful-timeout", "5", "wsgi_app:app"]
    services = {
        "web": {
            "cmd": command,
            "listen": [f"tcp:127.0.0.1:{port}"],
            "workers": workers,
            "settle": "600ms",
            "env": {"APP_VERSION": "v0"},
        }
    }
    deployment = Deployment(start_init, pyinit_argv, as_pid1, tmp_path, services)
    load = LoadGenerator("127.0.0.1", port, threads=4).start()
    try:
        wait_version(load, "v0", 0, "first start")
        roll_and_check(deployment, load, services, "web", workers)
    finally:
        check_tally(load, deployment)


@PID1_ONLY
@pytest.mark.parametrize("workers", [1, 4])
def test_python_service_serving_its_socket_is_replaced_without_a_failed_request(
    pyinit_argv: list[str],
    as_pid1: list[str],
    start_init: StartInit,
    tmp_path: Path,
    workers: int,
) -> None:
    port = free_port()
    services = {
        "web": {
            "class": "rolling_service:VersionServer",
            "listen": [f"tcp:127.0.0.1:{port}"],
            "workers": workers,
            "ready": "notify",
            "env": {"APP_VERSION": "v0"},
        }
    }
    deployment = Deployment(start_init, pyinit_argv, as_pid1, tmp_path, services)
    load = LoadGenerator("127.0.0.1", port, threads=4).start()
    try:
        wait_version(load, "v0", 0, "first start")
        roll_and_check(deployment, load, services, "web", workers)
    finally:
        check_tally(load, deployment)


@PID1_ONLY
def test_a_deploy_that_never_gets_ready_leaves_the_old_workers_serving(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    port = free_port()
    web: dict[str, object] = {
        "cmd": APP,
        "listen": [f"tcp:127.0.0.1:{port}"],
        "workers": 2,
        "ready": "notify",
        "ready_timeout": "1500ms",
        "env": {"APP_VERSION": "v0"},
    }
    services = {"web": web}
    with NotifyListener() as upstream:
        deployment = Deployment(
            start_init, pyinit_argv, as_pid1, tmp_path, services, NOTIFY_SOCKET=upstream.path
        )
        upstream.wait_for("READY", "1", context=deployment.proc.describe)
        load = LoadGenerator("127.0.0.1", port, threads=4).start()
        try:
            wait_version(load, "v0", 0, "first start")
            old = deployment.serving_pids("web")
            began = time.monotonic()
            for mode in ("hang", "crash"):
                web["env"] = {"APP_VERSION": f"v1-{mode}", "APP_MODE": mode}
                deployment.write(services)
                sent = time.monotonic()
                done = deployment.ctl("reload")
                assert done.returncode == 1, done
                assert "reload failed: web: new worker web[0]" in done.stderr, done.stderr
                why = "not ready within 1.5 s" if mode == "hang" else "exit status 1"
                assert why in done.stderr, done.stderr
                (line,) = wait_log(deployment.proc, f"web: reload failed: .*{why}")
                assert "keeping the previous definition (2 worker(s) serving)" in line, line
                failed = wait_until(
                    lambda sent=sent: [
                        m
                        for m in upstream.with_field("STATUS")
                        if m.time >= sent and m.fields["STATUS"].startswith("reload failed: web")
                    ],
                    5,
                    lambda: f"STATUS=reload failed: web upstream; got {upstream.statuses()}",
                )
                # READY=1 again right after RELOADING=1, while the new worker was
                # still on trial: the old workers never stopped serving.
                reloading = upstream.wait_for("RELOADING", "1", after=sent)
                ready = upstream.wait_for("READY", "1", after=reloading.time)
                assert ready.time <= failed[0].time, (ready, failed[0])
                assert deployment.serving_pids("web") == old
            stays_true(
                lambda: deployment.serving_pids("web") == old,
                0.5,
                "the old workers keep serving, nobody retries the failed definition",
            )
            assert versions_after(load, began) == {"v0"}
            # Fixed: the same reload goes through.
            web["env"] = {"APP_VERSION": "v2"}
            deployment.write(services)
            deployment.ok("reload")
            wait_version(load, "v2", time.monotonic(), "the fixed deploy")
            assert not deployment.serving_pids("web") & old
        finally:
            check_tally(load, deployment)


@PID1_ONLY
def test_a_deploy_failing_halfway_rolls_the_replaced_workers_back(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Worker 0 is replaced, the new worker 1 crashes: the deploy fails, and worker 0
    goes back to the previous definition, one at a time again: all serve v0."""
    port = free_port()
    web: dict[str, object] = {
        "cmd": APP,
        "listen": [f"tcp:127.0.0.1:{port}"],
        "workers": 3,
        "ready": "notify",
        "env": {"APP_VERSION": "v0"},
    }
    services = {"web": web}
    deployment = Deployment(start_init, pyinit_argv, as_pid1, tmp_path, services)
    load = LoadGenerator("127.0.0.1", port, threads=4).start()
    try:
        wait_version(load, "v0", 0, "first start")
        before = {int(r["worker"]): int(r["pid"]) for r in deployment.rows("web")}
        web["env"] = {"APP_VERSION": "v1", "APP_CRASH_WORKER": "1"}
        deployment.write(services)
        began = time.monotonic()
        done = deployment.ctl("reload")
        assert done.returncode == 1, done
        assert "new worker web[1] exit status 1" in done.stderr, done.stderr
        wait_version(load, "v1", began, "worker 0 replaced before worker 1 failed")
        wait_log(deployment.proc, r"web: rolled back to the previous definition")
        rows = deployment.rows("web")
        after = {int(r["worker"]): int(r["pid"]) for r in rows}
        assert len(rows) == 3 and all(r["state"] == "running" for r in rows), rows
        assert after[1] == before[1] and after[2] == before[2], (before, after)
        assert after[0] != before[0], "worker 0 was replaced, then rolled back afresh"
        settled = time.monotonic()
        load.wait_for_body(lambda _body: True, 5, since=settled + 0.3)
        assert versions_after(load, settled + 0.3) == {"v0"}
    finally:
        check_tally(load, deployment)


@PID1_ONLY
def test_max_surge_starts_that_many_new_workers_at_once(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    services = {
        "pool": {
            "cmd": svc_argv(events.path, "pool"),
            "workers": 4,
            "strategy": "rolling",
            "max_surge": 2,
            "settle": "600ms",
        }
    }
    deployment = Deployment(start_init, pyinit_argv, as_pid1, tmp_path, services)
    events.context = deployment.proc.describe
    events.wait_starts("pool", 4)
    deployment.ok("restart", "pool")
    new = sorted(e.time for e in events.starts("pool")[4:])
    assert len(new) == 4, events.all()
    assert new[1] - new[0] < 0.4, f"two new workers start together: {new}"
    assert new[2] - new[1] >= 0.5, f"the next two once the first two settled: {new}"
    assert new[3] - new[2] < 0.4, f"and together: {new}"


@PID1_ONLY
@pytest.mark.parametrize("strategy", ["rolling", "restart"])
def test_a_reload_that_changes_after_waits_for_the_new_dependency(
    pyinit_argv: list[str],
    as_pid1: list[str],
    start_init: StartInit,
    tmp_path: Path,
    strategy: str,
) -> None:
    """Item 3: `web` gains `after = ["gate"]`, a new service ready only once a file
    exists: the running web is not touched until then, then it is replaced."""
    events = Events(tmp_path / "events")
    gate_file = tmp_path / "gate-open"
    web: dict[str, object] = {"cmd": svc_argv(events.path, "web"), "strategy": strategy}
    if strategy == "rolling":
        web["settle"] = "300ms"  # the new web must be seen running before the old one stops
    deployment = Deployment(start_init, pyinit_argv, as_pid1, tmp_path, {"web": web})
    events.context = deployment.proc.describe
    (first,) = events.wait_starts("web", 1)
    services = {
        "gate": {"cmd": svc_argv(events.path, "gate"), "ready": f"file:{gate_file}"},
        "web": {**web, "after": ["gate"]},
    }
    deployment.write(services)
    deployment.proc.send(signal.SIGHUP)
    events.wait_starts("gate", 1)
    stays_true(
        lambda: len(events.starts("web")) == 1 and not events.of("web", "stop"),
        1.0,
        "web keeps running, unreplaced, while gate is not ready",
    )
    if strategy == "rolling":
        rows = deployment.rows("web")
        assert rows[0]["rollout"]["state"] == "waiting", rows
        assert rows[0]["rollout"]["detail"] == "waiting for gate", rows
    gate_file.touch()
    starts = events.wait_starts("web", 2)
    gate_ready = wait_log(deployment.proc, r"gate\[0\]: ready")
    assert gate_ready
    stops = events.wait_for(
        lambda e: [x for x in e if x.name == "web" and x.kind == "stop"], 10, "web stops"
    )
    stop = next(e for e in stops if e.name == "web" and e.kind == "stop")
    assert stop.pid == first.pid
    if strategy == "rolling":
        assert starts[1].time < stop.time, "rolling: the new web starts before the old stops"
    else:
        assert stop.time < starts[1].time, "restart: the old web stops, then the new starts"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"strategy": "blue-green"}, "strategy: expected one of rolling, restart"),
        ({"strategy": "rolling", "oneshot": True}, "a oneshot cannot roll"),
        ({"strategy": "rolling", "max_surge": 0}, "max_surge"),
        ({"max_surge": 2}, 'needs strategy = "rolling"'),
        ({"settle": "-1s"}, "settle"),
    ],
)
def test_bad_rolling_options_are_one_line_errors(
    pyinit_argv: list[str], tmp_path: Path, table: dict[str, object], message: str
) -> None:
    config = write_toml(tmp_path / "pyinit.toml", {"web": {"cmd": ["true"], **table}})
    done = subprocess.run(
        [*pyinit_argv, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
        env=base_env(),
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyinit: error: "), lines
    assert message in lines[0], lines[0]
    assert f"{config}:" in lines[0], lines[0]


def test_check_says_who_rolls_by_default(pyinit_argv: list[str], tmp_path: Path) -> None:
    """Held sockets: rolling by default; a service binding its own port (no `listen`)
    cannot have a second copy beside it: restart."""
    port = free_port()
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "held": {"cmd": APP, "listen": [f"tcp:127.0.0.1:{port}"], "workers": 2},
            "own": {"cmd": [*APP, "--port", str(port)]},
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
    text = done.stdout
    held = text[text.index("held:") : text.index("own:")]
    own = text[text.index("own:") :]
    assert "deploy   rolling, 1 at a time, settle 1s" in held, held
    assert "deploy" not in own, own  # restart, the default without held sockets


@PID1_ONLY
def test_ctl_restart_of_a_rolling_service_without_held_sockets_keeps_it_running(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Explicit `strategy = "rolling"` on queue-consumer-like workers: each new
    worker starts before its old one gets SIGTERM, and `--all` reaches it."""
    events = Events(tmp_path / "events")
    services = {
        "consumer": {
            "cmd": svc_argv(events.path, "consumer"),
            "workers": 2,
            "strategy": "rolling",
            "settle": "200ms",
        }
    }
    deployment = Deployment(start_init, pyinit_argv, as_pid1, tmp_path, services)
    events.context = deployment.proc.describe
    first = events.wait_starts("consumer", 2)
    out = deployment.ok("restart", "--all")
    assert "consumer" in out and "replaced" in out, out
    starts = events.starts("consumer")[2:]
    stops = events.of("consumer", "stop")
    assert len(starts) == 2 and len(stops) == 2, events.all()
    for old in first:
        new = next(s for s in starts if s.worker == old.worker)
        stop = next(s for s in stops if s.pid == old.pid)
        assert new.time < stop.time, (new, stop)
    assert deployment.proc.poll() is None
