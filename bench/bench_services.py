#!/usr/bin/python3
"""Services mode benchmark: pyinit against supervisord, side by side.

Run from anywhere (paths are relative to the repository root):

    /usr/bin/python3 bench/bench_services.py            # full run, ~2 minutes
    /usr/bin/python3 bench/bench_services.py --quick    # smoke run, ~30 s
    /usr/bin/python3 bench/bench_services.py --json     # raw numbers as JSON

Three stages, each run for pyinit (`PYINIT_SERVICES`) and supervisord (a
config file in a temporary directory, nodaemon=true) in one process, so
they share the machine's noise (bench/README.md says what each number means):

1. restart: a worker that has run past the 1 s backoff threshold exits; time
   from its exit to the replacement's fork, exec and first Python line;
2. scale: 1,000 `sleep` workers: time to start them all, the supervisor's
   idle wakeups, CPU and memory over a window, and time to stop them all
   after SIGTERM (until the supervisor exits);
3. orphans: the supervisor as PID 1 of a PID namespace, a service that
   orphans N processes; time from the last fork to no zombie left.

Fork and exec times come from the kernel's proc connector (netlink),
stamped with CLOCK_MONOTONIC, the clock of time.monotonic_ns(). The
bench installs nothing: supervisord is skipped, with a note, when no
interpreter here can import `supervisor`.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (  # noqa: E402  (the bench directory is not a package)
    CHILDREN,
    DEFAULT_PYTHON,
    REPO,
    BenchError,
    Processes,
    Row,
    become_subreaper,
    clean_env,
    context_switches,
    cpu_seconds,
    machine_note,
    memory_kib,
    percentile,
    progress_log,
    python_missing,
    ratio,
    read_text,
    resolve_shim,
    run_stages,
    settle,
    verdict,
    version_of,
    wait_until,
)
from exec_clock import open_connector  # noqa: E402  (the same connector as bench_core)

# Targets (the numbers issue 3 sets for pyinit).
RESTART_P50_MAX_MS = 5.0
IDLE_WAKEUPS_MAX = 0.0
RSS_MAX_MIB = 40.0
STOP_ALL_MAX_S = 1.0

THRESHOLD_S = 1.0  # backoff threshold: a run longer than this restarts at once
TARGET_NAMES = ("pyinit", "supervisord")

Json = dict[str, Any]
Log = Callable[[str], None]


# --------------------------------------------------------------------------
# Kernel fork/exec events (proc connector)
# --------------------------------------------------------------------------

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
SO_RCVBUFFORCE = 33
NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
EVENT_HEADER = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
FORK_DATA = struct.Struct("=iiii")  # parent pid, parent tgid, child pid, child tgid
EXEC_DATA = struct.Struct("=ii")  # pid, tgid


class ProcEvents:
    """Fork and exec times of the children of watched processes, from the kernel.

    The proc connector multicasts every fork/exec/exit on the machine with a
    ktime_get_ns() stamp (CLOCK_MONOTONIC). We keep only forks whose parent
    is a watched supervisor, and the execs of those children. Older kernels
    want root for it, and it sees only the initial network namespace;
    `open()` returns None where it gets no events.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.watched: set[int] = set()
        self.forks: dict[int, tuple[int, int]] = {}  # child pid -> (parent tgid, ns)
        self.execs: dict[int, int] = {}  # pid -> ns of its first exec
        self.overflowed = False

    @classmethod
    def open(cls) -> ProcEvents | None:
        sock = open_connector()
        if sock is None:
            return None
        events = cls(sock)
        # Prove it works here: our own fork of `true` must show up.
        events.watch(os.getpid())
        child = subprocess.Popen(["true"])
        child.wait()
        try:
            wait_until(
                lambda: events.drain() or child.pid in events.execs, 2, "no proc connector event"
            )
        except BenchError:
            sock.close()
            return None
        events.watched.discard(os.getpid())
        return events

    def watch(self, pid: int) -> None:
        self.watched.add(pid)

    def drain(self) -> None:
        """Read every queued event (never blocks)."""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno == errno.ENOBUFS:  # the kernel dropped events
                    self.overflowed = True
                    continue
                raise
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length = NLMSG_HEADER.unpack_from(data, offset)[0]
                if length < NLMSG_HEADER.size:
                    break
                self._parse(data, offset + NLMSG_HEADER.size + CN_MSG.size)
                offset += (length + 3) & ~3

    def _parse(self, data: bytes, at: int) -> None:
        if at + EVENT_HEADER.size > len(data):
            return
        what, _, stamp = EVENT_HEADER.unpack_from(data, at)
        at += EVENT_HEADER.size
        if what == PROC_EVENT_FORK:
            _, parent_tgid, child_pid, child_tgid = FORK_DATA.unpack_from(data, at)
            if parent_tgid in self.watched and child_pid == child_tgid:
                self.forks[child_pid] = (parent_tgid, stamp)
        elif what == PROC_EVENT_EXEC:
            pid, _ = EXEC_DATA.unpack_from(data, at)
            if pid in self.forks and pid not in self.execs:
                self.execs[pid] = stamp

    def exec_times(self, parent: int) -> list[int]:
        """Sorted exec times of the children `parent` forked."""
        return sorted(
            ns for pid, ns in self.execs.items() if self.forks.get(pid, (0, 0))[0] == parent
        )

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# The two supervisors
# --------------------------------------------------------------------------


