"""Helpers for the services-mode fault tests (tests/test_faults_services.py).

pyinit runs as PID 1 of a fresh PID namespace with a TOML file; the tests
look at it only through its public surfaces: `pyinit ctl`, its stderr, and
the processes below it in /proc (the host's view of the namespace).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.helpers import (
    InitProcess,
    StartInit,
    base_env,
    cmdline,
    descendants,
    is_dead,
    proc_stat,
    wait_until,
)
from support.svc_helpers import ns_pid, services_env

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


class Ctl:
    """`pyinit ctl --ctl-socket PATH ...`, run as a user would (always bounded)."""

    def __init__(self, pyinit: str, path: Path) -> None:
        self.pyinit = pyinit
        self.path = path

    def run(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.pyinit, "ctl", "--ctl-socket", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=base_env(),
        )

    def rows(self) -> list[dict[str, object]]:
        done = self.run("status", "--json")
        # 3: a worker is not ok (failed, backing off, stopped, not ready): still a full answer.
        assert done.returncode in (0, 3), f"pyinit ctl status --json: {done}"
        rows: list[dict[str, object]] = json.loads(done.stdout)
        return rows


def start_services(
    start_init: StartInit,
    pyinit: list[str],
    config: Path,
    tmp_path: Path,
    *flags: str,
    prefix: list[str] | None = None,
    **env: str,
) -> tuple[InitProcess, Ctl]:
    """pyinit --config CONFIG as PID 1, its ctl socket in tmp_path; wait for the socket."""
    ctl_path = tmp_path / "ctl" / "ctl.sock"
    proc = start_init(
        [*pyinit, *flags, "--config", str(config)],
        prefix=UNSHARE if prefix is None else prefix,
        env=services_env(PYINIT_CTL_SOCKET=str(ctl_path), **env),
    )
    wait_until(ctl_path.exists, 10, lambda: f"the control socket ({proc.describe()})")
    return proc, Ctl(pyinit[0], ctl_path)


def environ(pid: int) -> dict[str, str]:
    """The environment `pid` was started with ({} when gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def running_workers(proc: InitProcess) -> set[tuple[str, int, str]]:
    """(--name, PYINIT_WORKER_ID, --say) of each live svc_child.py process below pyinit."""
    found = set()
    for pid in descendants(proc.pid):
        argv = cmdline(pid)
        if is_dead(pid) or not any(a.endswith("svc_child.py") for a in argv):
            continue
        name = argv[argv.index("--name") + 1] if "--name" in argv else "svc"
        say = argv[argv.index("--say") + 1] if "--say" in argv else ""
        worker = environ(pid).get("PYINIT_WORKER_ID", "-1")
        found.add((name, int(worker), say))
    return found


def unowned_processes(proc: InitProcess, ctl: Ctl) -> list[str]:
    """Live processes below pyinit that are neither a worker nor below one.

    Workers are what `ctl status --json` lists (pids as pyinit sees them,
    namespace pids); each descendant is matched by its namespace pid.
    """
    worker_pids = {row["pid"] for row in ctl.rows() if row.get("pid")}
    parent_of: dict[int, int] = {}
    for pid in descendants(proc.pid):
        stat = proc_stat(pid)
        if stat is not None:
            parent_of[pid] = stat.ppid
    unowned = []
    for pid in parent_of:
        if is_dead(pid):
            continue
        owned, cursor = False, pid
        while cursor in parent_of:
            try:
                if ns_pid(cursor) in worker_pids:
                    owned = True
                    break
            except OSError:
                break
            cursor = parent_of[cursor]
        if not owned:
            unowned.append(f"{pid}:{' '.join(cmdline(pid))[:80]}")
    return unowned


def zombies_below(proc: InitProcess) -> list[int]:
    """Descendants of pyinit that are zombies (exited, not reaped)."""
    return [pid for pid in descendants(proc.pid) if (s := proc_stat(pid)) and s.state == "Z"]


def json_records(lines: list[str]) -> list[dict[str, object]]:
    """pyinit's JSON log lines parsed (lines that are not JSON objects are skipped)."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
