"""Fault tests for services mode (issue 7): reloads, scaling, hostile limits, PID 1 as itself.

These are acceptance tests for the desired-state + reconcile supervisor: each
one states an effect a user sees, through pyinit's public surfaces only (the
TOML file, SIGHUP, `pyinit ctl`, its stderr, the processes in its PID
namespace). pyinit runs as PID 1 of a fresh PID namespace throughout; every
wait has a deadline and every process is killed on teardown.

Item numbers refer to issue 7.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
import uuid
from pathlib import Path

from support.faults_helpers import (
    UNSHARE,
    environ,
    json_records,
    running_workers,
    start_services,
    unowned_processes,
    zombies_below,
)
from support.helpers import (
    INSTALLED_ONLY,
    InitProcess,
    StartInit,
    assert_no_traceback,
    cmdline,
    descendants,
    is_dead,
    stays_true,
    wait_until,
)
from support.svc_helpers import (
    Events,
    host_pid,
    live_services,
    log_lines,
    services_env,
    svc_argv,
    wait_log,
    write_toml,
)

GRACE = 2.0
MARGIN = 3.0  # start-up of the interpreter, scheduling on a busy 2-core machine


def service(events: Events, name: str, *options: str, **table: object) -> dict[str, object]:
    """A svc_child.py service table for write_toml."""
    return {"cmd": svc_argv(events.path, name, *options), **table}


def stop_within(proc: InitProcess, seconds: float, signals_: int = 1) -> float:
    """SIGTERM pyinit (`signals_` times) and return how long it took to exit."""
    sent = time.monotonic()
    for _ in range(signals_):
        proc.send(signal.SIGTERM)
    proc.wait(seconds)
    return time.monotonic() - sent


# --------------------------------------------------------------------------- item 12


def _reload_dropping_a_dependency(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> tuple[InitProcess, Events, Path]:
    """Start a, b (never ready) and d (after = b); reload without b, d free, a at 2 workers.

    The new worker of `a` is ready at once: that must not make pyinit look
    up the removed `b` halfway through the reload (today: KeyError 'b' in
    `_deps_met`, from `scale` inside `apply_new_config`).
    """
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    never = tmp_path / "never-created"
    write_toml(
        config,
        {
            "a": service(events, "a"),
            "b": service(events, "b", ready=f"file:{never}", ready_timeout=0),
            "d": service(events, "d", after=["b"]),
        },
    )
    proc, _ = start_services(start_init, pyinit_argv, config, tmp_path, "--grace", str(GRACE))
    events.context = proc.describe
    events.wait_starts("a", 1)
    events.wait_starts("b", 1)

    write_toml(
        config,
        {"a": service(events, "a", "--say", "v2", workers=2), "d": service(events, "d")},
    )
    proc.send(signal.SIGHUP)
    wait_log(proc, r"reload: .*removed \(b\)")
    return proc, events, config


@INSTALLED_ONLY
def test_reload_with_after_applies_and_later_reloads_still_work(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 12: after that reload, the file's workers run and the next reload applies."""
    proc, events, config = _reload_dropping_a_dependency(pyinit_argv, start_init, tmp_path)
    wait_until(
        lambda: running_workers(proc) == {("a", 0, "v2"), ("a", 1, "v2"), ("d", 0, "")},
        8,
        lambda: f"a[0], a[1] (v2) and d[0] running after the reload; {proc.describe()}",
    )

    write_toml(
        config,
        {
            "a": service(events, "a", "--say", "v2", workers=2),
            "d": service(events, "d"),
            "e": service(events, "e", after=["d"]),
        },
    )
    proc.send(signal.SIGHUP)
    wait_log(proc, r"reload: .*added \(e\)")
    events.wait_starts("e", 1, timeout=5)
    assert_no_traceback(proc.stderr_lines(0))


