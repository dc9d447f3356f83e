#!/usr/bin/python3
"""Soak test: try to break pyinit as PID 1 (issue 7, "How it is checked").

Run by hand, as root (it needs `unshare --pid --fork --mount-proc`):

    /usr/bin/python3 build_zipapp.py              # dist/pyinit.pyz, the default pyinit
    /usr/bin/python3 bench/soak.py --quick        # 1 to 2 minutes
    /usr/bin/python3 bench/soak.py                # 3 to 10 minutes

Stages (each bounded in time; a stage that overruns its bound is a hang):
  a. orphans   10,000 double-forked orphans -> zombies left, time to reap, CPU (pyinit, tini)
  b. signals   100,000 mixed standard and real-time signals to PID 1 -> how many the
               child got (pyinit, tini); then SIGTERM must end it within the grace
  c. chaos     60 s of SIGKILL/SIGSTOP/SIGCONT to workers and ctl stop/start/restart
               on 20 services -> the services that should run do, nothing unowned
  d. reloads   500 random valid and invalid rewrites of the TOML file, each followed
               by SIGHUP or `pyinit ctl reload` -> the final file's state, exactly
  e. shutdown  SIGTERM to the pyinit of stage d -> it exits in its grace, nothing left

It prints one Markdown table (zombies, unowned processes, lost signals,
tracebacks, hangs, CPU, peak RSS per stage and init) and exits 1 when pyinit
misses a target. Standard library only; it reuses bench_core's helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (  # noqa: E402  (the bench directory is not a package)
    CHILDREN,
    CLK_TCK,
    DEFAULT_PYTHON,
    REPO,
    BenchError,
    Processes,
    RecordReader,
    become_subreaper,
    clean_env,
    read_text,
    scan_proc,
    wait_until,
)

GRACE_S = 2.0  # pyinit's --grace / [pyinit] grace in every stage
STOP_SLACK_S = 3.0  # SIGTERM -> exit must take at most GRACE_S + this
MAX_IN_FLIGHT = 30_000  # real-time signals sent but not yet counted (well below `ulimit -i`)
UNREAD_BOUND_S = 30.0  # how long to wait for an exit anyway, to report how late it came
SETTLE_S = 15.0  # how long a stage waits for the final state before calling it missed
ALIVE_STATES = ("starting", "running", "stopping")
STANDARD_KINDS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGHUP)
RT_KINDS = tuple(signal.SIGRTMIN + i for i in range(8))

Json = dict[str, object]
T = TypeVar("T")


class Hang(BenchError):
    """A stage (or one step of it) did not finish within its bound."""


# --------------------------------------------------------------------------
# Processes in the namespace, seen from the host
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class NsProcess:
    host: int  # pid on the host
    ns: int  # pid inside the namespace (NSpid's last field)
    ns_ppid: int  # parent's namespace pid (0 for PID 1)
    state: str  # R, S, T, Z ...
    argv: str


def namespace_processes(init_host: int) -> dict[int, NsProcess]:
    """Every process of the namespace whose PID 1 is host pid `init_host`, by namespace pid.

    The namespace's processes are PID 1 and its descendants; the walk follows
    the ppid links of one /proc scan. A process that exits mid-scan is skipped.
    """
    table = scan_proc()
    by_parent: dict[int, list[int]] = {}
    for pid, (_, ppid) in table.items():
        by_parent.setdefault(ppid, []).append(pid)
    host_to_ns: dict[int, int] = {}
    found: dict[int, NsProcess] = {}
    todo = [init_host] if init_host in table else []
    while todo:
        host = todo.pop()
        todo.extend(by_parent.get(host, []))
        ns = _ns_pid(host)
        if ns is None:
            continue
        host_to_ns[host] = ns
        state, ppid = table[host]
        found[ns] = NsProcess(host, ns, host_to_ns.get(ppid, 0), state, _argv(host))
    return found


def _ns_pid(host: int) -> int | None:
    try:
        text = read_text(f"/proc/{host}/status")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _argv(host: int) -> str:
    try:
        return " ".join(read_text(f"/proc/{host}/cmdline").split("\0")).strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def zombies(procs: dict[int, NsProcess]) -> list[NsProcess]:
    return [p for p in procs.values() if p.state == "Z"]


def owned_by(procs: dict[int, NsProcess], worker_pids: set[int]) -> set[int]:
    """Namespace pids of the workers and of all their descendants."""
    owned = set(worker_pids) & set(procs)
    changed = True
    while changed:
        more = {p.ns for p in procs.values() if p.ns_ppid in owned and p.ns not in owned}
        owned |= more
        changed = bool(more)
    return owned


def unowned(procs: dict[int, NsProcess], rows: list[dict[str, object]]) -> list[NsProcess]:
    """Live processes other than PID 1 that no worker in `ctl status` owns."""
    workers = {int(str(r["pid"])) for r in rows if r.get("state") in ALIVE_STATES and r.get("pid")}
    owned = owned_by(procs, workers)
    return [p for p in procs.values() if p.ns != 1 and p.ns not in owned and p.state != "Z"]


def settled_zombies(init_host: int, timeout: float) -> list[NsProcess]:
    """Zombies left once the namespace had `timeout` seconds to reap them."""
    deadline = time.monotonic() + timeout
    while True:
        left = zombies(namespace_processes(init_host))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


# --------------------------------------------------------------------------
# An init running as PID 1 of a fresh PID namespace
# --------------------------------------------------------------------------


@dataclass
class Stopped:
    """How an init took SIGTERM."""

    exited: bool  # within the bound
    seconds: float
    status: int | None  # unshare's exit status (the init's)
    left: list[str]  # argv of what was alive in the last scan before it exited


class Pid1:
    """`unshare --pid --fork --mount-proc INIT...`: the init's host pid, stderr, usage."""

    def __init__(
        self, procs: Processes, argv: list[str], workdir: Path, env: dict[str, str], label: str
    ) -> None:
        self.stderr_path = workdir / f"{label}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.unshare = procs.start(
                ["unshare", "--pid", "--fork", "--mount-proc", *argv],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        self.procs = procs
        self.host = wait_for(lambda: _first_child(self.unshare.pid), 10, "the init under unshare")

    def alive(self) -> bool:
        state = _state(self.host)
        return state is not None and state not in ("Z", "X")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def tracebacks(self) -> int:
        return self.stderr().count("Traceback (most recent call last)")

    def cpu_s(self) -> float:
        fields = read_text(f"/proc/{self.host}/stat").rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def peak_rss_mib(self) -> float:
        for line in read_text(f"/proc/{self.host}/status").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def usage(self) -> tuple[float | None, float | None]:
        """(CPU seconds, peak RSS MiB) so far; None once it is gone."""
        try:
            return self.cpu_s(), self.peak_rss_mib()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return None, None

    def terminate(self, bound: float, watch: bool = False) -> Stopped:
        """SIGTERM; wait `bound` s for the exit. Reports the time and status, and with
        `watch` what was alive at the last scan before the exit (scans cost CPU)."""
        sent = time.monotonic()
        left_at_exit: list[NsProcess] = []
        os.kill(self.host, signal.SIGTERM)
        while self.unshare.poll() is None and time.monotonic() - sent < bound:
            if watch:
                scan = namespace_processes(self.host)
                init = scan.get(1)
                if init is not None and init.state not in ("Z", "X"):
                    left_at_exit = [p for p in scan.values() if p.ns != 1 and p.state != "Z"]
            time.sleep(0.002 if watch else 0.01)
        took = time.monotonic() - sent
        status = self.unshare.poll()
        if status is None:
            self.procs.stop(self.unshare)
        return Stopped(status is not None, took, status, [p.argv for p in left_at_exit])

    def stop(self) -> None:
        self.procs.stop(self.unshare)


