"""Services mode, end to end: restarts, backoff, ordering, periodic jobs, shutdown, signals.

pyinit runs as PID 1 of a PID namespace (unshare), as in a container, and
supervises tests/support/svc_child.py services that append what happens to
them (start, signal, stop, with monotonic timestamps) to a log file. Timing
assertions come from those timestamps, with tolerances of a few hundred ms:
the backoff is 1, 2, 4 s, so a tolerance that size still tells them apart.
SPEC.md section 3 (Lifecycle) and section 2 (Signals, services mode).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    PID1_ONLY,
    SUPPORT_DIR,
    InitProcess,
    StartInit,
    base_env,
    cmdline,
    is_dead,
    proc_stat,
    stays_true,
    tagged_pids,
    wait_until,
)
from support.svc_helpers import (
    Events,
    cpu_seconds,
    host_pid,
    live_services,
    log_lines,
    services_env,
    svc,
    svc_argv,
    wait_log,
    write_toml,
)

FAST_BACKOFF = {"threshold": "0.5s", "min_delay": "0.1s", "max_delay": "0.1s"}


def wait_past(moment: float, seconds: float) -> None:
    """Let `seconds` pass since `moment` (a run must outlive the backoff threshold)."""
    wait_until(lambda: time.monotonic() - moment > seconds, seconds + 5, f"{seconds}s to pass")


def restart_delays(proc: InitProcess, name: str) -> list[float]:
    """The delays pyinit announced for `name` ("restarting in N s"), in order."""
    pattern = re.compile(rf"{re.escape(name)}\[\d+\]: restarting in ([\d.]+) s")
    return [float(m[1]) for line in proc.stderr_lines(0) if (m := pattern.search(line))]


# --------------------------------------------------------------------------- restarts


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_two_services_start_and_a_killed_worker_returns_with_its_worker_id(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = f"a[2]: {svc(events.path, 'a')}; b: {svc(events.path, 'b')}"
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    first = {e.worker: e for e in events.wait_starts("a", 2)}
    (b_start,) = events.wait_starts("b", 1)
    assert set(first) == {"0", "1"}, "workers 0 and 1 with PYINIT_WORKER_ID set"
    for event in [*first.values(), b_start]:
        assert event.pgid == event.pid, f"{event} is not the leader of its own process group"
    # Past the 1 s threshold, a death is not "instant": the restart is immediate.
    wait_past(first["1"].time, 1.1)
    victim = host_pid(proc, first["1"].pid)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    again = events.wait_starts("a", 3, timeout=5)[-1]
    assert again.worker == "1", f"the restarted worker has id {again.worker}, not 1"
    assert again.pid != first["1"].pid
    assert again.time - killed_at < 0.5, "a run longer than the threshold restarts at once"
    wait_log(proc, r"a\[1\]: killed by SIGKILL")
    assert not restart_delays(proc, "a"), "no backoff after a long run"
    # The others were left alone.
    assert not is_dead(host_pid(proc, first["0"].pid))
    assert len(events.starts("a")) == 3 and len(events.starts("b")) == 1
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


@INSTALLED_ONLY
@PID1_ONLY
def test_instant_deaths_back_off_1_2_4_seconds(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = f"crash: {svc(events.path, 'crash', '--exit', '1')}"
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    starts = events.wait_starts("crash", 4, timeout=12)
    gaps = [later.time - earlier.time for earlier, later in zip(starts, starts[1:], strict=False)]
    for gap, delay in zip(gaps, (1, 2, 4), strict=True):
        assert delay - 0.1 < gap < delay + 0.7, f"start gaps {gaps}, expected about 1, 2, 4 s"
    assert {e.worker for e in starts} == {"0"}
    assert restart_delays(proc, "crash")[:3] == [1, 2, 4]
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


@INSTALLED_ONLY
@PID1_ONLY
def test_a_long_run_resets_the_backoff(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Instant deaths double the delay; one run past the threshold resets it to zero."""
    events = Events(tmp_path / "events")
    crash_flag = tmp_path / "crash"  # while it exists, the service dies at once
    crash_flag.touch()
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "flaky": {
                "cmd": svc_argv(events.path, "flaky", "--exit-if-exists", str(crash_flag)),
                "backoff": {"threshold": "0.5s", "min_delay": "0.3s", "max_delay": "10s"},
            }
        },
    )
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=base_env())
    events.context = proc.describe
    wait_log(proc, r"flaky\[0\]: restarting in 0.6 s")
    crash_flag.unlink()  # the third run lives
    third = events.wait_starts("flaky", 3)[2]
    wait_past(third.time, 0.7)
    crash_flag.touch()
    killed_at = time.monotonic()
    os.kill(host_pid(proc, third.pid), signal.SIGKILL)
    fourth = events.wait_starts("flaky", 4)[3]
    assert fourth.time - killed_at < 0.25, "a run past the threshold is restarted at once"
    wait_log(proc, r"flaky\[0\]: restarting in", count=3)
    assert restart_delays(proc, "flaky") == [0.3, 0.6, 0.3], "the good run reset the doubling"
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


