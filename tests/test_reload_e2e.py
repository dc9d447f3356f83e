"""Reload on SIGHUP with --config, end to end (SPEC 5), pyinit as PID 1.

The services are tests/support/svc_child.py processes that log every start
(with their worker id and pid), signal and stop to one file, so "unchanged
pids", "a new pid", "ids 0 and 1 kept" and "got its reload signal" are read
from what the processes themselves saw. The upstream manager is a
support.notify_listener socket, where STATUS=reload failed must show up.
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
    InitProcess,
    StartInit,
    descendants,
    is_dead,
    process_state,
    stays_true,
    wait_until,
)
from support.notify_listener import NotifyListener
from support.svc_helpers import (
    Events,
    live_services,
    log_lines,
    services_env,
    svc_argv,
    wait_log,
    write_toml,
)
from test_readiness_e2e import Ctl

pytestmark = [INSTALLED_ONLY, PID1_ONLY]


def alive_by_worker(events: Events, name: str, proc: InitProcess) -> dict[str, int]:
    """{worker id: namespace pid} of `name`'s workers whose latest start is still alive.

    A worker may exit between the /proc scan and the read of its status
    (a removed service, while the test waits for it to go): it is then not alive.
    """
    live = {_ns(pid) for pid in live_services(proc).get(name, [])} - {None}
    latest: dict[str, int] = {}
    for event in events.starts(name):
        latest[event.worker] = event.pid
    return {worker: pid for worker, pid in latest.items() if pid in live}


def _ns(host: int) -> int | None:
    """Namespace pid of host pid `host`; None once the process is gone."""
    try:
        text = Path(f"/proc/{host}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def start_pyinit(
    start_init: StartInit,
    pyinit_argv: list[str],
    as_pid1: list[str],
    config: Path,
    tmp_path: Path,
    **env: str,
) -> tuple[InitProcess, Ctl]:
    ctl_path = tmp_path / "ctl" / "ctl.sock"
    proc = start_init(
        [*pyinit_argv, "--config", str(config)],
        prefix=as_pid1,
        env=services_env(PYINIT_CTL_SOCKET=str(ctl_path), **env),
    )
    wait_until(ctl_path.exists, 10, lambda: f"the control socket ({proc.describe()})")
    return proc, Ctl(pyinit_argv[0], ctl_path)


def test_invalid_file_changes_nothing_and_a_valid_one_applies_the_difference(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    log = events.path

    def service(name: str, *options: str, **table: object) -> dict[str, object]:
        return {"cmd": svc_argv(log, name, *options), **table}

    config = tmp_path / "pyinit.toml"
    v1 = {
        "keep": service("keep"),
        "change": service("change", "--say", "v1"),
        "gone": service("gone"),
        "up": service("up", workers=2),
        "down": service("down", workers=4),
    }
    write_toml(config, v1)
    with NotifyListener() as upstream:
        proc, ctl = start_pyinit(
            start_init, pyinit_argv, as_pid1, config, tmp_path, NOTIFY_SOCKET=upstream.path
        )
        events.context = proc.describe
        upstream.wait_for("READY", "1", context=proc.describe)
        counts = {"keep": 1, "change": 1, "gone": 1, "up": 2, "down": 4}
        for name, count in counts.items():
            events.wait_starts(name, count)
        before = {n: alive_by_worker(events, n, proc) for n in v1}
        assert {n: len(p) for n, p in before.items()} == counts, before
        starts_before = len([e for e in events.all() if e.kind == "start"])

        # Invalid: an unknown restart policy on a known line. Nothing may move.
        text = config.read_text() + '[services.bad]\ncmd = "true"\nrestart = "sometimes"\n'
        bad_line = text.splitlines().index('restart = "sometimes"') + 1
        config.write_text(text)
        hup = time.monotonic()
        proc.send(signal.SIGHUP)
        failed = upstream.wait_for("STATUS", after=hup, context=proc.describe)
        assert failed.fields["STATUS"].startswith("reload failed"), failed
        (line,) = wait_log(proc, r"reload refused")
        assert f"{config}:{bad_line}" in line, f"no file:line ({config}:{bad_line}) in {line!r}"
        assert "Traceback" not in "\n".join(proc.stderr_lines(0))
        stays_true(
            lambda: {n: alive_by_worker(events, n, proc) for n in v1} == before,
            0.5,
            "every pid unchanged after a refused reload",
        )
        assert len([e for e in events.all() if e.kind == "start"]) == starts_before
        assert not [e for e in events.all() if e.kind in ("stop", "signal")], events.all()
        assert {r["service"] for r in ctl.rows()} == set(v1)

        # Valid: added, removed, changed, scaled up and down, and one unchanged.
        v2 = {
            "keep": v1["keep"],
            "change": service("change", "--say", "v2"),
            "new": service("new"),
            "up": service("up", workers=4),
            "down": service("down", workers=1),
        }
        write_toml(config, v2)
        hup = time.monotonic()
        proc.send(signal.SIGHUP)
        wait_log(proc, r"reload: .*1 added \(new\).*1 removed \(gone\).*1 changed \(change\)")
        upstream.wait_for("RELOADING", "1", after=hup, context=proc.describe)
        events.wait_starts("new", 1)

        def alive_now() -> dict[str, dict[str, int]]:
            return {n: alive_by_worker(events, n, proc) for n in [*v2, "gone"]}

        after = wait_until(
            lambda: (
                (a := alive_now())
                and {n: sorted(w) for n, w in a.items()}
                == {
                    "keep": ["0"],
                    "change": ["0"],
                    "new": ["0"],
                    "up": ["0", "1", "2", "3"],
                    "down": ["0"],
                    "gone": [],
                }
                and a
            ),
            10,
            lambda: f"the v2 state; alive: {alive_now()}; {proc.describe()}",
        )
        assert after["keep"] == before["keep"], "unchanged: same process"
        assert [e.signum for e in events.of("keep", "signal")] == [signal.SIGHUP], (
            "unchanged: got its reload_signal (SIGHUP) once"
        )
        assert after["change"]["0"] != before["change"]["0"], "changed: restarted"
        # (several services: their output defaults to prefix, issue 11)
        assert any(line == "change[0] | v2" for line in proc.stdout_lines), (
            "changed: runs the new command"
        )
        assert events.of("gone", "stop"), "removed: stopped with its stop signal (graceful)"
        assert not log_lines(proc, r"gone.*SIGKILL"), "removed: not killed"
        for worker in ("0", "1"):
            assert after["up"][worker] == before["up"][worker], f"up[{worker}] kept its pid"
        assert after["down"]["0"] == before["down"]["0"], "down[0] kept its pid"
        stopped = {e.pid for e in events.of("down", "stop")}
        assert stopped == {before["down"][w] for w in ("1", "2", "3")}, (
            "scaling 4 -> 1 stops ids 3, 2, 1 and only them"
        )
        for name in ("keep", "up", "new"):
            assert not events.of(name, "stop"), f"{name} was stopped"
        rows = ctl.rows()
        assert sorted((r["service"], r["worker"]) for r in rows) == sorted(
            [("keep", 0), ("change", 0), ("new", 0), ("down", 0)] + [("up", w) for w in range(4)]
        ), rows
        proc.send(signal.SIGTERM)
        assert proc.wait(10) == 0


def kubelet_write(directory: Path, files: dict[str, str]) -> None:
    """Update a ConfigMap volume the way the kubelet's AtomicWriter does.

    Files go in a fresh `..<timestamp>` directory; a `..data_tmp` symlink to
    it is renamed over `..data` (the one atomic step); each user-visible name
    is a symlink `NAME -> ..data/NAME` created once; the old directory goes last.
    """
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    (directory / stamp).mkdir(mode=0o755)
    for name, text in files.items():
        (directory / stamp / name).write_text(text)
    data = directory / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    os.symlink(stamp, directory / "..data_tmp")
    os.rename(directory / "..data_tmp", data)
    for name in files:
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / name)
    if old is not None:
        for leftover in (directory / old).iterdir():
            leftover.unlink()
        (directory / old).rmdir()


def toml_text(tmp_path: Path, services: dict[str, dict[str, object]]) -> str:
    scratch = tmp_path / "scratch.toml"
    write_toml(scratch, services)
    return scratch.read_text()


def test_configmap_symlink_swap_is_read_after_each_swap(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """A config mounted from a ConfigMap (`pyinit.toml -> ..data/pyinit.toml`,
    `..data -> ..TIMESTAMP`) is read anew after each kubelet swap + SIGHUP,
    even though the directory it was first read from is gone."""
    events = Events(tmp_path / "events")
    mount = tmp_path / "config"
    mount.mkdir()
    a = {"cmd": svc_argv(events.path, "a")}
    kubelet_write(mount, {"pyinit.toml": toml_text(tmp_path, {"a": a})})
    first_dir = os.readlink(mount / "..data")
    proc, ctl = start_pyinit(start_init, pyinit_argv, as_pid1, mount / "pyinit.toml", tmp_path)
    events.context = proc.describe
    events.wait_starts("a", 1)

    b = {"cmd": svc_argv(events.path, "b")}
    kubelet_write(mount, {"pyinit.toml": toml_text(tmp_path, {"a": {**a, "workers": 2}, "b": b})})
    assert not (mount / first_dir).exists(), "the kubelet removed the first version"
    proc.send(signal.SIGHUP)
    events.wait_starts("b", 1)
    wait_until(lambda: len(alive_by_worker(events, "a", proc)) == 2, 5, "a scaled to 2")

    kubelet_write(mount, {"pyinit.toml": toml_text(tmp_path, {"b": b})})
    proc.send(signal.SIGHUP)
    wait_until(lambda: not alive_by_worker(events, "a", proc), 5, "a removed")
    # a's workers are dead; pyinit lists them until it has reaped them.
    wait_until(
        lambda: {r["service"] for r in ctl.rows()} == {"b"},
        5,
        lambda: f"only b in ctl status; rows: {ctl.rows()}; {proc.describe()}",
    )
    assert len(events.starts("b")) == 1, "b unchanged: not restarted"
    assert not log_lines(proc, r"reload refused")
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_reload_storm_ends_in_the_state_of_the_last_file(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """100 SIGHUPs within a second while the file flips between two versions (written
    in place, so some reloads read half a file), then the final version: pyinit ends
    running exactly the final services and worker counts, with no zombie, no leaked
    process, and its control socket still answering."""
    events = Events(tmp_path / "events")

    def service(name: str, *options: str, workers: int = 1) -> dict[str, object]:
        return {"cmd": svc_argv(events.path, name, *options), "workers": workers}

    version_a = toml_text(
        tmp_path, {"a": service("a", workers=3), "b": service("b"), "d": service("d", "--say", "A")}
    )
    version_b = toml_text(tmp_path, {"a": service("a"), "c": service("c", workers=2)})
    final = toml_text(
        tmp_path,
        {"a": service("a", workers=2), "c": service("c"), "d": service("d", "--say", "final")},
    )
    config = tmp_path / "pyinit.toml"
    config.write_text(version_a)
    proc, ctl = start_pyinit(start_init, pyinit_argv, as_pid1, config, tmp_path)
    events.context = proc.describe
    events.wait_starts("a", 3)

    began = time.monotonic()
    for i in range(100):
        text = final if i == 99 else (version_b if i % 2 == 0 else version_a)
        with open(config, "w") as file:  # in place: a reload may read a torn file
            file.write(text)
        proc.send(signal.SIGHUP)
        pause_until = began + (i + 1) * 0.009  # pacing the storm, not synchronising
        while time.monotonic() < pause_until:
            pass
    assert time.monotonic() - began < 1.0, "the storm took more than a second"

    expected = {"a": 2, "c": 1, "d": 1}

    def settled() -> bool:
        tree = descendants(proc.pid)
        live = live_services(proc)
        return (
            {name: len(pids) for name, pids in live.items()} == expected
            and len(tree) == sum(expected.values())
            and not [p for p in tree if process_state(p) == "Z"]
        )

    wait_until(
        settled,
        15,
        lambda: f"final state {expected}; live {live_services(proc)}; {proc.describe()}",
    )
    stays_true(settled, 0.5, "the final state holds")
    rows = ctl.rows()
    assert sorted((r["service"], r["worker"], r["state"]) for r in rows) == [
        ("a", 0, "running"),
        ("a", 1, "running"),
        ("c", 0, "running"),
        ("d", 0, "running"),
    ], rows
    assert all(not is_dead(pid) for pid in live_services(proc)["d"])
    d_pid = live_services(proc)["d"][0]
    assert "final" in Path(f"/proc/{d_pid}/cmdline").read_bytes().decode(), "d runs the final cmd"
    assert ctl.run("ready").returncode == 0
    assert not [line for line in proc.stderr_lines(0) if "Traceback" in line]
    reloads = len(log_lines(proc, r"reload: |reload refused"))
    assert 1 <= reloads <= 100, f"{reloads} reloads for 100 SIGHUPs"
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not re.search("Traceback", "\n".join(proc.stderr_lines(2)))


@pytest.mark.parametrize(
    "new_services",
    [
        pytest.param({"a": 1, "b": 1}, id="scaled-down"),
        pytest.param({"a": 2}, id="removed"),
    ],
)
def test_issue_4_ready_again_after_a_reload_that_only_stops_workers(
    pyinit_argv: list[str],
    as_pid1: list[str],
    start_init: StartInit,
    tmp_path: Path,
    new_services: dict[str, int],
) -> None:
    """RELOADING=1 must be followed by READY=1 (SPEC 4), else systemd (Type=notify-reload)
    and podman wait for the reload to finish forever. Bug: when the reload's last step is
    a worker that stops (scale down, removed service), that exit never re-evaluates
    readiness, so READY=1 never comes and STATUS stays at "N-1/N services ready"."""
    events = Events(tmp_path / "events")
    config = tmp_path / "pyinit.toml"

    def write(counts: dict[str, int]) -> None:
        write_toml(
            config,
            {
                name: {"cmd": svc_argv(events.path, name), "workers": n}
                for name, n in counts.items()
            },
        )

    write({"a": 2, "b": 1})
    with NotifyListener() as upstream:
        proc, ctl = start_pyinit(
            start_init, pyinit_argv, as_pid1, config, tmp_path, NOTIFY_SOCKET=upstream.path
        )
        events.context = proc.describe
        upstream.wait_for("READY", "1", context=proc.describe)
        events.wait_starts("a", 2)
        write(new_services)
        hup = time.monotonic()
        proc.send(signal.SIGHUP)
        reloading = upstream.wait_for("RELOADING", "1", after=hup, context=proc.describe)
        wait_until(lambda: ctl.run("ready").returncode == 0, 5, "ready again (pyinit ctl ready)")
        ready = upstream.wait_for(
            "READY", "1", after=reloading.time, timeout=3, context=proc.describe
        )
        assert upstream.statuses()[-1] == f"{len(new_services)}/{len(new_services)} services ready"
        assert ready.time - hup < 2
        proc.send(signal.SIGTERM)
        assert proc.wait(10) == 0