def _first_child(pid: int) -> int:
    kids = [c for c, (_, ppid) in scan_proc().items() if ppid == pid]
    return kids[0] if kids else 0


def _state(host: int) -> str | None:
    try:
        return read_text(f"/proc/{host}/stat").rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """bench_core.wait_until, whose time-out counts as a Hang here."""
    try:
        return wait_until(predicate, timeout, what, interval=0.02)
    except BenchError as error:
        raise Hang(f"{what}: not within {timeout:g} s") from error


class Journal:
    """What the bench did and when (seconds since the stage began), in the work directory:
    with --keep, line it up with pyinit's stderr to see what led to a wrong state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.began = time.monotonic()

    def note(self, text: str) -> None:
        with open(self.path, "a") as out:
            out.write(f"{time.monotonic() - self.began:9.3f} {text}\n")


# --------------------------------------------------------------------------
# pyinit ctl, run as a user would
# --------------------------------------------------------------------------


@dataclass
class Ctl:
    pyinit: list[str]
    socket: Path
    timeouts: int = 0

    def run(self, *args: str) -> subprocess.CompletedProcess[str] | None:
        """One `pyinit ctl` call; None (and a counted timeout) when it does not answer."""
        try:
            return subprocess.run(
                [*self.pyinit, "ctl", "--ctl-socket", str(self.socket), *args],
                capture_output=True,
                text=True,
                timeout=10,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            self.timeouts += 1
            return None

    def rows(self) -> list[dict[str, object]] | None:
        done = self.run("status", "--json")
        if done is None or done.returncode not in (0, 3):  # 3: some worker is not ok
            return None
        rows = json.loads(done.stdout)
        return rows if isinstance(rows, list) else None


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass
class Result:
    stage: str
    init: str
    zombies: int | None = None
    unowned: int | None = None
    lost: str = "–"  # lost signals, as text (what was sent and got through)
    lost_stop: int | None = None  # stop signals that did not end the init in time
    tracebacks: int | None = None
    hangs: int = 0
    cpu_s: float | None = None
    rss_mib: float | None = None
    final_ok: bool | None = None  # final state equal to what it should be
    notes: list[str] = field(default_factory=list)


@dataclass
class Settings:
    pyinit: list[str]
    python: str
    workdir: Path
    orphans: int
    signals: int
    chaos_s: float
    reloads: int
    seed: int
    log: Callable[[str], None]


def pyinit_env(**extra: str) -> dict[str, str]:
    """The bench's environment without PYINIT_* or NOTIFY_SOCKET, plus `extra`."""
    env = clean_env()
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