def _max_restarts_config(tmp_path: Path, events: Events, critical: bool) -> Path:
    return write_toml(
        tmp_path / "pyinit.toml",
        {
            "bad": {
                "cmd": svc_argv(events.path, "bad", "--exit", "3"),
                "max_restarts": 2,
                "restart_window": "60s",
                "backoff": FAST_BACKOFF,
                "critical": critical,
            },
            "good": {"cmd": svc_argv(events.path, "good")},
        },
    )


@INSTALLED_ONLY
@PID1_ONLY
def test_max_restarts_in_the_window_marks_the_service_failed(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    config = _max_restarts_config(tmp_path, events, critical=False)
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=base_env())
    events.context = proc.describe
    (good,) = events.wait_starts("good", 1)
    wait_log(proc, r"bad: failed")
    # The first start plus max_restarts restarts, then no more.
    stays_true(lambda: len(events.starts("bad")) == 3, 0.6, "bad started 3 times, no more")
    assert proc.poll() is None, "a failed service that is not critical does not stop pyinit"
    assert not is_dead(host_pid(proc, good.pid)), "the other service keeps running"
    assert events.of("good", "signal") == []
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


@INSTALLED_ONLY
@PID1_ONLY
def test_a_critical_service_that_fails_shuts_pyinit_down_with_its_status(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    config = _max_restarts_config(tmp_path, events, critical=True)
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=base_env())
    events.context = proc.describe
    result = proc.result(10)
    assert result.returncode == 3, f"expected bad's exit status 3: {result.stderr}"
    assert len(events.starts("bad")) == 3
    assert len(events.of("good", "stop")) == 1, "the other service was stopped with SIGTERM"
    assert any("critical" in line for line in result.stderr)


# --------------------------------------------------------------------------- order