@dataclass
class Svc:
    """One service: `workers` copies of `argv`."""

    name: str
    argv: list[str]
    workers: int


@dataclass
class Target:
    """A supervisor under test and how to run it on a list of services."""

    name: str
    base: list[str]  # pyinit: PYTHON PYZ; supervisord: PYTHON -m supervisor.supervisord
    version: str
    python: str

    def launch(
        self, services: list[Svc], workdir: Path, procs: Processes, prefix: list[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start the supervisor on `services`; its stdout/stderr go to workdir/output.log."""
        workdir.mkdir(parents=True, exist_ok=True)
        env = clean_env()
        if self.name == "pyinit":
            env["PYINIT_SERVICES"] = "; ".join(
                f"{s.name}[{s.workers}]: {shlex.join(s.argv)}" for s in services
            )
            argv = list(self.base)
        else:
            config = workdir / "supervisord.conf"
            config.write_text(supervisord_config(services, workdir))
            argv = self.base + ["-n", "-c", str(config)]
        output = open(workdir / "output.log", "ab")  # noqa: SIM115 (Popen keeps a dup)
        try:
            return procs.start(list(prefix) + argv, env=env, stdout=output, stderr=output)
        finally:
            output.close()


def supervisord_config(services: list[Svc], workdir: Path) -> str:
    """A supervisord.conf as its users would write it for the same services."""
    total = sum(s.workers for s in services)
    lines = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={workdir / 'supervisord.log'}",
        f"pidfile={workdir / 'supervisord.pid'}",
        f"childlogdir={workdir}",
        # three pipes a child: below this it refuses to start
        f"minfds={max(1024, 4 * total + 64)}",
        f"minprocs={max(200, total + 64)}",
        "loglevel=info",
        "",
    ]
    for svc in services:
        lines += [
            f"[program:{svc.name}]",
            "command=" + shlex.join(svc.argv).replace("%", "%%"),
            f"numprocs={svc.workers}",
            "process_name=%(program_name)s_%(process_num)d",
            "autostart=true",
            "autorestart=true",  # default `unexpected` would not restart an exit 0
            f"startsecs={THRESHOLD_S:g}",
            "stopsignal=TERM",
            "stopwaitsecs=10",
            "stdout_logfile=NONE",
            "stderr_logfile=NONE",
            "",
        ]
    return "\n".join(lines)


def can_import_supervisor(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import supervisor.supervisord"],
            capture_output=True,
            timeout=30,
            env=clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def supervisord_python(args: argparse.Namespace, notes: list[str]) -> str | None:
    """The interpreter to run supervisord with: --python if it has it, else the
    one in the `supervisord` script's #! line (pyenv shims resolved)."""
    if args.supervisord_python:
        return args.supervisord_python if can_import_supervisor(args.supervisord_python) else None
    if can_import_supervisor(args.python):
        return args.python
    script = shutil.which("supervisord")
    if not script:
        return None
    script = resolve_shim(script, "supervisord")
    try:
        with open(script, "rb") as handle:
            first = handle.readline().decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    interpreter = words[0] if words else ""
    if os.path.basename(interpreter) == "env" and len(words) > 1:
        interpreter = shutil.which(words[1]) or ""
    if interpreter and can_import_supervisor(interpreter):
        notes.append(
            f"supervisord: not importable by {args.python}; run with {interpreter} (from {script})."
        )
        return interpreter
    return None


def find_targets(args: argparse.Namespace, notes: list[str]) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    if "pyinit" in args.targets:
        base = (
            shlex.split(args.pyinit)
            if args.pyinit
            else [args.python, str(REPO / "dist" / "pyinit.pyz")]
        )
        missing = [a for a in base if a.endswith(".pyz") and not Path(a).exists()]
        if missing:
            notes.append(
                f"pyinit: {missing[0]} not found (build it: python3 build_zipapp.py); "
                "column skipped."
            )
        else:
            version = version_of(base)
            targets["pyinit"] = Target("pyinit", base, version, base[0])
            stale = stale_pyz(base)
            if stale:
                notes.append(stale)
    if "supervisord" in args.targets:
        python = supervisord_python(args, notes)
        if python is None:
            notes.append(
                "supervisord: no interpreter here can import `supervisor` "
                "(pip install supervisor, or --supervisord-python); column skipped."
            )
        else:
            base = [python, "-m", "supervisor.supervisord"]
            version = "supervisord " + version_of(base)
            targets["supervisord"] = Target("supervisord", base, version, python)
    return targets


def stale_pyz(base: list[str]) -> str | None:
    """A note when the pyz is older than the sources it was built from."""
    pyz = next((Path(a) for a in base if a.endswith(".pyz")), None)
    sources = list((REPO / "pyinit").glob("*.py"))
    if pyz is None or not sources:
        return None
    newest = max(sources, key=lambda p: p.stat().st_mtime)
    if newest.stat().st_mtime > pyz.stat().st_mtime:
        return (
            f"pyinit: {pyz} is older than {newest.relative_to(REPO)}; "
            "rebuild it (python3 build_zipapp.py) to measure the current code."
        )
    return None


# --------------------------------------------------------------------------
# Helpers: processes, pidfd waits, reports
# --------------------------------------------------------------------------


def children_named(parent: int, name: str) -> list[int]:
    """Children of `parent` whose comm is `name` (one pass over /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = read_text(f"/proc/{entry.name}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        fields = text[text.rfind(")") + 2 :].split()
        if comm == name and int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def wait_exit(pid: int, timeout: float) -> int | None:
    """Block until `pid` (our child) exits; its time.monotonic_ns(), or None on timeout.

    A pidfd becomes readable the moment the process exits (turns zombie),
    so the time is exact to a wakeup, with no polling.
    """
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if poller.poll(timeout * 1000):
            return time.monotonic_ns()
        return None
    finally:
        os.close(fd)


class Reports:
    """Datagrams from restart_reporter.py: (kind, pid, ppid, ns), with deadlines."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def next(self, timeout: float) -> tuple[str, int, int, int]:
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            raise BenchError("no report from a worker in time")
        kind, pid, ppid, ns = self.sock.recv(256).decode().split()
        return kind, int(pid), int(ppid), int(ns)

    def close(self) -> None:
        self.sock.close()


def output_tail(workdir: Path) -> str:
    try:
        return " | ".join(read_text(str(workdir / "output.log")).strip().splitlines()[-3:])
    except OSError:
        return ""


# --------------------------------------------------------------------------
# Stage 1: restart latency
# --------------------------------------------------------------------------


def bench_restart(
    targets: dict[str, Target],
    python: str,
    samples: int,
    workers: int,
    procs: Processes,
    events: ProcEvents | None,
    tmp: Path,
    log: Log,
) -> Json:
    """Exit of a long-running worker -> its replacement's fork, exec and first line.

    Each supervisor runs `workers` reporters. A round triggers, for each
    supervisor in shuffled order, the oldest worker once it is older than
    the threshold (+0.3 s), and waits for the replacement's `start` report
    before the next one: one restart in flight at a time.
    """
    log(f"restart: {samples} restarts each of a worker that ran > {THRESHOLD_S:g} s")
    reports = Reports(tmp / "report.sock")
    reporter = [python, str(CHILDREN / "restart_reporter.py"), str(tmp / "report.sock")]
    svc = Svc("rr", reporter, workers)
    running: dict[str, subprocess.Popen[bytes]] = {}
    owner: dict[int, str] = {}
    live: dict[str, dict[int, int]] = {name: {} for name in targets}
    exits: dict[int, int] = {}
    starts: dict[str, list[tuple[int, int]]] = {name: [] for name in targets}

    def handle(report: tuple[str, int, int, int]) -> None:
        kind, pid, ppid, ns = report
        name = owner.get(ppid)
        if name is None:
            return
        if kind == "start":
            live[name][pid] = ns
            starts[name].append((pid, ns))
        else:
            live[name].pop(pid, None)
            exits[pid] = ns

    def pump(until: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"timed out after {timeout:g}s: {message}")
            handle(reports.next(remaining))

    result: Json = {}
    samples_of: dict[str, list[Json]] = {name: [] for name in targets}
    try:
        for name, target in targets.items():
            proc = target.launch([svc], tmp / f"restart-{name}", procs)
            running[name] = proc
            owner[proc.pid] = name
            if events:
                events.watch(proc.pid)
        for name in targets:
            try:
                pump(
                    lambda n=name: len(live[n]) >= workers,
                    30,
                    f"{name} did not start {workers} workers; "
                    f"output: {output_tail(tmp / f'restart-{name}')}",
                )
            except BenchError as error:
                result[name] = {"error": str(error)}
                log(f"  {name}: {error}")
        active = [n for n in targets if n not in result]
        rng = random.Random(3)
        for _ in range(samples):
            rng.shuffle(active)
            for name in list(active):
                try:
                    samples_of[name].append(
                        restart_once(name, running[name].pid, live, exits, starts, pump, events)
                    )
                except BenchError as error:
                    result[name] = {"error": str(error)}
                    log(f"  {name}: {error}")
                    active.remove(name)
        for name in active:
            result[name] = summarise_restarts(samples_of[name])
            exec_p50 = result[name].get("exit_to_exec_ms_p50", float("nan"))
            start_p50 = result[name]["exit_to_start_ms_p50"]
            log(f"  {name}: exit -> exec p50 {exec_p50:.2f} ms, -> first line {start_p50:.2f} ms")
        return result
    finally:
        for proc in running.values():
            procs.stop(proc)
        reports.close()


def restart_once(
    name: str,
    init_pid: int,
    live: dict[str, dict[int, int]],
    exits: dict[int, int],
    starts: dict[str, list[tuple[int, int]]],
    pump: Callable[[Callable[[], bool], float, str], None],
    events: ProcEvents | None,
) -> Json:
    """Trigger the oldest worker of one supervisor and time its replacement."""
    pid, started = min(live[name].items(), key=lambda item: item[1])
    old_enough = started / 1e9 + THRESHOLD_S + 0.3
    time.sleep(max(0.0, old_enough - time.monotonic()))  # a clock condition, not a sync
    already = len(starts[name])
    os.kill(pid, signal.SIGUSR1)
    pump(
        lambda: pid in exits and len(starts[name]) > already,
        30,
        f"{name}: no replacement for worker pid {pid} within 30 s",
    )
    new_pid, new_started = starts[name][already]
    exited = exits[pid]
    sample: Json = {
        "old_pid": pid,
        "new_pid": new_pid,
        "exit_to_start_ms": (new_started - exited) / 1e6,
    }
    if events:
        events.drain()
        fork = events.forks.get(new_pid)
        execd = events.execs.get(new_pid)
        if fork and fork[0] == init_pid:
            sample["exit_to_fork_ms"] = (fork[1] - exited) / 1e6
        if execd:
            sample["exit_to_exec_ms"] = (execd - exited) / 1e6
            sample["exec_to_start_ms"] = (new_started - execd) / 1e6
    return sample


def summarise_restarts(samples: list[Json]) -> Json:
    out: Json = {"samples": len(samples)}
    for key in ("exit_to_fork_ms", "exit_to_exec_ms", "exit_to_start_ms", "exec_to_start_ms"):
        values = [s[key] for s in samples if key in s]
        if values:
            out[f"{key}_p50"] = percentile(values, 50)
            out[f"{key}_p99"] = percentile(values, 99)
            out[f"{key}_max"] = max(values)
    out["raw"] = samples
    return out


# --------------------------------------------------------------------------
# Stage 2: scale (N sleep workers)
# --------------------------------------------------------------------------


def bench_scale(
    targets: dict[str, Target],
    count: int,
    window: float,
    procs: Processes,
    events: ProcEvents | None,
    tmp: Path,
    log: Log,
) -> Json:
    log(f"scale: {count} `sleep` workers each, one supervisor at a time, {window:g}s idle window")
    result: Json = {}
    for name, target in targets.items():
        try:
            result[name] = scale_one(target, count, window, procs, events, tmp / f"scale-{name}")
            done = result[name]
            log(
                f"  {name}: all started in {done['start_all_s']:.2f} s, "
                f"RSS {done['rss_kib'] / 1024:.1f} MiB, "
                f"{done['wakeups_per_s']:.2f} wakeups/s, stop-all "
                + (f"{done['stop_all_s']:.2f} s" if "stop_all_s" in done else "timed out")
            )
        except (BenchError, OSError) as error:
            result[name] = {"error": str(error)}
            log(f"  {name}: {error}")
    return result


def scale_one(
    target: Target,
    count: int,
    window: float,
    procs: Processes,
    events: ProcEvents | None,
    workdir: Path,
) -> Json:
    sleep = shutil.which("sleep") or "/bin/sleep"
    launched = time.monotonic_ns()
    proc = target.launch([Svc("w", [sleep, "100000"], count)], workdir, procs)
    try:
        if events:
            events.watch(proc.pid)
        out: Json = {"workers": count}

        def all_running() -> bool:
            if proc.poll() is not None:
                raise BenchError(
                    f"exited with {proc.returncode} while starting: {output_tail(workdir)}"
                )
            if events:
                events.drain()
                return len(events.exec_times(proc.pid)) >= count
            return len(children_named(proc.pid, "sleep")) >= count

        wait_until(
            all_running,
            60 + count * 0.05,
            f"{count} workers not running; output: {output_tail(workdir)}",
            interval=0.01 if events else 0.05,
        )
        seen = time.monotonic_ns()
        running = len(children_named(proc.pid, "sleep"))
        if running < count:
            raise BenchError(f"only {running} of {count} `sleep` children exist")
        if events and not events.overflowed:
            times = events.exec_times(proc.pid)
            out["first_child_s"] = (times[0] - launched) / 1e9
            out["start_all_s"] = (times[count - 1] - launched) / 1e9
            out["start_timing"] = "proc connector (exact)"
        else:
            out["start_all_s"] = (seen - launched) / 1e9
            out["start_timing"] = "/proc scans (upper bound)"

        out["went_quiet_before_window"] = settle(proc.pid, 0.3, 5.0)
        switches, cpu = context_switches(proc.pid), cpu_seconds(proc.pid)
        began = time.monotonic()
        time.sleep(window)  # the measurement window itself
        elapsed = time.monotonic() - began
        if proc.poll() is not None:
            raise BenchError(f"exited during the idle window (status {proc.returncode})")
        out["window_s"] = elapsed
        out["context_switches"] = context_switches(proc.pid) - switches
        out["wakeups_per_s"] = out["context_switches"] / elapsed
        out["cpu_s"] = cpu_seconds(proc.pid) - cpu
        out["cpu_s_total_since_start"] = cpu_seconds(proc.pid)
        mem = memory_kib(proc.pid)
        out.update(rss_kib=mem["rss"], pss_kib=mem["pss"], uss_kib=mem["uss"])
        out["threads"] = len(os.listdir(f"/proc/{proc.pid}/task"))
        out["open_fds"] = len(os.listdir(f"/proc/{proc.pid}/fd"))

        asked = time.monotonic_ns()
        os.kill(proc.pid, signal.SIGTERM)
        gone = wait_exit(proc.pid, 60)
        if gone is None:
            out["stop_error"] = "still running 60 s after SIGTERM"
        else:
            out["stop_all_s"] = (gone - asked) / 1e9
            proc.wait()
            out["exit_status"] = proc.returncode
            # We are a subreaper: anything it left behind is now our child.
            out["left_behind"] = len(children_named(os.getpid(), "sleep"))
        return out
    finally:
        procs.stop(proc)


# --------------------------------------------------------------------------
# Stage 3: orphan reaping as PID 1
# --------------------------------------------------------------------------


def bench_orphans(
    targets: dict[str, Target],
    python: str,
    count: int,
    procs: Processes,
    tmp: Path,
    log: Log,
) -> Json:
    """Each supervisor as PID 1 of a new PID namespace reaps `count` orphans.

    The storm (children/zombie_storm.py) is a service; it writes its
    `loop_end` line to a file (a supervisor may not pass stdout through).
    """
    log(f"orphans: {count} orphans per supervisor, each PID 1 under unshare --pid --fork")
    result: Json = {}
    for name, target in targets.items():
        workdir = tmp / f"orphans-{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        marks = workdir / "storm.out"
        storm = [
            "sh",
            "-c",
            'exec "$0" "$1" "$2" > "$3"',
            python,
            str(CHILDREN / "zombie_storm.py"),
            str(count),
            str(marks),
        ]
        proc = target.launch(
            [Svc("storm", storm, 1)],
            workdir,
            procs,
            prefix=["unshare", "--pid", "--fork", "--mount-proc"],
        )
        try:
            result[name] = orphan_storm(proc, marks, count)
            log(
                f"  {name}: last fork -> no zombie {result[name]['lag_ms']:.0f} ms, "
                f"{result[name]['reaped_per_s']:.0f} orphans/s"
            )
        except (BenchError, OSError) as error:
            result[name] = {"error": f"{error}; output: {output_tail(workdir)}"}
            log(f"  {name}: {error}")
        finally:
            procs.stop(proc)
    return result


def orphan_storm(proc: subprocess.Popen[bytes], marks: Path, count: int) -> Json:
    def text() -> str:
        try:
            return read_text(str(marks))
        except FileNotFoundError:
            return ""

    init_pid = wait_until(
        lambda: (children_of_pid(proc.pid) or [0])[0], 10, "no init under unshare"
    )
    wait_until(lambda: "start" in text(), 30, "storm did not start")
    storm_pid = int(text().split()[1])
    storm_host = wait_until(
        lambda: next(
            (c for c in children_of_pid(init_pid) if "zombie_storm" in read_cmdline(c)), 0
        ),
        10,
        f"storm (ns pid {storm_pid}) not found under the init",
    )
    cpu_before = cpu_seconds(init_pid)
    deadline = time.monotonic() + 60 + count * 0.02
    loop_end = loop_start = None
    peak = pending = 0
    while True:
        if time.monotonic() > deadline:
            raise BenchError(f"{pending} orphans still unreaped at the deadline")
        if loop_end is None:
            for line in text().splitlines():
                if line.startswith("loop_end"):
                    _, end, begin = line.split()
                    loop_end, loop_start = int(end), int(begin)
        kids = children_of_pid(init_pid)
        scanned = time.monotonic_ns()
        pending = sum(1 for c in kids if c != storm_host)
        peak = max(peak, pending)
        if loop_end is not None and pending == 0:
            break
        time.sleep(0.005)
    cpu = cpu_seconds(init_pid) - cpu_before
    assert loop_end is not None and loop_start is not None
    span = (scanned - loop_start) / 1e9
    return {
        "orphans": count,
        "fork_loop_s": (loop_end - loop_start) / 1e9,
        "fork_rate_per_s": count * 1e9 / max(1, loop_end - loop_start),
        "peak_pending": peak,
        "lag_ms": max(0.0, (scanned - loop_end) / 1e6),
        "reaped_per_s": count / span if span > 0 else 0.0,
        "init_cpu_s": cpu,
    }


def children_of_pid(parent: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = read_text(f"/proc/{entry.name}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(text[text.rfind(")") + 2 :].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def read_cmdline(pid: int) -> str:
    try:
        return read_text(f"/proc/{pid}/cmdline")
    except (FileNotFoundError, ProcessLookupError):
        return ""


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def get(stage: Json, name: str, key: str) -> float | None:
    value = (stage.get(name) or {}).get(key)
    return value if isinstance(value, (int, float)) else None


def build_rows(targets: dict[str, Target], results: Json) -> list[Row]:
    names = list(targets)
    rows = [Row("version", "", {n: t.version for n, t in targets.items()}, fmt="{}")]

    def add(stage: Json, label: str, key: str, fmt: str, scale: float = 1.0) -> Row:
        """A row for `key`; left out of the table when no column has a value."""
        values = {n: (None if (v := get(stage, n, key)) is None else v * scale) for n in names}
        row = Row(label, "", values, fmt=fmt)
        if any(v is not None for v in values.values()) or any(
            "error" in stage.get(n, {}) for n in names
        ):
            rows.append(row)
        return row

    restart = results.get("restart")
    if restart:
        count = next((v["samples"] for v in restart.values() if "samples" in v), 0)
        p50_rows = {}
        for key, label in (
            ("exit_to_fork", "fork"),
            ("exit_to_exec", "exec"),
            ("exit_to_start", "first Python line"),
        ):
            for q in ("p50", "p99"):
                row = add(
                    restart,
                    f"restart ({count}×): old exit → new {label} {q}, ms",
                    f"{key}_ms_{q}",
                    "{:.2f}",
                )
                if q == "p50":
                    p50_rows[key] = row
        # exit -> exec when the proc connector gave it, else the first line (an upper bound).
        judged = p50_rows["exit_to_exec"]
        if judged.values.get("pyinit") is None and "error" not in restart.get("pyinit", {}):
            judged = p50_rows["exit_to_start"]
        value = judged.values.get("pyinit")
        judged.target = f"< {RESTART_P50_MAX_MS:g} ms"
        judged.verdict = verdict(
            None if value is None else value < RESTART_P50_MAX_MS,
            "" if judged is p50_rows["exit_to_exec"] else "upper bound: has Python start-up",
            stage=restart,
        )
        add(
            restart,
            "restart: new exec → its first Python line p50, ms",
            "exec_to_start_ms_p50",
            "{:.2f}",
        )

    scale = results.get("scale")
    if scale:
        count = next((v["workers"] for v in scale.values() if "workers" in v), 0)
        window = next((v["window_s"] for v in scale.values() if "window_s" in v), 0)
        add(scale, f"scale: first of {count} workers running, s", "first_child_s", "{:.3f}")
        add(scale, f"scale: all {count} workers running, s", "start_all_s", "{:.3f}")
        row = add(
            scale,
            f"scale: idle wakeups/s (ctx switches over {window:.0f} s)",
            "wakeups_per_s",
            "{:.2f}",
        )
        value = row.values.get("pyinit")
        row.target = f"{IDLE_WAKEUPS_MAX:g}"
        row.verdict = verdict(None if value is None else value <= IDLE_WAKEUPS_MAX, stage=scale)
        add(scale, f"scale: idle CPU over {window:.0f} s, s", "cpu_s", "{:.3f}")
        add(
            scale,
            "scale: CPU since start (start-up + idle), s",
            "cpu_s_total_since_start",
            "{:.2f}",
        )
        row = add(scale, f"scale: RSS with {count} workers, MiB", "rss_kib", "{:.1f}", 1 / 1024)
        value = row.values.get("pyinit")
        row.target = f"< {RSS_MAX_MIB:g} MiB"
        row.verdict = verdict(None if value is None else value < RSS_MAX_MIB, stage=scale)
        add(scale, "scale: USS (private), MiB", "uss_kib", "{:.1f}", 1 / 1024)
        add(scale, "scale: open descriptors", "open_fds", "{:.0f}")
        row = add(
            scale,
            f"scale: SIGTERM → supervisor exited ({count} workers), s",
            "stop_all_s",
            "{:.3f}",
        )
        value = row.values.get("pyinit")
        row.target = f"< {STOP_ALL_MAX_S:g} s"
        row.verdict = verdict(None if value is None else value < STOP_ALL_MAX_S, stage=scale)
        add(scale, "scale: workers left running after it exited", "left_behind", "{:.0f}")

    orphans = results.get("orphans")
    if orphans:
        count = next((v["orphans"] for v in orphans.values() if "orphans" in v), 0)
        add(orphans, f"orphans as PID 1 ({count}): last fork → no zombie, ms", "lag_ms", "{:.0f}")
        add(
            orphans,
            "orphans: reaped per second (fork loop start → none left)",
            "reaped_per_s",
            "{:.0f}",
        )
        add(orphans, "orphans: the storm's fork loop, orphans/s", "fork_rate_per_s", "{:.0f}")
        add(orphans, "orphans: unreaped at peak", "peak_pending", "{:.0f}")
        add(orphans, "orphans: supervisor CPU, s", "init_cpu_s", "{:.2f}")
    return rows


def render_markdown(rows: list[Row], targets: dict[str, Target], notes: list[str]) -> str:
    columns = [n for n in TARGET_NAMES if n in targets]
    both = len(columns) == 2
    header = ["metric"] + columns + (["pyinit/supervisord"] if both else []) + ["target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.metric]
        for name in columns:
            value = row.values.get(name)
            cells.append("–" if value is None else row.fmt.format(value))
        if both:
            cells.append(
                ratio(row.values.get("pyinit"), row.values.get("supervisord"))
                if row.fmt != "{}"
                else "–"
            )
        cells += [row.target or "–", row.verdict or "–"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if notes:
        lines.append("")
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

STAGES = ("restart", "scale", "orphans")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark pyinit's services mode against supervisord (restart latency, "
        "1,000 workers, orphan reaping). Best run as root (proc connector, unshare)."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 10 restarts, 200 workers, 2 s idle window, 300 orphans",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the raw results as JSON instead of Markdown"
    )
    parser.add_argument(
        "--pyinit",
        metavar="CMD",
        help="how to run pyinit, split like a shell (default: PYTHON dist/pyinit.pyz)",
    )
    parser.add_argument(
        "--python",
        default=DEFAULT_PYTHON,
        help="interpreter for pyinit, the children, and supervisord if it has it "
        f"(default {DEFAULT_PYTHON})",
    )
    parser.add_argument(
        "--supervisord-python",
        metavar="PATH",
        help="interpreter that has `supervisor` (default: --python, else the supervisord script's)",
    )
    parser.add_argument(
        "--targets", default=",".join(TARGET_NAMES), help="comma-separated subset of %(default)s"
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of %(default)s"
    )
    parser.add_argument("--restarts", type=int, help="restart samples (default 30, quick 10)")
    parser.add_argument("--workers", type=int, help="scale workers (default 1000, quick 200)")
    parser.add_argument("--idle-seconds", type=float, help="idle window (default 10, quick 2)")
    parser.add_argument("--orphans", type=int, help="orphans per storm (default 1000, quick 300)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a pyinit target fails")
    args = parser.parse_args(argv)
    args.targets = [n.strip() for n in args.targets.split(",") if n.strip()]
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for value, known, what in (
        (args.targets, TARGET_NAMES, "target"),
        (args.stages, STAGES, "stage"),
    ):
        unknown = set(value) - set(known)
        if unknown:
            parser.error(f"unknown {what}: {', '.join(sorted(unknown))}")
    quick = args.quick
    args.restarts = args.restarts or (10 if quick else 30)
    args.workers = args.workers or (200 if quick else 1000)
    args.idle_seconds = args.idle_seconds or (2.0 if quick else 10.0)
    args.orphans = args.orphans or (300 if quick else 1000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = progress_log()
    if python_missing(args.python):
        return 2
    notes: list[str] = []
    targets = find_targets(args, notes)
    notes.insert(0, machine_note("pyinit and the workers run on", args.python))
    if "supervisord" in targets:
        sup = targets["supervisord"]
        notes.insert(1, f"supervisord runs on {sup.python} ({version_of([sup.python])}).")
    for name, target in targets.items():
        log(f"{name}: {target.version} [{shlex.join(target.base)}]")
    if not targets:
        log("nothing to measure")

    procs = Processes()
    if not become_subreaper():
        notes.append("could not become a child subreaper: a crashed supervisor may leave orphans.")
    events = ProcEvents.open()
    if events is None:
        notes.append(
            "proc connector unavailable (old kernel without root, or not the initial netns): "
            "restart latency is measured to the new worker's first Python line only (so it "
            "includes that worker's interpreter start-up); start-all comes from /proc scans."
        )
    tmp = Path(tempfile.mkdtemp(prefix="bench-services-"))
    results: dict[str, Json] = {}
    stages: dict[str, Callable[[], Json]] = {
        "restart": lambda: bench_restart(
            targets, args.python, args.restarts, 4, procs, events, tmp, log
        ),
        "scale": lambda: bench_scale(
            targets, args.workers, args.idle_seconds, procs, events, tmp, log
        ),
        "orphans": lambda: bench_orphans(targets, args.python, args.orphans, procs, tmp, log),
    }
    try:
        run_stages(stages, args.stages, results, notes, log, needs_root="orphans")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        procs.stop_all()
        if events:
            events.close()
        shutil.rmtree(tmp, ignore_errors=True)

    for stage, entries in results.items():
        for name, entry in entries.items():
            for key in ("error", "stop_error"):
                if key in entry:
                    notes.append(f"{stage}/{name}: {entry[key]}")
    if events and events.overflowed:
        notes.append("the proc connector dropped events (ENOBUFS); some times fell back to scans.")
    if "restart" in results:
        notes.append(
            "restart: `exit` is the old worker's clock just before _exit; fork and exec are "
            "kernel timestamps of the replacement; `first Python line` adds the worker's own "
            "interpreter start-up (the `new exec → first line` row), which no supervisor "
            "controls, so the target applies to exit → exec."
        )
    if "scale" in results:
        timing = {v.get("start_timing") for v in results["scale"].values()} - {None}
        notes.append(
            "scale: start times run from launching the supervisor to the exec of the first/last "
            f"worker ({', '.join(sorted(timing)) or 'n/a'}); stop-all from SIGTERM to the "
            "supervisor's exit, read from a pidfd."
        )
    log("done")

    rows = build_rows(targets, results)
    failed = any(r.verdict.startswith("FAIL") for r in rows)
    if args.json:
        print(
            json.dumps(
                {
                    "python": {"path": args.python, "version": version_of([args.python])},
                    "targets": {
                        n: {"argv": t.base, "python": t.python, "version": t.version}
                        for n, t in targets.items()
                    },
                    "settings": {
                        "restarts": args.restarts,
                        "workers": args.workers,
                        "idle_seconds": args.idle_seconds,
                        "orphans": args.orphans,
                        "proc_connector": events is not None,
                    },
                    "results": results,
                    "verdicts": {
                        r.metric: {"target": r.target, "result": r.verdict}
                        for r in rows
                        if r.target
                    },
                    "notes": notes,
                },
                indent=2,
            )
        )
    else:
        print(render_markdown(rows, targets, notes))
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