def with_bounds(result: Result, pid1: Pid1 | None, body: Callable[[], None]) -> Result:
    """Run a stage body; turn a Hang into a counted hang, then read CPU, RSS, tracebacks."""
    try:
        body()
    except Hang as hang:
        result.hangs += 1
        result.notes.append(f"hang: {hang}")
    if pid1 is not None:
        result.tracebacks = pid1.tracebacks()
        if result.tracebacks:
            result.notes.append(f"first traceback: {first_exception(pid1.stderr())}")
    return result


def first_exception(stderr: str) -> str:
    """The exception line ("KeyError: 'r2'") that ends the first traceback in `stderr`."""
    after = stderr.split("Traceback (most recent call last)", 1)[1].splitlines()[1:]
    line = next((ln for ln in after if ln and not ln.startswith(" ")), "?")
    return line[:120]


# --------------------------------------------------------------------------
# Stage a: orphans
# --------------------------------------------------------------------------


def stage_orphans(s: Settings, procs: Processes, name: str, prefix: list[str]) -> Result:
    """`count` double-forked orphans reparented to PID 1: time to reap, zombies left, CPU."""
    result = Result("a. orphans", name)
    argv = [*prefix, s.python, str(CHILDREN / "zombie_storm.py"), str(s.orphans)]
    env = pyinit_env(PYINIT_GRACE=str(GRACE_S))
    pid1 = Pid1(procs, argv, s.workdir, env, f"a-orphans-{name}")

    def body() -> None:
        assert pid1.unshare.stdout is not None
        reader = RecordReader(pid1.unshare.stdout.fileno())
        reader.line(timeout=30)  # "start PID"
        cpu_before = pid1.cpu_s()
        bound = 30 + s.orphans * 0.01
        try:
            _, end, begin = reader.line(timeout=bound).split()
        except BenchError as error:
            raise Hang(f"the storm did not end: {error}") from None
        storm_ns = next(
            p.ns
            for p in namespace_processes(pid1.host).values()
            if p.ns != 1 and "zombie_storm" in p.argv
        )

        def reaped() -> bool:
            scan = namespace_processes(pid1.host)
            return not [p for p in scan.values() if p.ns_ppid == 1 and p.ns != storm_ns]

        wait_for(reaped, 30, "every orphan reaped")
        lag_ms = max(0.0, (time.monotonic_ns() - int(end)) / 1e6)
        result.zombies = len(settled_zombies(pid1.host, 1.0))
        result.unowned = 0  # command mode: every process is the command's
        result.cpu_s, result.rss_mib = pid1.usage()
        if result.cpu_s is not None:
            result.cpu_s -= cpu_before
            result.notes.append(
                f"{s.orphans} orphans in {(int(end) - int(begin)) / 1e9:.1f} s, "
                f"all reaped ≤{lag_ms:.0f} ms after the last fork, "
                f"{result.cpu_s / s.orphans * 1e6:.0f} µs CPU per orphan"
            )
        stop = pid1.terminate(GRACE_S + STOP_SLACK_S)
        result.lost_stop = 0 if stop.exited else 1
        result.notes.append(f"SIGTERM -> exit {stop.status} in {stop.seconds:.2f} s")

    try:
        return with_bounds(result, pid1, body)
    finally:
        pid1.stop()


# --------------------------------------------------------------------------
# Stage b: signals
# --------------------------------------------------------------------------


def signal_counter(report: str) -> None:
    """Child mode: count every signal in STANDARD_KINDS + RT_KINDS, and write the counts
    to `report` (JSON, atomically) at least every 0.2 s while they change, and at
    SIGTERM, then exit 0. So counts that stay the same for longer mean "nothing came"."""
    kinds = {*STANDARD_KINDS, *RT_KINDS, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, kinds)
    counts: dict[int, int] = {}
    written = time.monotonic()

    def write() -> None:
        with open(report + ".tmp", "w") as out:
            json.dump(counts, out)
        os.replace(report + ".tmp", report)

    write()
    while True:
        info = signal.sigtimedwait(kinds, 0.2)
        if info is not None and info.si_signo == signal.SIGTERM:
            write()
            os._exit(0)
        if info is not None:
            counts[info.si_signo] = counts.get(info.si_signo, 0) + 1
        if info is None or time.monotonic() - written > 0.2:
            write()
            written = time.monotonic()


def read_counts(report: Path) -> dict[int, int]:
    try:
        return {int(k): v for k, v in json.loads(report.read_text()).items()}
    except (FileNotFoundError, ValueError):
        return {}


def send_storm(
    host: int, count: int, rng: random.Random, paced_by: Path | None = None
) -> dict[int, int]:
    """Send `count` signals, half real-time, to `host`; retry a full queue (EAGAIN).

    Real-time signals queue against one per-user limit (RLIMIT_SIGPENDING,
    shared by the init's queue and its child's): past it the kernel refuses
    the init's forwards, a loss no init can avoid. With `paced_by` (the
    child's counts), the storm waits while MAX_IN_FLIGHT have not arrived.
    """
    sent: dict[int, int] = {}
    for index in range(count):
        if paced_by is not None and index % 500 == 0:
            wait_in_flight(sent, paced_by)
        kind = rng.choice(RT_KINDS if rng.random() < 0.5 else STANDARD_KINDS)
        for _attempt in range(1000):
            try:
                os.kill(host, kind)
                break
            except BlockingIOError:
                time.sleep(0.001)
        else:
            raise Hang("the real-time signal queue stayed full for 1 s")
        sent[kind] = sent.get(kind, 0) + 1
    return sent