@INSTALLED_ONLY
def test_two_sigterms_end_pyinit_promptly_after_a_reload_with_after(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 12: whatever that reload left, two SIGTERMs end PID 1 within the grace."""
    proc, _, _ = _reload_dropping_a_dependency(pyinit_argv, start_init, tmp_path)
    assert stop_within(proc, GRACE + MARGIN, signals_=2) < GRACE + MARGIN
    assert_no_traceback(proc.stderr_lines())


# --------------------------------------------------------------------------- item 13


@INSTALLED_ONLY
def test_service_removed_while_restarting_stays_removed(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 13: `ctl restart gone`, then a reload without `gone` while its workers stop.

    Nothing of `gone` may run afterwards, and `ctl status` must not list it.
    """
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    keep = service(events, "keep")
    write_toml(
        config, {"keep": keep, "gone": service(events, "gone", "--stop-delay", "1.5", workers=2)}
    )
    proc, ctl = start_services(start_init, pyinit_argv, config, tmp_path)
    events.context = proc.describe
    events.wait_starts("gone", 2)
    events.wait_starts("keep", 1)

    done = ctl.run("restart", "gone")
    assert done.returncode == 0, done
    events.wait_for(
        lambda e: len([x for x in e if x.name == "gone" and x.kind == "stop"]) >= 2,
        5,
        "both workers of gone got their stop signal",
    )
    write_toml(config, {"keep": keep})
    proc.send(signal.SIGHUP)
    wait_log(proc, r"reload: .*removed \(gone\)")

    wait_until(
        lambda: "gone" not in live_services(proc),
        5,
        lambda: f"no worker of the removed gone running; {proc.describe()}",
    )
    stays_true(
        lambda: "gone" not in live_services(proc) and len(events.starts("gone")) == 2,
        1.5,
        "no worker of the removed service gone starts again",
    )
    assert {row["service"] for row in ctl.rows()} == {"keep"}
    assert_no_traceback(proc.stderr_lines(0))


# --------------------------------------------------------------------------- item 14


@INSTALLED_ONLY
def test_scale_3_to_1_to_3_while_stopping_ends_with_three_ready_workers(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 14: scale down, then up again while the removed workers still stop (1 s handler)."""
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    write_toml(config, {"w": service(events, "w", "--stop-delay", "1", workers=3)})
    proc, ctl = start_services(start_init, pyinit_argv, config, tmp_path)
    events.context = proc.describe
    events.wait_starts("w", 3)

    write_toml(config, {"w": service(events, "w", "--stop-delay", "1", workers=1)})
    proc.send(signal.SIGHUP)
    events.wait_for(
        lambda e: len([x for x in e if x.kind == "stop"]) >= 2,
        5,
        "workers 1 and 2 got their stop signal",
    )
    write_toml(config, {"w": service(events, "w", "--stop-delay", "1", workers=3)})
    proc.send(signal.SIGHUP)
    wait_log(proc, r"reload: ", count=2)

    wait_until(
        lambda: {(n, w) for n, w, _ in running_workers(proc)} == {("w", 0), ("w", 1), ("w", 2)},
        8,
        lambda: f"workers 0, 1, 2 of w running; {proc.describe()}",
    )
    wait_until(lambda: ctl.run("ready").returncode == 0, 5, lambda: f"ctl ready; {ctl.rows()}")
    assert_no_traceback(proc.stderr_lines(0))


# --------------------------------------------------------------------------- item 15


def _random_config(rng: random.Random, events: Events) -> dict[str, dict[str, object]]:
    """A valid random file: some of s0..s4, 0..3 workers, `after` chains, changed commands."""
    names = [n for n in ("s0", "s1", "s2", "s3", "s4") if rng.random() < 0.7] or ["s0"]
    services: dict[str, dict[str, object]] = {}
    for name in names:
        options = ["--say", f"v{rng.randrange(3)}"]
        if rng.random() < 0.5:
            options += ["--stop-delay", "0.3"]
        table: dict[str, object] = {"workers": rng.randrange(4)}
        earlier = [n for n in services if services[n]["workers"]]
        if earlier and rng.random() < 0.4:
            table["after"] = [rng.choice(earlier)]
        services[name] = service(events, name, *options, **table)
    return services


def _expected(services: dict[str, dict[str, object]]) -> set[tuple[str, int, str]]:
    wanted = set()
    for name, table in services.items():
        argv = table["cmd"]
        assert isinstance(argv, list)
        say = argv[argv.index("--say") + 1]
        workers = table["workers"]
        assert isinstance(workers, int)
        wanted.update((name, worker, say) for worker in range(workers))
    return wanted


@INSTALLED_ONLY
def test_random_reloads_end_in_the_last_files_state(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 15: ~7 s of random valid rewrites, SIGHUP / `ctl reload`, sometimes no wait,
    now and then a `ctl restart` of a service just before it is rewritten or removed.

    At the end (one last `ctl reload` of the last file): the running
    (service, worker, command) triples are the file's, every process below
    pyinit is a worker or below one, and there are no zombies.
    """
    rng = random.Random(7)
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    current = _random_config(rng, events)
    write_toml(config, current)
    proc, ctl = start_services(start_init, pyinit_argv, config, tmp_path, "--grace", "1")
    events.context = proc.describe

    deadline = time.monotonic() + 7
    while time.monotonic() < deadline and proc.poll() is None:
        if rng.random() < 0.2:  # item 13 in the mix: workers stopping with a respawn due
            ctl.run("restart", rng.choice(sorted(current)), timeout=5)
        current = _random_config(rng, events)
        write_toml(config, current)
        if rng.random() < 0.5:
            ctl.run("reload", timeout=5)  # returns once the reload is applied
            continue
        seen = len(log_lines(proc, r"reload"))
        proc.send(signal.SIGHUP)
        if rng.random() < 0.5:  # else rewrite again at once: the next reload lands mid-stop
            wait_until(
                lambda seen=seen: len(log_lines(proc, r"reload")) > seen,
                5,
                lambda: f"a reload after SIGHUP; {proc.describe()}",
            )

    done = ctl.run("reload")
    assert done.returncode == 0 and done.stdout.startswith("reload"), done
    wanted = _expected(current)
    wait_until(
        lambda: running_workers(proc) == wanted,
        6,
        lambda: (
            f"running {sorted(running_workers(proc))} == file's {sorted(wanted)}; {proc.describe()}"
        ),
    )
    wait_until(
        lambda: not unowned_processes(proc, ctl),
        5,
        lambda: f"no unowned processes: {unowned_processes(proc, ctl)}",
    )
    wait_until(lambda: not zombies_below(proc), 5, lambda: f"no zombies: {zombies_below(proc)}")
    assert_no_traceback(proc.stderr_lines(0))


# --------------------------------------------------------------------------- item 16


@INSTALLED_ONLY
def test_reload_with_an_empty_file_is_refused_and_nothing_stops(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 16: an empty file at reload is an error, not 'stop every service'."""
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    write_toml(config, {"a": service(events, "a"), "b": service(events, "b", workers=2)})
    proc, _ = start_services(start_init, pyinit_argv, config, tmp_path)
    events.context = proc.describe
    events.wait_starts("a", 1)
    events.wait_starts("b", 2)
    before = running_workers(proc)

    config.write_text("")
    proc.send(signal.SIGHUP)
    wait_log(proc, r"reload (failed|refused)", timeout=5)
    stays_true(lambda: running_workers(proc) == before, 0.5, "every worker keeps running")
    assert not [e for e in events.all() if e.kind == "stop"], events.all()


def test_starting_with_an_empty_file_exits_2_with_one_line(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 16: an empty file and no COMMAND: exit 2, one `pyinit: error:` line, nothing run."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    ctl_path = tmp_path / "ctl" / "ctl.sock"
    proc = start_init(
        [*pyinit_argv, "--config", str(config)],
        prefix=UNSHARE,
        env=services_env(PYINIT_CTL_SOCKET=str(ctl_path)),
    )
    result = proc.result(5)
    assert result.returncode == 2, result
    assert len(result.stderr) == 1 and result.stderr[0].startswith("pyinit: error: "), result
    assert not ctl_path.exists(), "a control socket was opened"


# --------------------------------------------------------------------------- item 5


@INSTALLED_ONLY
def test_shutdown_without_proc_ends_within_grace_and_kills_a_setsid_daemon(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 5: PID 1 with no /proc mounted, a service left a setsid daemon deaf to SIGTERM."""
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    marker = f"faults-daemon-{uuid.uuid4().hex}"
    write_toml(config, {"d": service(events, "d", "--daemon", marker)})
    no_proc = [
        "unshare",
        "--pid",
        "--fork",
        "--mount",
        "sh",
        "-c",
        'umount -l /proc && exec "$@"',
        "sh",
    ]
    proc, _ = start_services(
        start_init, pyinit_argv, config, tmp_path, "--grace", str(GRACE), prefix=no_proc
    )
    events.context = proc.describe
    events.wait_starts("d", 1)
    daemon = wait_until(
        lambda: [p for p in descendants(proc.pid) if marker in cmdline(p)],
        5,
        lambda: f"the daemon {marker}; {proc.describe()}",
    )
    assert not Path(f"/proc/{proc.pid}/root/proc/self").exists(), "pyinit still sees /proc"

    took = stop_within(proc, GRACE + MARGIN)
    assert took < GRACE + MARGIN
    assert all(is_dead(p) for p in daemon), f"the daemon outlived pyinit: {daemon}"
    assert_no_traceback(proc.stderr_lines())


# --------------------------------------------------------------------------- item 1


@INSTALLED_ONLY
def test_out_of_file_descriptors_at_run_time_does_not_kill_pid1(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 1: RLIMIT_NOFILE 24, 20 idle ctl connections, then a worker restart needing pipes.

    PID 1 must live through the failed start (no traceback), start the
    worker again once descriptors are free, and exit 0 on SIGTERM.
    """
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    fast = {"threshold": "1s", "min_delay": "0.05s", "max_delay": "0.2s"}
    write_toml(config, {"s": service(events, "s", output="prefix", backoff=fast)})
    limited = [*UNSHARE, "prlimit", "--nofile=24:24", "--"]
    proc, ctl = start_services(
        start_init, pyinit_argv, config, tmp_path, "--grace", str(GRACE), prefix=limited
    )
    events.context = proc.describe
    first = events.wait_starts("s", 1)[0]

    idle: list[socket.socket] = []
    try:
        _hold_connections(ctl.path, 20, idle)
        _wait_fds_settle(proc, limit=24)
        os.kill(host_pid(proc, first.pid), signal.SIGKILL)  # its restart needs two pipes
        wait_log(proc, r"s\[0\]: killed by SIGKILL", timeout=5)
        # Its restart is due within max_delay: PID 1 must live through it.
        _stays_alive(proc, 1.5, "PID 1 keeps running out of file descriptors")
    finally:
        for conn in idle:
            conn.close()
    wait_until(
        lambda: len(events.starts("s")) >= 2 and "s" in live_services(proc),
        10,
        lambda: f"s started again once descriptors are free; {proc.describe()}",
    )
    assert stop_within(proc, GRACE + MARGIN) < GRACE + MARGIN
    assert proc.popen.returncode == 0, proc.describe()
    assert_no_traceback(proc.stderr_lines())


def _hold_connections(path: Path, count: int, into: list[socket.socket]) -> None:
    """Open up to `count` idle connections to the ctl socket (stop at the first refusal)."""
    for _ in range(count):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(2)
        try:
            conn.connect(str(path))
        except OSError:
            conn.close()
            return
        into.append(conn)


def _wait_fds_settle(proc: InitProcess, limit: int) -> None:
    """Wait until pyinit holds limit-1 descriptors or stops taking more (it may cap ctl)."""
    counts: list[tuple[float, int]] = []

    def settled() -> bool:
        try:
            count = len(os.listdir(f"/proc/{proc.pid}/fd"))
        except OSError:
            return True  # gone: the next step says so
        now = time.monotonic()
        counts.append((now, count))
        recent = [c for t, c in counts if t >= now - 0.5]
        return count >= limit - 1 or (now - counts[0][0] >= 0.5 and len(set(recent)) == 1)

    wait_until(settled, 5, lambda: f"pyinit's descriptor count to settle: {counts[-5:]}")


def _stays_alive(proc: InitProcess, seconds: float, what: str) -> None:
    """pyinit (the started process) keeps running for `seconds`; else show its output."""
    try:
        stays_true(lambda: not is_dead(proc.pid) and proc.poll() is None, seconds, what)
    except AssertionError as error:
        raise AssertionError(f"{error}; {proc.describe()}") from None


# --------------------------------------------------------------------------- item 23


def test_json_exited_record_has_the_workers_pid(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 23: the `exited` JSON record carries `pid`, the pid the worker had."""
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    write_toml(config, {"once": service(events, "once", "--run", "0.2", restart="never")})
    proc, _ = start_services(start_init, pyinit_argv, config, tmp_path, "--log-format", "json")
    events.context = proc.describe
    (start,) = events.wait_starts("once", 1)
    (exited,) = wait_until(
        lambda: [r for r in json_records(proc.stderr_lines(0)) if r.get("event") == "exited"],
        5,
        lambda: f"a JSON record of the exited event; {proc.describe()}",
    )
    assert exited.get("pid") == start.pid, exited


# --------------------------------------------------------------------------- item 25


def test_services_do_not_inherit_pyinits_own_configuration(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 25: PYINIT_SERVICES, PYINIT_CONFIG and friends stay with pyinit."""
    config = tmp_path / "pyinit.toml"
    write_toml(config, {"f": {"cmd": ["sleep", "600"], "env": {"MINE": "1"}}})
    ctl_path = tmp_path / "ctl" / "ctl.sock"
    env = services_env(
        "c: sleep 601",
        PYINIT_CONFIG=str(config),
        PYINIT_CTL_SOCKET=str(ctl_path),
        PYINIT_GRACE="3",
        PYINIT_LOG_LEVEL="info",
        PYINIT_LOG_FORMAT="text",
    )
    proc = start_init([*pyinit_argv], prefix=UNSHARE, env=env)
    children = wait_until(
        lambda: (
            (k := [p for p in descendants(proc.pid) if cmdline(p)[:1] == ["sleep"]])
            and len(k) == 2
            and k
        ),
        10,
        lambda: f"both services running; {proc.describe()}",
    )
    for pid in children:
        seen = environ(pid)
        leaked = sorted(k for k in seen if k.startswith("PYINIT_") and k != "PYINIT_WORKER_ID")
        assert not leaked, f"{cmdline(pid)} inherited {leaked}"
        assert "PYINIT_WORKER_ID" in seen


# --------------------------------------------------------------------------- item 2


@INSTALLED_ONLY
def test_full_stderr_pipe_does_not_stop_reaping_or_sigterm(
    pyinit_argv: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Item 2: pyinit's stderr is a full pipe nobody reads; a service crash-loops.

    The test fills the pipe itself once the workers run (what 64 KiB of log
    lines would do, without waiting for them); every later log line of
    pyinit's would block. The workers' starts are read from their event
    file, not from pyinit's output.
    """
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"
    flag = tmp_path / "crash"
    write_toml(
        config,
        {
            "loop": service(
                events,
                "loop",
                "--exit-if-exists",
                str(flag),
                workers=3,
                backoff={"threshold": "1s", "min_delay": "0.05s", "max_delay": "0.1s"},
            ),
        },
    )
    fifo = tmp_path / "stderr.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open, never read
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        to_fifo = [*UNSHARE, "sh", "-c", 'exec "$@" 2>"$PIT_FIFO"', "sh"]
        proc, _ = start_services(
            start_init,
            pyinit_argv,
            config,
            tmp_path,
            "--grace",
            str(GRACE),
            prefix=to_fifo,
            PIT_FIFO=str(fifo),
        )
        events.context = proc.describe
        events.wait_starts("loop", 3)
        _fill(writer)

        filled = time.monotonic()
        flag.touch()
        for pid in live_services(proc).get("loop", []):
            os.kill(pid, signal.SIGKILL)
        events.wait_for(
            lambda e: (
                len([x for x in e if x.name == "loop" and x.kind == "start" and x.time > filled])
                >= 15
            ),
            8,
            "the crash-looping workers keep being reaped and restarted with stderr full",
        )
        assert stop_within(proc, GRACE + MARGIN) < GRACE + MARGIN
    finally:
        os.close(writer)
        os.close(reader)


def _fill(fd: int) -> None:
    """Write into a non-blocking pipe until the kernel says it is full."""
    chunk = b"x" * 4096
    while True:
        try:
            os.write(fd, chunk)
        except BlockingIOError:
            return
