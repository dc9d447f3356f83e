"""`pyinit ctl status [NAME...]` and `ctl ready` for scripts and probes (issue 11).

The real pyinit runs real services (tests/support/svc_child.py) as PID 1 of
a fresh PID namespace; `pyinit ctl` is run as a user would (the installed
command, or the pyz), and its exit status, stdout and stderr are what is
checked. Exit statuses: 0 all ok, 1 not reachable or refused (an unknown
NAME), 2 usage error, 3 a worker failed, backing off, stopped or not ready.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.helpers import (
    PID1_ONLY,
    PYZ_ONLY,
    SUBREAPER_ONLY,
    InitProcess,
    StartInit,
    base_env,
    wait_until,
)
from support.svc_helpers import Events, services_env, svc_argv, write_toml

NOBODY = 65534


class Ctl:
    """`pyinit ctl --ctl-socket PATH ...` with the same pyinit (installed or pyz) as the server."""

    def __init__(self, pyinit_argv: list[str], path: Path) -> None:
        self.argv = [*pyinit_argv, "ctl", "--ctl-socket", str(path)]

    def run(self, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *self.argv, *args],
            capture_output=True,
            text=True,
            timeout=15,
            env=base_env(),
            cwd="/",
        )

    def code(self, *args: str) -> int:
        return self.run(*args).returncode

    def rows(self, *names: str) -> list[dict[str, object]]:
        done = self.run("status", "--json", *names)
        assert done.returncode in (0, 3), done
        rows: list[dict[str, object]] = json.loads(done.stdout)
        return rows

    def row(self, name: str) -> dict[str, object]:
        (row,) = self.rows(name)
        return row

    def wait_state(self, name: str, state: str, timeout: float = 10.0) -> dict[str, object]:
        return wait_until(
            lambda: (r := self.row(name))["state"] == state and r,
            timeout,
            lambda: f"{name} {state}; rows: {self.rows()}",
        )


def start(
    start_init: StartInit,
    pyinit_argv: list[str],
    prefix: list[str],
    tmp_path: Path,
    services: dict[str, dict[str, object]],
    socket_dir: Path | None = None,
) -> tuple[InitProcess, Ctl]:
    config = write_toml(tmp_path / "pyinit.toml", services)
    path = (socket_dir or tmp_path / "ctl") / "ctl.sock"
    proc = start_init(
        [*pyinit_argv, "--config", str(config)],
        prefix=prefix,
        env=services_env(PYINIT_CTL_SOCKET=str(path)),
    )
    wait_until(path.exists, 10, lambda: f"the control socket ({proc.describe()})")
    return proc, Ctl(pyinit_argv, path)


@PID1_ONLY
def test_status_and_ready_follow_readiness_and_ctl_stop(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """Running and ready: 0. Not ready yet, or stopped by `ctl stop`: 3, and `ctl ready`
    names who. A oneshot that exited 0 and a periodic job between runs are fine."""
    log = tmp_path / "events"
    gate = tmp_path / "gate"
    proc, ctl = start(
        start_init, pyinit_argv, as_pid1, tmp_path,
        {
            "web": {"cmd": svc_argv(log, "web")},
            "slow": {"cmd": svc_argv(log, "slow"), "ready": f"file:{gate}"},
            "once": {"cmd": svc_argv(log, "once", "--exit", "0"), "oneshot": True},
            "job": {"cmd": svc_argv(log, "job", "--exit", "0"), "every": "1h"},
        },
    )  # fmt: skip
    Events(log).wait_starts("web", 1)
    ctl.wait_state("once", "exited")
    ctl.wait_state("slow", "starting")

    assert ctl.code("status", "web") == 0
    assert ctl.code("status", "once", "job") == 0, ctl.rows()
    done = ctl.run("status", "slow")
    assert done.returncode == 3, done
    slow = done.stdout.splitlines()[1].split()
    assert (slow[:2], slow[3:5]) == (["slow", "0"], ["starting", "no"]), done.stdout
    assert ctl.code("status") == 3, "any service not ready: 3"
    assert ctl.code("status", "web", "slow") == 3
    done = ctl.run("ready")
    assert (done.returncode, done.stdout) == (1, "not ready: slow[0]\n"), done

    gate.touch()
    wait_until(lambda: ctl.code("status") == 0, 10, lambda: f"all ok; rows: {ctl.rows()}")
    done = ctl.run("ready")
    assert (done.returncode, done.stdout, done.stderr) == (0, "ready\n", ""), done

    assert ctl.run("stop", "web").returncode == 0
    ctl.wait_state("web", "stopped")
    assert ctl.code("status", "web") == 3, "stopped by ctl stop: 3"
    assert ctl.code("status", "slow", "once", "job") == 0, "the others are still fine"
    assert ctl.run("ready").stdout == "not ready: web[0]\n"
    assert ctl.run("start", "web").returncode == 0
    wait_until(lambda: ctl.code("status") == 0, 10, lambda: f"web back; rows: {ctl.rows()}")


@PID1_ONLY
def test_status_exits_3_for_backoff_and_failed_and_json_says_when(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    log = tmp_path / "events"
    began = time.time()
    proc, ctl = start(
        start_init, pyinit_argv, as_pid1, tmp_path,
        {
            "web": {"cmd": svc_argv(log, "web")},
            "crash": {
                "cmd": svc_argv(log, "crash", "--exit", "3"),
                "backoff": {"threshold": "10s", "min_delay": "1h", "max_delay": "1h"},
            },
            "fail": {"cmd": svc_argv(log, "fail", "--exit", "4"), "restart": "never"},
            "job": {"cmd": svc_argv(log, "job", "--exit", "0"), "every": "1h"},
        },
    )  # fmt: skip
    ctl.wait_state("crash", "backoff")
    ctl.wait_state("fail", "failed")
    ended = time.time()

    assert ctl.code("status", "web") == 0
    for name in ("crash", "fail"):
        done = ctl.run("status", name)
        assert done.returncode == 3, done
        assert f" {'backoff' if name == 'crash' else 'failed'} " in done.stdout
    assert ctl.code("status") == 3
    assert ctl.code("status", "--json", "web", "crash") == 3

    # Unknown names: an error naming each of them, exit 1; a bad option: usage, 2.
    done = ctl.run("status", "web", "nope", "zip")
    assert done.returncode == 1, done
    assert done.stderr == "pyinit: error: no such service: 'nope', 'zip'\n", done
    assert not done.stdout
    done = ctl.run("status", "--yaml")
    assert done.returncode == 2 and "usage: pyinit ctl status" in done.stderr, done

    # --json: every field, the last exit's code and time, and the next run of a periodic job.
    rows = {row["service"]: row for row in ctl.rows()}
    assert set(rows) == {"web", "crash", "fail", "job"}
    for row in rows.values():
        assert {
            "service", "worker", "pid", "state", "ready", "ok", "uptime", "restarts", "starts",
            "last_exit", "last_exit_code", "last_exit_time", "next_run", "status", "rss", "cpu",
        } <= set(row), row  # fmt: skip
    assert rows["web"]["ok"] is True and rows["web"]["last_exit_time"] is None
    assert rows["web"]["next_run"] is None and rows["web"]["starts"] == 1
    fail = rows["fail"]
    assert (fail["ok"], fail["last_exit"], fail["last_exit_code"]) == (False, "exit status 4", 4)
    assert isinstance(fail["last_exit_time"], float)
    assert began - 1 <= fail["last_exit_time"] <= ended + 1, (began, fail, ended)
    crash = rows["crash"]
    assert (crash["ok"], crash["state"], crash["restarts"]) == (False, "backoff", 1), crash
    assert crash["last_exit_code"] == 3
    job = rows["job"]
    assert job["ok"] is True and isinstance(job["next_run"], float), job
    assert began + 3600 - 1 <= job["next_run"] <= time.time() + 3600 + 1, job


# -- the socket is there, but not for us ----------------------------------------------------


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A short directory anybody may enter (AF_UNIX paths are short; nobody must reach it)."""
    path = Path(tempfile.mkdtemp(prefix="pit-ctl-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="running a client as nobody needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
@SUBREAPER_ONLY
@PYZ_ONLY
def test_a_socket_we_may_not_use_is_explained_not_called_missing(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path,
    pyz_path: Path, open_dir: Path,
) -> None:  # fmt: skip
    """Not "is pyinit running?": the path, the mode, the owner and our uid, in one line."""
    pyz = open_dir / "pyinit.pyz"  # nobody cannot read pytest's tmp_path
    shutil.copy(pyz_path, pyz)
    os.chmod(pyz, 0o755)
    log = tmp_path / "events"
    proc, ctl = start(
        start_init, pyinit_argv, as_pid1, tmp_path,
        {"web": {"cmd": svc_argv(log, "web")}}, socket_dir=open_dir / "pyinit",
    )  # fmt: skip
    sock = open_dir / "pyinit" / "ctl.sock"
    nobody = Ctl(["/usr/bin/python3", str(pyz)], sock)
    as_nobody = ("setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups")

    # The 0700 directory stops us.
    done = nobody.run("status", prefix=as_nobody)
    assert done.returncode == 1, done
    assert done.stderr == (
        f"pyinit: error: cannot use the control socket {sock}: permission denied:"
        f" its directory {sock.parent} has mode 0700 and belongs to uid 0 (root),"
        f" and you are uid {NOBODY} (nobody); run pyinit ctl as root\n"
    ), done
    assert "running" not in done.stderr
    assert nobody.run("ready", prefix=as_nobody).stderr == done.stderr

    # A directory anyone may enter: then the 0600 socket stops us.
    os.chmod(sock.parent, 0o711)
    done = nobody.run("ready", prefix=as_nobody)
    assert done.returncode == 1, done
    assert done.stderr == (
        f"pyinit: error: cannot use the control socket {sock}: permission denied:"
        f" the socket {sock} has mode 0600 and belongs to uid 0 (root),"
        f" and you are uid {NOBODY} (nobody); run pyinit ctl as root\n"
    ), done
    assert ctl.run("ready").returncode == 0, "root still gets its answer"

    # No --ctl-socket: a default place we may not enter is that pyinit's, not "none".
    os.chmod(sock.parent, 0o700)
    hide_run = ("unshare", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs /run && exec "$@"', "-")
    done = subprocess.run(
        [*hide_run, *as_nobody, "/usr/bin/python3", str(pyz), "ctl", "status"],
        capture_output=True,
        text=True,
        timeout=15,
        env=base_env({"XDG_RUNTIME_DIR": str(open_dir)}),
        cwd="/",
    )
    assert done.returncode == 1, done
    assert done.stderr.startswith(
        f"pyinit: error: cannot use the control socket {sock}: permission denied: its directory"
    ), done