def wait_in_flight(sent: dict[int, int], report: Path) -> None:
    """Wait until at most MAX_IN_FLIGHT real-time signals are in flight, or until the
    child's counts stand still for 1 s (then the rest are lost, not in flight)."""
    sent_rt = sum(v for k, v in sent.items() if k in RT_KINDS)
    last, still_since = -1, time.monotonic()
    while time.monotonic() - still_since < 1.0:
        got_rt = sum(v for k, v in read_counts(report).items() if k in RT_KINDS)
        if sent_rt - got_rt <= MAX_IN_FLIGHT:
            return
        if got_rt != last:
            last, still_since = got_rt, time.monotonic()
        time.sleep(0.01)


def stage_signals(s: Settings, procs: Processes, name: str, prefix: list[str]) -> Result:
    """A storm of mixed signals to PID 1, then one of each standard kind, then SIGTERM."""
    result = Result("b. signals", name)
    report = s.workdir / f"counts-{name}.json"
    child = [s.python, str(Path(__file__).resolve()), "--signal-counter", str(report)]
    env = pyinit_env(PYINIT_GRACE=str(GRACE_S))
    pid1 = Pid1(procs, [*prefix, *child], s.workdir, env, f"b-signals-{name}")

    def body() -> None:
        wait_for(report.exists, 10, "the signal counter to start")
        cpu_before = pid1.cpu_s()
        started = time.monotonic()
        sent = send_storm(pid1.host, s.signals, random.Random(s.seed), paced_by=report)
        took = time.monotonic() - started
        busy = busy_seconds(pid1, 60)
        if busy is None:
            result.hangs += 1
            result.notes.append("still busy (CPU rising) 60 s after the storm")
        received = settle_counts(report, 30)
        sent_rt = sum(v for k, v in sent.items() if k in RT_KINDS)
        got_rt = sum(v for k, v in received.items() if k in RT_KINDS)
        got_std = sum(v for k, v in received.items() if k in STANDARD_KINDS)
        before_probe = dict(received)
        for kind in STANDARD_KINDS:  # the storm is over: each of these must arrive
            os.kill(pid1.host, kind)
            time.sleep(0.05)
        after = settle_counts(report, 10)
        missing = [
            signal.Signals(k).name
            for k in STANDARD_KINDS
            if after.get(k, 0) <= before_probe.get(k, 0)
        ]
        result.lost = f"RT {sent_rt - got_rt}/{sent_rt}; std probes lost {len(missing)}/4"
        result.cpu_s, result.rss_mib = pid1.usage()
        if result.cpu_s is not None:
            result.cpu_s -= cpu_before
        result.notes.append(
            f"sent {s.signals} in {took:.1f} s, then busy {cell(busy, '{:.1f}')} s: "
            f"real-time {got_rt}/{sent_rt} arrived, "
            f"standard {got_std}/{s.signals - sent_rt} (repeats merge)"
            + (f"; after the storm lost {', '.join(missing)}" if missing else "")
        )
        result.zombies = len(settled_zombies(pid1.host, 1.0))
        result.unowned = 0
        # What `docker stop` during a storm does: SIGTERM right behind a second storm.
        second = s.signals // 5
        send_storm(pid1.host, second, random.Random(s.seed + 10))
        stop = pid1.terminate(GRACE_S + STOP_SLACK_S)
        result.lost_stop = 0 if stop.exited else 1
        result.notes.append(
            f"SIGTERM right after a 2nd storm of {second} -> exit {stop.status} "
            f"in {stop.seconds:.2f} s"
        )

    try:
        return with_bounds(result, pid1, body)
    finally:
        pid1.stop()


def busy_seconds(pid1: Pid1, bound: float) -> float | None:
    """Seconds until the init's CPU time stops rising for 0.5 s; None if not within `bound`."""
    began = time.monotonic()
    last, still_since = pid1.cpu_s(), began
    while time.monotonic() - still_since < 0.5:
        if time.monotonic() - began > bound:
            return None
        time.sleep(0.05)
        now = pid1.cpu_s()
        if now != last:
            last, still_since = now, time.monotonic()
    return still_since - began