@INSTALLED_ONLY
@PID1_ONLY
def test_a_service_after_a_oneshot_starts_once_it_exited_0(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = (
        f"web[after=migrate]: {svc(events.path, 'web')};"
        f" migrate[oneshot]: {svc(events.path, 'migrate', '--run', '0.5')};"
        f" other: {svc(events.path, 'other')}"
    )
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    (web,) = events.wait_starts("web", 1)
    (migrate,) = events.starts("migrate")
    (other,) = events.starts("other")
    assert web.time >= migrate.time + 0.5, "web started while migrate was still running"
    assert other.time < migrate.time + 0.5, "an independent service does not wait"
    stderr = proc.stderr_lines(0)
    exited = next(i for i, line in enumerate(stderr) if "migrate[0]: exit status 0" in line)
    started = next(i for i, line in enumerate(stderr) if "web[0]: started" in line)
    assert exited < started
    stays_true(lambda: len(events.starts("migrate")) == 1, 0.3, "a oneshot is not restarted")
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


@INSTALLED_ONLY
@PID1_ONLY
def test_a_failing_oneshot_keeps_what_comes_after_it_from_starting(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = (
        f"migrate[oneshot]: {svc(events.path, 'migrate', '--exit', '1')};"
        f" web[after=migrate]: {svc(events.path, 'web')}"
    )
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    wait_log(proc, r"migrate: failed")
    stays_true(lambda: events.starts("web") == [], 1.0, "web never starts")
    assert len(events.starts("migrate")) == 1, "a failed oneshot is not restarted"
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


# --------------------------------------------------------------------------- periodic


@INSTALLED_ONLY
@PID1_ONLY
def test_periodic_jobs_run_on_schedule_and_skip_an_overlapping_run(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """every=1: one run a second; run_on_start adds one at t=0; a 1.5 s job skips every other."""
    events = Events(tmp_path / "events")
    spec = (
        f"tick[every=1]: {svc(events.path, 'tick', '--run', '0')};"
        f" boot[every=1, run_on_start]: {svc(events.path, 'boot', '--run', '0')};"
        f" slow[every=1]: {svc(events.path, 'slow', '--run', '1.5')}"
    )
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    t0 = events.wait_starts("boot", 1)[0].time  # run_on_start: at once
    assert t0 - proc.started_at < 1.0, "run_on_start runs without waiting a period"
    wait_past(t0, 3.6)

    def in_window(name: str) -> list[float]:
        return [e.time - t0 for e in events.starts(name) if e.time - t0 < 3.5]

    tick, boot, slow = in_window("tick"), in_window("boot"), in_window("slow")
    assert len(boot) == 4, f"boot runs at 0, 1, 2, 3 s; got {boot}"
    assert len(tick) == 3, f"tick runs at 1, 2, 3 s (not at start); got {tick}"
    assert 0.8 < tick[0] < 1.4, f"first tick after one period: {tick}"
    assert len(slow) == 2, f"slow runs at 1 and 3 s, its 2 s run skipped; got {slow}"
    assert slow[1] - slow[0] >= 1.5, f"slow runs overlapped: {slow}"
    assert log_lines(proc, r"slow: previous run still going; this run is skipped")
    assert not log_lines(proc, r"(tick|boot): previous run still going")
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


# --------------------------------------------------------------------------- COMMAND


@INSTALLED_ONLY
@PID1_ONLY
@pytest.mark.parametrize(("ending", "status"), [("exit 7", 7), ("kill -KILL $$", 137)])
def test_command_exit_stops_the_services_and_sets_the_status(
    pyinit_argv: list[str],
    as_pid1: list[str],
    start_init: StartInit,
    tmp_path: Path,
    ending: str,
    status: int,
) -> None:
    events = Events(tmp_path / "events")
    spec = f"s1: {svc(events.path, 's1')}; s2[2]: {svc(events.path, 's2')}"
    main = ["sh", "-c", f"sleep 0.5; echo main-done >> {tmp_path / 'main'}; {ending}"]
    proc = start_init([*pyinit_argv, "--", *main], prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    result = proc.result(10)
    assert result.returncode == status, result.stderr
    assert (tmp_path / "main").read_text() == "main-done\n"
    assert len(events.starts("s1")) == 1 and len(events.starts("s2")) == 2
    assert len(events.of("s1", "stop")) == 1 and len(events.of("s2", "stop")) == 2


# --------------------------------------------------------------------------- shutdown


@INSTALLED_ONLY
@PID1_ONLY
def test_sigterm_stops_services_in_reverse_dependency_order(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    slow_stop = ("--stop-delay", "0.3")
    spec = (
        f"db: {svc(events.path, 'db', *slow_stop)};"
        f" app[after=db]: {svc(events.path, 'app', *slow_stop)};"
        f" web[after=app]: {svc(events.path, 'web', *slow_stop)}"
    )
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    events.wait_starts("web", 1)
    started = [line.split("[")[0] for line in log_lines(proc, r"\[0\]: started ")]
    assert [n.removeprefix("pyinit: info: ") for n in started] == ["db", "app", "web"]
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0
    stops = {n: events.of(n, "stop") for n in ("db", "app", "web")}
    assert all(len(s) == 1 for s in stops.values()), stops
    web, app, db = (stops[n][0].time for n in ("web", "app", "db"))
    # Each waits for the one that depends on it to have exited (0.3 s after its SIGTERM).
    assert app >= web + 0.3, f"app stopped before web was down: web {web}, app {app}"
    assert db >= app + 0.3, f"db stopped before app was down: app {app}, db {db}"


@INSTALLED_ONLY
@PID1_ONLY
def test_a_service_ignoring_sigterm_is_killed_after_its_own_grace(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """A chain of two stubborn services (grace 1 each), pyinit's grace 3.

    outer gets SIGTERM, SIGKILL at 1 s; then inner gets SIGTERM, SIGKILL at 2 s;
    everything is over within the largest grace (3 s).
    """
    events = Events(tmp_path / "events")
    deaf = ("--ignore-term",)
    spec = (
        f"inner[grace=1]: {svc(events.path, 'inner', *deaf)};"
        f" outer[grace=1, after=inner]: {svc(events.path, 'outer', *deaf)};"
        f" polite: {svc(events.path, 'polite')}"
    )
    proc = start_init([*pyinit_argv, "-t", "3"], prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    events.wait_starts("outer", 1)
    events.wait_starts("polite", 1)
    sent = time.monotonic()
    proc.send(signal.SIGTERM)
    result = proc.result(10)
    elapsed = proc.ended_at - sent
    assert result.returncode == 0, "services-only shutdown by a signal exits 0"
    assert 1.8 < elapsed < 3.0, f"shutdown took {elapsed:.2f}s, expected about 2 s (< grace 3)"
    term = {n: events.of(n, "signal")[0].time - sent for n in ("outer", "inner")}
    assert term["outer"] < 0.5 and 0.9 < term["inner"] < 1.6, f"SIGTERM times {term}"
    for name in ("outer", "inner"):
        assert any(
            re.search(rf"{name}\[0\]: still running after its grace; sending SIGKILL", line)
            for line in result.stderr
        ), result.stderr
        assert events.of(name, "stop") == []
    assert len(events.of("polite", "stop")) == 1


@INSTALLED_ONLY
@pytest.mark.parametrize("as_pid1", ["pid1", "subreaper"], indirect=True)
def test_nothing_outlives_pyinit(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """A service double-forks a daemon (own session, deaf to SIGTERM): it dies with pyinit."""
    events = Events(tmp_path / "events")
    marker = f"pit-daemon-{os.getpid()}-{tmp_path.name}"

    def marked(daemon_only: bool = False) -> list[int]:
        """Live processes with the marker in their argv (the service has it too)."""
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            argv = cmdline(int(entry))
            if marker in argv and not (daemon_only and "--daemon" in argv):
                found.append(int(entry))
        return found

    spec = f"d: {svc(events.path, 'd', '--daemon', marker)}"
    proc = start_init([*pyinit_argv, "-t", "1"], prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    events.wait_starts("d", 1)
    (daemon,) = wait_until(lambda: marked(daemon_only=True), 10, "the daemon to start")
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert marked() == [], "the daemon outlived pyinit"
    assert tagged_pids(proc.tag) == [], "a process of this test outlived pyinit"
    assert is_dead(daemon)


# --------------------------------------------------------------------------- signals


@INSTALLED_ONLY
@PID1_ONLY
def test_sighup_reloads_and_other_signals_reach_every_service_group(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = (
        f"sig[reload=signal, reload_signal=USR2, reload_to=group]:"
        f" {svc(events.path, 'sig', '--child')};"
        f" hup: {svc(events.path, 'hup')};"
        f" again[reload=restart]: {svc(events.path, 'again')};"
        f" still[reload=none]: {svc(events.path, 'still')}"
    )
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    names = ("sig", "sig.child", "hup", "again", "still")
    for name in names:
        events.wait_starts(name, 1)
    (first_again,) = events.starts("again")
    proc.send(signal.SIGHUP)
    events.wait_starts("again", 2)
    events.wait_for(
        lambda _: all(events.of(n, "signal") for n in ("sig", "sig.child", "hup")),
        5,
        "the reload signals",
    )
    signums = {n: [e.signum for e in events.of(n, "signal")] for n in names}
    assert signums["sig"] == [signal.SIGUSR2] and signums["sig.child"] == [signal.SIGUSR2]
    assert signums["hup"] == [signal.SIGHUP], "reload_signal defaults to SIGHUP"
    assert signums["again"] == [signal.SIGTERM], "reload=restart stops it with its stop signal"
    assert signums["still"] == [], "reload=none leaves it alone"
    second_again = events.starts("again")[1]
    assert second_again.worker == first_again.worker == "0"
    assert second_again.pid != first_again.pid

    proc.send(signal.SIGUSR1)
    events.wait_for(
        lambda _: all(signal.SIGUSR1 in [e.signum for e in events.of(n, "signal")] for n in names),
        5,
        "SIGUSR1 at every service, the child in sig's group included",
    )
    usr1_pids = {e.pid for e in events.all() if e.signum == signal.SIGUSR1}
    assert second_again.pid in usr1_pids, "the restarted worker gets forwarded signals"
    assert proc.poll() is None
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


# --------------------------------------------------------------------------- cost


@INSTALLED_ONLY
@PID1_ONLY
def test_a_crash_loop_costs_little_cpu_and_does_not_delay_other_restarts(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = (
        f"crash: {svc(events.path, 'crash', '--exit', '1')}; steady: {svc(events.path, 'steady')}"
    )
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    (steady,) = events.wait_starts("steady", 1)
    events.wait_starts("crash", 1)
    cpu_before, window_start = cpu_seconds(proc.pid), time.monotonic()
    # The crash loop is now waiting out its backoff; steady must not wait with it.
    events.wait_starts("crash", 2)
    wait_past(steady.time, 1.1)
    killed_at = time.monotonic()
    os.kill(host_pid(proc, steady.pid), signal.SIGKILL)
    again = events.wait_starts("steady", 2, timeout=5)[1]
    assert again.time - killed_at < 0.5, "steady's restart was held up by the crash loop"
    wait_past(window_start, 5.0)
    used = cpu_seconds(proc.pid) - cpu_before
    assert used < 0.5, f"pyinit used {used:.2f} s of CPU in 5 s of a crash loop"
    assert len(events.starts("crash")) >= 3
    assert set(live_services(proc)) == {"steady"}
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


# --------------------------------------------------------------------------- Python classes


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_python_service_workers_keep_their_ids_reload_and_terminate(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """svc_classes.Recorder (2 workers, has reload()) and Plain (no reload()).

    A killed worker 1 comes back as worker 1; SIGHUP calls Recorder.reload()
    in place and restarts Plain with the same id; SIGTERM calls terminate().
    """
    events = Events(tmp_path / "events")
    env = {"PYTHONPATH": str(SUPPORT_DIR)}
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "rec": {
                "class": "svc_classes:Recorder",
                "workers": 2,
                "kwargs": {"log": str(events.path), "tag": "rec"},
                "env": env,
            },
            "plain": {
                "class": "svc_classes:Plain",
                "kwargs": {"log": str(events.path), "tag": "plain"},
                "env": env,
            },
        },
    )
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=base_env())
    events.context = proc.describe
    first = {e.worker: e for e in events.wait_starts("rec", 2, timeout=15)}
    (plain,) = events.wait_starts("plain", 1)
    assert set(first) == {"0", "1"}
    victim = host_pid(proc, first["1"].pid)
    assert proc_stat(victim).comm == "recorder[1]", "the title: class name and worker id"
    os.kill(victim, signal.SIGKILL)
    back = events.wait_starts("rec", 3, timeout=10)[2]
    assert back.worker == "1" and back.pid != first["1"].pid

    proc.send(signal.SIGHUP)
    events.wait_for(lambda _: len(events.of("rec", "signal")) == 2, 10, "reload() in both rec")
    again = events.wait_starts("plain", 2, timeout=10)[1]
    assert again.worker == plain.worker == "0" and again.pid != plain.pid
    assert [e.pid for e in events.of("plain", "stop")] == [plain.pid]
    assert {e.pid for e in events.of("rec", "signal")} == {first["0"].pid, back.pid}
    assert len(events.starts("rec")) == 3, "reload() does not restart the worker"

    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0
    stopped = {e.pid for e in events.all() if e.kind == "stop"}
    assert stopped >= {first["0"].pid, back.pid, again.pid}, "terminate() in every worker"