def signal_blocker(ready: str) -> None:
    """Child mode: block every storm kind (not SIGTERM), say so in `ready`, never take them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {*STANDARD_KINDS, *RT_KINDS})
    Path(ready).touch()
    while True:
        signal.pause()  # SIGTERM's default action ends us


def stage_signals_unread(s: Settings, procs: Processes, name: str, prefix: list[str]) -> Result:
    """The storm again, to an init whose child never takes the signals: the queues
    fill up (then any init loses signals; not counted), and SIGTERM must still end it."""
    result = Result("b. signals, child not reading", name)
    ready = s.workdir / f"blocker-{name}.ready"
    child = [s.python, str(Path(__file__).resolve()), "--signal-blocker", str(ready)]
    env = pyinit_env(PYINIT_GRACE=str(GRACE_S))
    pid1 = Pid1(procs, [*prefix, *child], s.workdir, env, f"b-unread-{name}")

    def body() -> None:
        wait_for(ready.exists, 10, "the signal blocker to start")
        cpu_before = pid1.cpu_s()
        started = time.monotonic()
        send_storm(pid1.host, s.signals, random.Random(s.seed))
        took = time.monotonic() - started
        result.cpu_s, result.rss_mib = pid1.usage()
        stop = pid1.terminate(UNREAD_BOUND_S)
        if result.cpu_s is not None:
            result.cpu_s -= cpu_before
        result.lost_stop = 0 if stop.exited and stop.seconds <= GRACE_S + STOP_SLACK_S else 1
        result.hangs = 0 if stop.exited else 1
        result.zombies = result.unowned = 0
        result.notes.append(
            f"sent {s.signals} in {took:.1f} s; SIGTERM right after -> exit {stop.status} "
            f"in {stop.seconds:.2f} s (bound {GRACE_S + STOP_SLACK_S:g} s, waited up to "
            f"{UNREAD_BOUND_S:g} s)"
        )

    try:
        return with_bounds(result, pid1, body)
    finally:
        pid1.stop()


def settle_counts(report: Path, timeout: float) -> dict[int, int]:
    """The child's counts once they stop changing for 1 s (Hang after `timeout`)."""
    deadline = time.monotonic() + timeout
    last, still_since = read_counts(report), time.monotonic()
    while time.monotonic() - still_since < 1.0:
        if time.monotonic() > deadline:
            raise Hang(f"the signal counts kept changing for {timeout:g} s")
        time.sleep(0.1)
        now = read_counts(report)
        if now != last:
            last, still_since = now, time.monotonic()
    return last


# --------------------------------------------------------------------------
# Services: TOML files
# --------------------------------------------------------------------------

BACKOFF = '{ threshold = "1s", min_delay = "0.1s", max_delay = "1s" }'


def service_toml(name: str, table: dict[str, object]) -> str:
    lines = [f"[services.{name}]"]
    for key, value in table.items():
        if key == "backoff":
            lines.append(f"backoff = {value}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def config_text(services: dict[str, dict[str, object]]) -> str:
    head = f"[pyinit]\ngrace = {GRACE_S}\n\n"
    return head + "\n".join(service_toml(n, t) for n, t in services.items())


def chaos_services() -> dict[str, dict[str, object]]:
    """20 services: 2 oneshots, 4 that come after them, and 14 long-running ones."""
    services: dict[str, dict[str, object]] = {
        "once0": {"cmd": ["/bin/true"], "oneshot": True},
        "once1": {"cmd": ["/bin/sleep", "0.3"], "oneshot": True},
    }
    for i in range(18):
        table: dict[str, object] = {
            "cmd": ["/bin/sleep", str(100000 + i)],
            "workers": (1, 2, 3)[i % 3],
            "backoff": BACKOFF,
            "reload": "none",
        }
        if i < 4:
            table["after"] = ["once0"] if i % 2 else ["once0", "once1"]
        services[f"s{i:02d}"] = table
    return services


def start_services(s: Settings, procs: Processes, config: Path) -> tuple[Pid1, Ctl]:
    """pyinit --config `config` as PID 1, with its ctl socket in the work directory."""
    sock = s.workdir / f"ctl-{time.monotonic_ns()}" / "ctl.sock"
    env = pyinit_env(PYINIT_CTL_SOCKET=str(sock))
    argv = [*s.pyinit, "--grace", str(GRACE_S), "--config", str(config)]
    pid1 = Pid1(procs, argv, s.workdir, env, config.stem)
    wait_for(sock.exists, 15, "pyinit's control socket")
    return pid1, Ctl(s.pyinit, sock)


def running_set(rows: list[dict[str, object]], procs: dict[int, NsProcess]) -> set[tuple[str, int]]:
    """(service, worker) of rows that are running with a live, unstopped process."""
    live = {p.ns for p in procs.values() if p.state not in ("Z", "X", "T", "t")}
    return {
        (str(r["service"]), int(str(r["worker"])))
        for r in rows
        if r.get("state") == "running" and int(str(r.get("pid") or 0)) in live
    }


def expected_set(services: dict[str, dict[str, object]], skip: set[str]) -> set[tuple[str, int]]:
    return {
        (name, w)
        for name, t in services.items()
        if name not in skip and not t.get("oneshot")
        for w in range(int(str(t.get("workers", 1))))
    }


def check_final(pid1: Pid1, ctl: Ctl, expected: set[tuple[str, int]], result: Result) -> None:
    """Wait up to SETTLE_S for exactly `expected` running and nothing unowned; record it."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        rows = ctl.rows()
        scan = namespace_processes(pid1.host)
        have = running_set(rows, scan) if rows is not None else set()
        stray = unowned(scan, rows) if rows is not None else []
        if rows is not None and have == expected and not stray:
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    result.final_ok = rows is not None and have == expected
    result.unowned = len(stray) if rows is not None else None
    result.zombies = len(settled_zombies(pid1.host, 2.0))
    if rows is None:
        result.notes.append("ctl status did not answer")
        return
    if have != expected:
        states = {
            (str(r["service"]), int(str(r["worker"]))): f"{r['state']} pid {r['pid']}" for r in rows
        }
        missing = [f"{n}[{w}] ({states.get((n, w), 'no row')})" for n, w in sorted(expected - have)]
        extra = [f"{n}[{w}]" for n, w in sorted(have - expected)]
        result.notes.append(f"{len(missing)} missing {missing[:4]}, {len(extra)} extra {extra[:4]}")
    if stray:
        result.notes.append(f"unowned e.g. {[p.argv for p in stray[:3]]}")


# --------------------------------------------------------------------------
# Stage c: chaos on 20 services
# --------------------------------------------------------------------------


def stage_chaos(s: Settings, procs: Processes) -> Result:
    """Random SIGKILL/SIGSTOP/SIGCONT to workers and ctl verbs, then check the state."""
    result = Result("c. chaos", "pyinit")
    services = chaos_services()
    config = s.workdir / "chaos.toml"
    config.write_text(config_text(services))
    pid1, ctl = start_services(s, procs, config)
    rng = random.Random(s.seed + 1)
    stopped_by_ctl: set[str] = set()
    journal = Journal(s.workdir / "chaos.actions")
    counts = {"SIGKILL": 0, "SIGSTOP": 0, "SIGCONT": 0, "stop": 0, "start": 0, "restart": 0}

    def body() -> None:
        wait_for(
            lambda: (
                len(running_set(ctl.rows() or [], namespace_processes(pid1.host)))
                == len(expected_set(services, set()))
            ),
            15,
            "every service running at start",
        )
        end = time.monotonic() + s.chaos_s
        while time.monotonic() < end:
            if rng.random() < 0.7:
                chaos_signal(pid1, rng, counts, journal)
            else:
                verb = rng.choice(("stop", "start", "restart"))
                name = rng.choice(list(services))
                done = ctl.run(verb, name)
                if done is None:
                    raise Hang(f"ctl {verb} {name} did not answer")
                journal.note(f"ctl {verb} {name} -> {done.returncode} {done.stdout.strip()}")
                counts[verb] += 1
                (stopped_by_ctl.add if verb == "stop" else stopped_by_ctl.discard)(name)
            time.sleep(rng.uniform(0.01, 0.06))
        for p in namespace_processes(pid1.host).values():  # the monkey undoes its SIGSTOPs
            if p.state in ("T", "t"):
                os.kill(p.host, signal.SIGCONT)
                journal.note(f"end: SIGCONT to pid {p.ns} ({p.argv})")
        check_final(pid1, ctl, expected_set(services, stopped_by_ctl), result)
        result.cpu_s, result.rss_mib = pid1.usage()
        result.notes.append(
            f"{s.chaos_s:g} s: "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
            + f"; {len(stopped_by_ctl)} services left stopped by ctl"
        )

    try:
        return with_bounds(result, pid1, body)
    finally:
        result.lost_stop = shutdown_into(pid1, result)
        pid1.stop()


def chaos_signal(pid1: Pid1, rng: random.Random, counts: dict[str, int], journal: Journal) -> None:
    """SIGKILL, SIGSTOP or SIGCONT to one random worker (a child of PID 1)."""
    workers = [
        p for p in namespace_processes(pid1.host).values() if p.ns_ppid == 1 and p.state != "Z"
    ]
    if not workers:
        return
    sig = rng.choice((signal.SIGKILL, signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT))
    victim = rng.choice(workers)
    try:
        os.kill(victim.host, sig)
    except ProcessLookupError:
        return
    counts[signal.Signals(sig).name] += 1
    journal.note(f"{signal.Signals(sig).name} to pid {victim.ns} ({victim.argv})")


def shutdown_into(pid1: Pid1, result: Result) -> int | None:
    """SIGTERM a services-mode pyinit that is still alive; 1 if it did not exit in time."""
    if not pid1.alive():
        result.notes.append("pyinit was not running at the end")
        return None
    stop = pid1.terminate(GRACE_S + STOP_SLACK_S)
    result.notes.append(f"SIGTERM -> exit {stop.status} in {stop.seconds:.2f} s")
    return 0 if stop.exited else 1


# --------------------------------------------------------------------------
# Stage d: random reloads
# --------------------------------------------------------------------------

RELOAD_NAMES = tuple(f"r{i}" for i in range(8))


def random_services(rng: random.Random, final: bool = False) -> dict[str, dict[str, object]]:
    """A valid random file: a subset of RELOAD_NAMES, 0..3 workers, `after` on earlier
    ones, one of three commands, a random reload mode. `final`: every `after`
    target has workers (so the expected state is plain)."""
    chosen = [n for n in RELOAD_NAMES if rng.random() < 0.6] or [RELOAD_NAMES[0]]
    services: dict[str, dict[str, object]] = {}
    for name in chosen:
        table: dict[str, object] = {
            "cmd": ["/bin/sleep", str(200000 + rng.randint(0, 2))],
            "workers": rng.randint(0, 3),
            "backoff": BACKOFF,
            "reload": rng.choice(("none", "restart", "signal")),
        }
        earlier = [n for n in services if not final or int(str(services[n]["workers"])) > 0]
        if earlier and rng.random() < 0.4:
            table["after"] = rng.sample(earlier, k=min(len(earlier), rng.randint(1, 2)))
        services[name] = table
    return services


def invalid_text(rng: random.Random, services: dict[str, dict[str, object]]) -> str:
    """A file pyinit must refuse: a syntax error, an unknown `after`, a cycle, bad workers."""
    text = config_text(services)
    kind = rng.randrange(4)
    if kind == 0:
        return text + "[services.broken\ncmd = \n"
    if kind == 1:
        return text + '[services.orphan]\ncmd = "/bin/true"\nafter = ["no_such_service"]\n'
    if kind == 2:
        return text + (
            '[services.x1]\ncmd = "/bin/true"\nafter = ["x2"]\n'
            '[services.x2]\ncmd = "/bin/true"\nafter = ["x1"]\n'
        )
    return text + '[services.neg]\ncmd = "/bin/true"\nworkers = -1\n'


def write_config(path: Path, text: str, rng: random.Random) -> None:
    """Mostly an atomic rename (what editors and the kubelet do), sometimes in place."""
    if rng.random() < 0.8:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    else:
        with open(path, "w") as out:
            out.write(text)


def stage_reloads(s: Settings, procs: Processes) -> tuple[Result, Pid1 | None]:
    """Random rewrites + SIGHUP / ctl reload; the final valid file's state, exactly."""
    result = Result("d. reloads", "pyinit")
    rng = random.Random(s.seed + 2)
    config = s.workdir / "reload.toml"
    first = random_services(rng, final=True)
    config.write_text(config_text(first))
    pid1, ctl = start_services(s, procs, config)
    tally = {"valid": 0, "invalid": 0, "SIGHUP": 0, "ctl reload": 0, "bursts": 0}
    journal = Journal(s.workdir / "reload.actions")

    def body() -> None:
        done_reloads = 0
        while done_reloads < s.reloads:
            burst = rng.randint(2, 4) if rng.random() < 0.2 else 1
            tally["bursts"] += burst > 1
            for _ in range(burst):
                if rng.random() < 0.2:
                    text = invalid_text(rng, random_services(rng))
                    tally["invalid"] += 1
                else:
                    text = config_text(random_services(rng))
                    tally["valid"] += 1
                write_config(config, text, rng)
                journal.note("wrote:\n" + text)
                journal.note(trigger_reload(pid1, ctl, rng, tally))
                done_reloads += 1
            time.sleep(rng.uniform(0.0, 0.2))
        final = random_services(rng, final=True)
        write_config(config, config_text(final), random.Random(0))
        journal.note("wrote the final file:\n" + config_text(final))
        os.kill(pid1.host, signal.SIGHUP)
        journal.note("SIGHUP")
        check_final(pid1, ctl, expected_set(final, set()), result)
        result.cpu_s, result.rss_mib = pid1.usage()
        result.notes.append(
            ", ".join(f"{v} {k}" for k, v in tally.items())
            + f"; final: {sum(int(str(t['workers'])) for t in final.values())} workers "
            f"of {len(final)} services"
        )

    return with_bounds(result, pid1, body), pid1


def trigger_reload(pid1: Pid1, ctl: Ctl, rng: random.Random, tally: dict[str, int]) -> str:
    """SIGHUP (60 %) or `pyinit ctl reload`; returns what it did, for the journal."""
    if rng.random() < 0.6:
        os.kill(pid1.host, signal.SIGHUP)
        tally["SIGHUP"] += 1
        return "SIGHUP"
    done = ctl.run("reload")
    if done is None:
        raise Hang("ctl reload did not answer")
    tally["ctl reload"] += 1
    return f"ctl reload -> {done.returncode} {(done.stdout + done.stderr).strip()[:200]}"


# --------------------------------------------------------------------------
# Stage e: the final shutdown
# --------------------------------------------------------------------------


def stage_shutdown(s: Settings, procs: Processes, pid1: Pid1 | None) -> Result:
    """SIGTERM to the pyinit left by stage d (or a fresh one): exits in time, nothing left."""
    result = Result("e. shutdown", "pyinit")
    if pid1 is None or not pid1.alive():
        config = s.workdir / "shutdown.toml"
        config.write_text(config_text(chaos_services()))
        pid1, _ = start_services(s, procs, config)
        result.notes.append("fresh pyinit with the 20 services of stage c")
    result.cpu_s, result.rss_mib = pid1.usage()
    tracebacks_before = pid1.tracebacks()
    before = len([p for p in namespace_processes(pid1.host).values() if p.ns != 1])
    stop = pid1.terminate(GRACE_S + STOP_SLACK_S, watch=True)
    result.lost_stop = 0 if stop.exited else 1  # (not also counted as a hang)
    left = stop.left
    result.unowned = len(left)
    result.zombies = 0
    result.final_ok = stop.exited and stop.status == 0 and not left
    result.tracebacks = pid1.tracebacks() - tracebacks_before
    where = "when pyinit exited" if stop.exited else "at the deadline (then SIGKILLed)"
    result.notes.append(
        f"{before} processes; SIGTERM -> exit {stop.status} in {stop.seconds:.2f} s"
        + (f"; alive {where}: {left[:3]}" if left else "")
    )
    pid1.stop()
    return result


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

TARGETS: dict[str, Callable[[Result], bool | None]] = {
    "0 tracebacks": lambda r: None if r.tracebacks is None else r.tracebacks == 0,
    "0 hangs": lambda r: r.hangs == 0,
    "0 lost stop signals": lambda r: None if r.lost_stop is None else r.lost_stop == 0,
    "0 unowned processes": lambda r: None if r.unowned is None else r.unowned == 0,
    "0 zombies": lambda r: None if r.zombies is None else r.zombies == 0,
    "final state = last valid file": lambda r: r.final_ok,
}


def cell(value: object, fmt: str = "{}") -> str:
    return "–" if value is None else fmt.format(value)


def render(results: list[Result]) -> tuple[str, bool]:
    """The Markdown table and the targets; True when pyinit met every target."""
    lines = [
        "| stage | init | zombies | unowned | lost signals | lost stop | tracebacks | hangs "
        "| CPU s | peak RSS MiB | final state | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        final = {None: "–", True: "ok", False: "WRONG"}[r.final_ok]
        lines.append(
            f"| {r.stage} | {r.init} | {cell(r.zombies)} | {cell(r.unowned)} | {r.lost} "
            f"| {cell(r.lost_stop)} | {cell(r.tracebacks)} | {r.hangs} "
            f"| {cell(r.cpu_s, '{:.2f}')} | {cell(r.rss_mib, '{:.1f}')} | {final} "
            f"| {'; '.join(r.notes)} |"
        )
    all_met = True
    lines += ["", "| target (pyinit) | result | missed in |", "|---|---|---|"]
    for target, check in TARGETS.items():
        missed = [r.stage for r in results if r.init == "pyinit" and check(r) is False]
        all_met &= not missed
        lines.append(f"| {target} | {'FAIL' if missed else 'PASS'} | {', '.join(missed) or '–'} |")
    return "\n".join(lines) + "\n", all_met


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

STAGES = ("orphans", "signals", "chaos", "reloads", "shutdown")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes for a ~2 minute run")
    parser.add_argument(
        "--pyinit", help="how to run pyinit, split like a shell (default: PYTHON dist/pyinit.pyz)"
    )
    parser.add_argument(
        "--python",
        default=DEFAULT_PYTHON,
        help="interpreter for pyinit and the Python children (default %(default)s)",
    )
    parser.add_argument("--tini", default="/usr/bin/tini", help="tini binary ('' to skip)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    parser.add_argument("--orphans", type=int)
    parser.add_argument("--signals", type=int)
    parser.add_argument("--chaos-seconds", type=float)
    parser.add_argument("--reloads", type=int)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (pyinit's stderr per stage, TOML files)",
    )
    parser.add_argument("--signal-counter", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--signal-blocker", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    quick = args.quick
    args.orphans = args.orphans or (2000 if quick else 10000)
    args.signals = args.signals or 100000  # fewer do not fill a 64 KiB wakeup pipe
    args.chaos_seconds = args.chaos_seconds or (15.0 if quick else 60.0)
    args.reloads = args.reloads or (100 if quick else 500)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.signal_counter:
        signal_counter(args.signal_counter)
        return 0
    if args.signal_blocker:
        signal_blocker(args.signal_blocker)
        return 0
    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("soak: needs root and unshare(1)", file=sys.stderr)
        return 2
    pyinit = (
        shlex.split(args.pyinit)
        if args.pyinit
        else [args.python, str(REPO / "dist" / "pyinit.pyz")]
    )
    become_subreaper()

    def log(text: str) -> None:
        print(f"soak: {text}", file=sys.stderr, flush=True)

    tini = args.tini if args.tini and os.access(args.tini, os.X_OK) else None
    inits = {"pyinit": [*pyinit, "--grace", str(GRACE_S), "--"]}
    if tini:
        inits["tini"] = [tini, "--"]
    stages = args.stages.split(",")
    procs = Processes()
    results: list[Result] = []
    workdir = Path(tempfile.mkdtemp(prefix="pyinit-soak-"))
    s = Settings(
        pyinit,
        args.python,
        workdir,
        args.orphans,
        args.signals,
        args.chaos_seconds,
        args.reloads,
        args.seed,
        log,
    )
    try:
        run_all(s, procs, inits, stages, results)
    finally:
        procs.stop_all()
        if args.keep:
            log(f"kept {workdir} (pyinit's stderr of each stage, the TOML files)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    table, all_met = render(results)
    print(
        f"pyinit: {shlex.join(pyinit)}; seed {args.seed}; "
        f"{os.cpu_count()} CPUs; kernel {os.uname().release}\n"
    )
    print(table)
    return 0 if all_met else 1


def run_all(
    s: Settings,
    procs: Processes,
    inits: dict[str, list[str]],
    stages: list[str],
    results: list[Result],
) -> None:
    """Each selected stage in order; the pyinit of stage d lives on into stage e."""
    left_running: Pid1 | None = None
    for stage in stages:
        began = time.monotonic()
        s.log(f"stage {stage} ...")
        if stage in ("orphans", "signals"):
            runs = [stage_orphans] if stage == "orphans" else [stage_signals, stage_signals_unread]
            for run in runs:
                for name, prefix in inits.items():
                    results.append(run(s, procs, name, prefix))
        elif stage == "chaos":
            results.append(stage_chaos(s, procs))
        elif stage == "reloads":
            result, left_running = stage_reloads(s, procs)
            results.append(result)
        elif stage == "shutdown":
            results.append(stage_shutdown(s, procs, left_running))
            left_running = None
        s.log(f"stage {stage} done in {time.monotonic() - began:.1f} s")
    if left_running is not None:
        left_running.stop()


if __name__ == "__main__":
    sys.exit(main())
