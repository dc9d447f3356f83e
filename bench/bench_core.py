#!/usr/bin/python3
"""Side-by-side benchmark of pyinit against tini and dumb-init.

Run from anywhere (paths are relative to the repository root):

    /usr/bin/python3 bench/bench_core.py            # full run, ~1-2 minutes
    /usr/bin/python3 bench/bench_core.py --quick    # smoke run, ~20 s
    /usr/bin/python3 bench/bench_core.py --json     # raw numbers as JSON

Five stages, each run for every init in one process so they share the
machine's noise (see bench/README.md for what each number means):

1. start-up: `INIT -- true` against bare `true` and `python3 -c pass`,
   interleaved in shuffled rounds;
2. idle: `INIT -- sleep 1000` left alone; context switches (wakeups) and
   CPU time of the init over the window;
3. memory of those idle inits (RSS, PSS, USS from smaps_rollup) against an
   idle bare `python3 -c "import signal; signal.pause()"`;
4. signal-forwarding latency: kill(init, SIGUSR1) until a sigwaitinfo()
   child reads its clock, against kill(child) directly;
5. zombie storm: 10,000 orphans reparented to the init running as PID 1 of
   its own PID namespace; time from the end of the fork loop to no zombie.

The bench installs nothing and uses only the standard library. Children and
pyinit run on /usr/bin/python3 (Debian's, what a container has) because the
`python3` on PATH here is a pyenv shim that adds ~50 ms to every start.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import random
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
CHILDREN = Path(__file__).resolve().parent / "children"
DEFAULT_PYTHON = "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# Targets (the numbers the brief sets for pyinit; issue 8 for the ratios).
STARTUP_MAX_RATIO = 1.3  # pyinit start-up p50 / `python3 -I -S -c pass` p50
RSS_MAX_RATIO = 1.3  # pyinit idle RSS / bare idle python RSS
SIGNAL_P50_MAX_US = 100.0
SIGNAL_P99_MAX_US = 1000.0
SIGNAL_MAX_RATIO = 1.5  # pyinit forwarding p50 / direct kill p50, same run
ORPHAN_CPU_MAX_US = 70.0  # pyinit's CPU (utime+stime) per orphan of the storm
ZOMBIE_LAG_MAX_MS = 100.0  # "~0": no backlog left once the storm stops

#: Columns, in order. `py-init` is children/mini_init.py, a 40-line Python
#: init: what the per-event paths cost in Python with nothing else to do.
#: `pyinit-before` is another build (--before), measured in the same run.
INIT_NAMES = ("tini", "dumb-init", "py-init", "pyinit-before", "pyinit")

T = TypeVar("T")
Json = dict[str, Any]


class BenchError(RuntimeError):
    """A measurement could not be taken (the stage reports it and goes on)."""


# --------------------------------------------------------------------------
# Small helpers: waiting, statistics, /proc
# --------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T], timeout: float, message: str, interval: float = 0.005
) -> T:
    """Poll predicate until it returns something truthy; BenchError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g}s: {message}")
        time.sleep(interval)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    data = sorted(values)
    if not data:
        raise ValueError("no samples")
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def read_text(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace")


def stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (after the parenthesised comm, which may hold spaces)."""
    return read_text(f"/proc/{pid}/stat").rpartition(")")[2].split()


def scan_proc() -> dict[int, tuple[str, int]]:
    """pid -> (state, ppid) for every process visible in /proc.

    This kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN is
    off), so finding children means reading every /proc/PID/stat.
    """
    table: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
        table[int(entry.name)] = (fields[0], int(fields[1]))
    return table


def children_of(pid: int, table: dict[int, tuple[str, int]] | None = None) -> list[int]:
    table = scan_proc() if table is None else table
    return [child for child, (_, ppid) in table.items() if ppid == pid]


def pid_tree(root: int) -> list[int]:
    """root and all its descendants, parents first."""
    table = scan_proc()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children_of(pid, table))
    return tree


def kill_tree(root: int) -> None:
    """SIGKILL root and every descendant (an init's child would outlive a killed init)."""
    for pid in pid_tree(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def comm(pid: int) -> str:
    try:
        return read_text(f"/proc/{pid}/comm").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def has_child_named(pid: int, name: str) -> bool:
    return any(comm(child) == name for child in children_of(pid))


def cmdline(pid: int) -> list[str]:
    try:
        return read_text(f"/proc/{pid}/cmdline").split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads)."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches summed over every thread.

    /proc/PID/status counts only the thread it names, so a helper thread
    that wakes up would be missed without the per-task sum.
    """
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = read_text(f"/proc/{pid}/task/{tid}/status")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def memory_kib(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) in KiB from smaps_rollup."""
    values: dict[str, int] = {}
    for line in read_text(f"/proc/{pid}/smaps_rollup").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            values[parts[0][:-1]] = int(parts[1])
    return {
        "rss": values["Rss"],
        "pss": values["Pss"],
        "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


#: Where the benchmark's interpreter lives: first on PATH for what the bench
#: runs, so the pyz's launcher (`exec python3 ...`) finds it, not a pyenv shim.
INTERPRETER_DIR = "/usr/bin"


def clean_env() -> dict[str, str]:
    """The bench's environment without PYINIT_* (a stray setting would skew pyinit),
    with the benchmark's interpreter first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYINIT_")}
    env["PATH"] = os.pathsep.join([INTERPRETER_DIR, env.get("PATH", "/usr/bin:/bin")])
    return env


class RecordReader:
    """Reads fixed 8-byte records or text lines from a pipe, each with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self.poller.poll(remaining * 1000):
            raise BenchError("no output from the child in time")
        chunk = os.read(self.fd, 65536)
        if not chunk:
            raise BenchError("the child closed its output (did it die?)")
        self.buffer += chunk

    def record(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 8:
            self._fill(deadline)
        value = int(struct.unpack("<Q", self.buffer[:8])[0])
        self.buffer = self.buffer[8:]
        return value

    def line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            self._fill(deadline)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def line_nowait(self) -> str | None:
        """A complete line if one is already available, else None (never blocks)."""
        while b"\n" not in self.buffer and self.poller.poll(0):
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise BenchError("the child closed its output (did it die?)")
            self.buffer += chunk
        if b"\n" not in self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


# --------------------------------------------------------------------------
# The inits under test
# --------------------------------------------------------------------------


@dataclass
class Init:
    """One init: how to run it normally, and as PID 1 of a fresh PID namespace."""

    name: str
    prefix: list[str]  # prepended to the command: INIT [flags] --
    pid1_prefix: list[str]  # same, for use as PID 1 (tini without -s)
    version: str = ""
    path: str = ""


@dataclass
class Processes:
    """Every process tree the bench started, so a failure or ^C leaves nothing behind."""

    roots: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("env", clean_env())
        proc = subprocess.Popen(argv, **kwargs)
        self.roots.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            kill_tree(proc.pid)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if proc.stdout:
            proc.stdout.close()
        if proc in self.roots:
            self.roots.remove(proc)
        self.sweep_orphans()

    def sweep_orphans(self) -> None:
        """Kill and reap what a dead init left behind.

        The bench is a child subreaper (see become_subreaper), so the
        children of an init that died are reparented to us: our children
        that are not a tracked Popen are such orphans. Each is waited for
        by pid, never with waitpid(-1), which would steal Popen's statuses.
        """
        tracked = {proc.pid for proc in self.roots}
        for orphan in children_of(os.getpid()):
            if orphan in tracked:
                continue
            kill_tree(orphan)
            try:
                os.waitpid(orphan, 0)
            except ChildProcessError:
                pass

    def stop_all(self) -> None:
        for proc in list(self.roots):
            self.stop(proc)
        self.sweep_orphans()


def become_subreaper() -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans of our inits come to us, not to the host's PID 1."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def resolve_shim(path: str, name: str) -> str:
    """Follow a pyenv shim to the real executable, whose start-up we want to time.

    A shim is a bash script that runs `pyenv exec`: ~50 ms per start.
    """
    try:
        with open(path, "rb") as handle:
            is_script = handle.read(2) == b"#!"
    except OSError:
        return path
    if not is_script or "shims" not in Path(path).parts:
        return path
    pyenv = shutil.which("pyenv")
    if pyenv:
        found = subprocess.run([pyenv, "which", name], capture_output=True, text=True, timeout=20)
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip()
    return path


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv + ["--version"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    lines = [ln.strip() for ln in (done.stdout + "\n" + done.stderr).splitlines() if ln.strip()]
    return lines[0] if lines else f"unknown (exit {done.returncode})"


def check_runs(argv: list[str]) -> str | None:
    """None if `argv -- true` exits 0, else why not (a broken init gets no column)."""
    try:
        done = subprocess.run(
            argv + ["--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return f"`-- true` exited {done.returncode}: {tail}"
    return None


def find_inits(args: argparse.Namespace, notes: list[str]) -> dict[str, Init]:
    """The inits that exist and run here; a note for each one skipped."""
    wanted = set(args.inits)
    inits: dict[str, Init] = {}

    if "tini" in wanted:
        tini = (
            args.tini
            or shutil.which("tini")
            or ("/usr/bin/tini" if os.access("/usr/bin/tini", os.X_OK) else None)
        )
        if tini:
            inits["tini"] = Init("tini", [tini, "-s", "--"], [tini, "--"], path=tini)
        else:
            notes.append("tini: not found (/usr/bin/tini, PATH); column skipped.")

    if "dumb-init" in wanted:
        found = args.dumb_init or shutil.which("dumb-init")
        if found:
            real = resolve_shim(found, "dumb-init")
            if real != found:
                notes.append(
                    f"dumb-init: PATH has a pyenv shim ({found}); timing the real binary {real}."
                )
            inits["dumb-init"] = Init("dumb-init", [real, "--"], [real, "--"], path=real)
        else:
            notes.append("dumb-init: not on PATH; column skipped.")

    if "py-init" in wanted:
        mini = [args.python, "-I", "-S", str(CHILDREN / "mini_init.py"), "--"]
        inits["py-init"] = Init("py-init", mini, mini, path=shlex.join(mini[:-1]))

    if "pyinit-before" in wanted and args.before:
        before = [str(Path(args.before).resolve())]
        inits["pyinit-before"] = Init(
            "pyinit-before", before + ["--"], before + ["--"], path=before[0]
        )

    if "pyinit" in wanted:
        argv = (
            shlex.split(args.pyinit)
            if args.pyinit
            else [str(REPO / "dist" / "pyinit.pyz")]  # run as a program: its sh launcher
        )
        missing = [a for a in argv if a.endswith(".pyz") and not Path(a).exists()]
        exe = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])
        if missing:
            notes.append(
                f"pyinit: {missing[0]} not found (build it: python3 build_zipapp.py); "
                "column skipped."
            )
        elif not exe:
            notes.append(f"pyinit: {argv[0]} not found; column skipped.")
        else:
            real = resolve_shim(exe, Path(exe).name)
            if real != exe:
                notes.append(f"pyinit: {exe} is a pyenv shim; timing the real {real}.")
            argv = [real] + argv[1:]
            inits["pyinit"] = Init("pyinit", argv + ["--"], argv + ["--"], path=shlex.join(argv))

    for name, init in list(inits.items()):
        base = init.prefix[:-1]
        init.version = version_of(base[:1] if not name.startswith("pyinit") else base)
        if name == "py-init":
            init.version = "40-line Python init"
        problem = check_runs(base)
        if problem:
            notes.append(f"{name}: does not run ({problem}); column skipped.")
            del inits[name]
    return inits


# --------------------------------------------------------------------------
# Stage 1: start-up
# --------------------------------------------------------------------------


def spawn_and_wait(argv: list[str], env: dict[str, str], devnull: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the whole tree, wait status) of one run.

    posix_spawn (vfork underneath) + wait4 keeps the bench's own share of the
    wall time far below a millisecond; wait4's rusage includes every
    descendant the command waited for.
    """
    actions = [
        (os.POSIX_SPAWN_DUP2, devnull, 0),
        (os.POSIX_SPAWN_DUP2, devnull, 1),
        (os.POSIX_SPAWN_DUP2, devnull, 2),
    ]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, status


def bench_startup(
    inits: dict[str, Init], python: str, runs: int, log: Callable[[str], None]
) -> Json:
    true = shutil.which("true") or "/bin/true"
    # The floor for any zipapp: running a .pyz makes Python import runpy and
    # importlib.util before the app's first line, which `-c pass` never does.
    empty_pyz = os.path.join(tempfile.mkdtemp(prefix="bench-empty-pyz-"), "empty.pyz")
    with zipfile.ZipFile(empty_pyz, "w") as archive:
        archive.writestr("__main__.py", "")
    commands = {
        "true": [true],
        "python3 -c pass": [python, "-c", "pass"],
        "python3 -I -S -c pass": [python, "-I", "-S", "-c", "pass"],
        "python3 empty.pyz": [python, empty_pyz],
    }
    for name, init in inits.items():
        commands[name] = init.prefix + ["true"]
    env = clean_env()
    devnull = os.open(os.devnull, os.O_RDWR)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    failures: dict[str, int] = {name: 0 for name in commands}
    rng = random.Random(1)
    order = list(commands)
    log(f"start-up: {runs} interleaved rounds of {', '.join(order)}")
    try:
        for argv in commands.values():  # warm the page cache and any pyz extraction
            spawn_and_wait(argv, env, devnull)
        gc.disable()
        for _ in range(runs):
            rng.shuffle(order)
            for name in order:
                wall, cpu, status = spawn_and_wait(commands[name], env, devnull)
                if status != 0:
                    failures[name] += 1
                walls[name].append(wall * 1000)
                cpus[name].append(cpu * 1000)
    finally:
        gc.enable()
        os.close(devnull)
    result = {}
    for name in commands:
        result[name] = {
            "argv": commands[name],
            "wall_ms_p50": percentile(walls[name], 50),
            "wall_ms_p90": percentile(walls[name], 90),
            "wall_ms_min": min(walls[name]),
            "cpu_ms_p50": percentile(cpus[name], 50),
            "failed_runs": failures[name],
        }
    return result


# --------------------------------------------------------------------------
# Stage 1b: launch -> the command's exec, as PID 1, on the kernel's clock
# --------------------------------------------------------------------------


def bench_launch(
    inits: dict[str, Init], python: str, runs: int, log: Callable[[str], None]
) -> Json:
    """Exec of the init -> exec of its command, each init PID 1 of a new PID namespace.

    Both times are the kernel's (proc connector: exec_clock.py), so neither
    the bench nor the child adds its own start-up. An init that is a script
    (the pyz's sh launcher) counts from its first exec. The baseline is the
    same clock on `python3 -I -S -c pass` under the same unshare: its exec
    to its exit. Rounds are interleaved in shuffled order, as for start-up.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from exec_clock import ExecClock, self_test

    clock = ExecClock.open()
    if clock is None or not self_test(clock):
        raise BenchError("no proc connector events here (needs root, host network namespace)")
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    floor = "python3 -I -S -c pass"
    commands = {floor: unshare + [python, "-I", "-S", "-c", "pass"]}
    for name, init in inits.items():
        commands[name] = unshare + init.pid1_prefix + ["true"]
    env = clean_env()
    devnull = os.open(os.devnull, os.O_RDWR)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    rng = random.Random(3)
    order = list(commands)
    log(f"launch -> child exec as PID 1: {runs} interleaved rounds of {', '.join(order)}")
    try:
        for _ in range(runs):
            rng.shuffle(order)
            for name in order:
                clock.forget()
                argv = commands[name]
                pid = os.posix_spawnp(argv[0], argv, env, file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, devnull, 1),
                    (os.POSIX_SPAWN_DUP2, devnull, 2),
                ])  # fmt: skip
                clock.watch(pid)
                os.waitpid(pid, 0)
                clock.drain()
                init = clock.first_child(pid)  # unshare --fork's child: PID 1
                if init is None or not clock.execs.get(init):
                    continue
                if name == floor:
                    end = clock.exits.get(init)
                else:
                    command = clock.first_child(init)
                    end = clock.execs[command][0] if command and clock.execs.get(command) else None
                if end is not None:
                    samples[name].append((end - clock.execs[init][0]) / 1e6)
    finally:
        os.close(devnull)
        clock.close()
    return {
        name: {"samples": len(v), "ms_p50": percentile(v, 50), "ms_p90": percentile(v, 90)}
        if v
        else {"error": "no sample (events lost?)"}
        for name, v in samples.items()
    }


# --------------------------------------------------------------------------
# Stages 2 and 3: idle wakeups, CPU and memory
# --------------------------------------------------------------------------


def settle(pid: int, quiet: float, timeout: float) -> bool:
    """Wait (up to timeout) until pid's counters stop moving for `quiet` seconds.

    This is a warm-up before a measurement, not synchronisation: an init that
    never goes quiet is measured anyway, which is the point.
    """
    deadline = time.monotonic() + timeout
    last = (context_switches(pid), cpu_seconds(pid))
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = (context_switches(pid), cpu_seconds(pid))
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return True
    return False


def bench_idle(
    inits: dict[str, Init], python: str, window: float, procs: Processes, log: Callable[[str], None]
) -> Json:
    """All inits idle side by side over the same window, with a bare python for scale."""
    started: dict[str, subprocess.Popen[bytes]] = {}
    baseline = "python3 pause()"
    log(f"idle: {', '.join(inits)} and a bare {baseline}, {window:g}s window")
    try:
        for name, init in inits.items():
            started[name] = procs.start(
                init.prefix + ["sleep", "1000"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        started[baseline] = procs.start(
            [python, "-c", "import signal; signal.pause()"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, proc in started.items():
            if name != baseline:
                wait_until(
                    functools.partial(has_child_named, proc.pid, "sleep"),
                    20,
                    f"{name} did not start `sleep 1000`",
                )
        quiet = {name: settle(proc.pid, 0.3, 5.0) for name, proc in started.items()}
        before = {
            name: (context_switches(p.pid), cpu_seconds(p.pid)) for name, p in started.items()
        }
        t0 = time.monotonic()
        time.sleep(window)  # the measurement window itself
        elapsed = time.monotonic() - t0
        result = {}
        for name, proc in started.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} exited during the idle window (status {proc.returncode})")
            switches = context_switches(proc.pid) - before[name][0]
            cpu = cpu_seconds(proc.pid) - before[name][1]
            mem = memory_kib(proc.pid)
            result[name] = {
                "window_s": elapsed,
                "context_switches": switches,
                "wakeups_per_s": switches / elapsed,
                "cpu_s": cpu,
                "cpu_s_total_since_start": cpu_seconds(proc.pid),
                "rss_kib": mem["rss"],
                "pss_kib": mem["pss"],
                "uss_kib": mem["uss"],
                "threads": len(os.listdir(f"/proc/{proc.pid}/task")),
                "went_quiet_before_window": quiet[name],
            }
        return result
    finally:
        for proc in started.values():
            procs.stop(proc)


# --------------------------------------------------------------------------
# Stage 4: signal-forwarding latency
# --------------------------------------------------------------------------


def start_reporter(
    prefix: list[str], python: str, procs: Processes
) -> tuple[subprocess.Popen[bytes], RecordReader]:
    """Start the sigwaitinfo() reporter (under an init unless prefix is empty) and wait for it."""
    stderr = tempfile.TemporaryFile()
    proc = procs.start(
        prefix + [python, str(CHILDREN / "sigwait_reporter.py")],
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    assert proc.stdout is not None
    reader = RecordReader(proc.stdout.fileno())
    try:
        reader.record(timeout=20)  # the reporter's pid: SIGUSR1 is blocked from now on
    except BenchError as error:
        procs.stop(proc)
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-300:]
        raise BenchError(f"{error}; stderr: {tail}") from None
    finally:
        stderr.close()
    return proc, reader


def bench_signals(
    inits: dict[str, Init], python: str, samples: int, procs: Processes, log: Callable[[str], None]
) -> Json:
    """kill(target, SIGUSR1) -> the reporter's clock read, in shuffled interleaved rounds.

    "direct" signals a reporter that is our own child; every other target is
    an init that must forward the signal. All reporters idle side by side
    and take turns, so they share the machine's noise. One signal is in
    flight at a time: the next is sent only after the previous was received.
    """
    log(f"signal forwarding: {samples} SIGUSR1 samples each, direct and through {', '.join(inits)}")
    result: dict[str, Json] = {}
    running: dict[str, tuple[subprocess.Popen[bytes], RecordReader]] = {}
    try:
        for name, prefix in [("direct", [])] + [(n, i.prefix) for n, i in inits.items()]:
            try:
                running[name] = start_reporter(prefix, python, procs)
            except BenchError as error:
                result[name] = {"error": str(error)}
                log(f"  {name}: {error}")
        latencies: dict[str, list[float]] = {name: [] for name in running}
        warmup = max(10, samples // 20)
        order = list(running)
        rng = random.Random(2)
        gc.disable()
        for i in range(warmup + samples):
            rng.shuffle(order)
            for name in order:
                proc, reader = running[name]
                sent = time.monotonic_ns()
                os.kill(proc.pid, signal.SIGUSR1)
                try:
                    received = reader.record(timeout=5)
                except BenchError as error:
                    result[name] = {"error": f"sample {i}: {error}"}
                    log(f"  {name}: sample {i}: {error}")
                    order.remove(name)
                    procs.stop(proc)
                    del running[name]
                    break
                if i >= warmup:
                    latencies[name].append((received - sent) / 1000)
        for name in running:
            values = latencies[name]
            result[name] = {
                "samples": len(values),
                "p50_us": percentile(values, 50),
                "p90_us": percentile(values, 90),
                "p99_us": percentile(values, 99),
                "max_us": max(values),
            }
        return result
    finally:
        gc.enable()
        for proc, _ in running.values():
            procs.stop(proc)


# --------------------------------------------------------------------------
# Stage 5: zombie storm, each init as PID 1 of its own PID namespace
# --------------------------------------------------------------------------


def zombie_storm(init: Init, python: str, count: int, procs: Processes) -> Json:
    """Time from the storm's last fork to the init having no zombie child.

    Zombies are counted on the host side: processes whose parent is the
    init's host pid, other than the storm program itself. Each scan reads
    every /proc/PID/stat, so the time we report is an upper bound, late by
    at most one scan plus one poll interval.
    """
    stderr = tempfile.TemporaryFile()
    argv = (
        ["unshare", "--pid", "--fork", "--mount-proc"]
        + init.pid1_prefix
        + [python, str(CHILDREN / "zombie_storm.py"), str(count)]
    )
    proc = procs.start(argv, stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert proc.stdout is not None
        reader = RecordReader(proc.stdout.fileno())
        try:
            reader.line(timeout=30)  # "start PID": the storm program runs
        except BenchError as error:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-300:]
            raise BenchError(f"{error}; stderr: {tail}") from None
        init_pid = wait_until(
            lambda: (children_of(proc.pid) or [0])[0], 10, "no init under unshare"
        )
        storm = wait_until(
            lambda: [
                c for c in children_of(init_pid) if any("zombie_storm" in a for a in cmdline(c))
            ],
            10,
            "storm program not found under the init",
        )[0]
        cpu_before = cpu_seconds(init_pid)
        loop_end = loop_start = None
        pending = pending_at_end = peak = 0
        zero_at = None
        deadline = time.monotonic() + 60 + count * 0.005
        while zero_at is None:
            if time.monotonic() > deadline:
                raise BenchError(f"{pending} orphans still unreaped at the deadline")
            just_ended = False
            if loop_end is None:
                line = reader.line_nowait()
                if line:
                    _, end, begin = line.split()
                    loop_end, loop_start, just_ended = int(end), int(begin), True
                    deadline = time.monotonic() + 30
            table = scan_proc()
            scanned = time.monotonic_ns()
            pending = sum(
                1 for pid, (_, ppid) in table.items() if ppid == init_pid and pid != storm
            )
            peak = max(peak, pending)
            if just_ended:
                pending_at_end = pending
            if loop_end is not None and pending == 0:
                zero_at = scanned
            else:
                time.sleep(0.001)
        cpu = cpu_seconds(init_pid) - cpu_before
        assert loop_end is not None and loop_start is not None
        return {
            "orphans": count,
            "fork_loop_s": (loop_end - loop_start) / 1e9,
            "pending_at_loop_end": pending_at_end,
            "peak_pending": peak,
            "lag_ms": max(0.0, (zero_at - loop_end) / 1e6),
            "init_cpu_s": cpu,
        }
    finally:
        procs.stop(proc)
        stderr.close()


def bench_zombies(
    inits: dict[str, Init], python: str, count: int, procs: Processes, log: Callable[[str], None]
) -> Json:
    log(
        f"zombie storm: {count} orphans per init, "
        "each init PID 1 under unshare --pid --fork --mount-proc"
    )
    result: dict[str, Json] = {}
    for name, init in inits.items():
        try:
            result[name] = zombie_storm(init, python, count, procs)
            done = result[name]
            log(f"  {name}: lag {done['lag_ms']:.1f} ms, loop {done['fork_loop_s']:.1f} s")
        except (BenchError, OSError) as error:
            result[name] = {"error": str(error)}
            log(f"  {name}: {error}")
    return result


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    baseline: str
    values: dict[str, float | str | None]
    fmt: str = "{:.2f}"
    target: str = ""
    verdict: str = ""


def ratio(a: float | str | None, b: float | str | None) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return "–"
    if b == 0:
        return "–" if a == 0 else "∞"
    return f"{a / b:.2f}×"


def verdict(ok: bool | None, detail: str = "", stage: Json | None = None) -> str:
    if ok is None:
        if stage and "error" in stage.get("pyinit", {}):
            return "FAIL (error, see notes)"
        return "n/a"
    word = "PASS" if ok else "FAIL"
    return f"{word} ({detail})" if detail else word


def get(stage: Json, name: str, key: str) -> float | None:
    entry = stage.get(name) or {}
    value = entry.get(key)
    return value if isinstance(value, (int, float)) else None


def build_rows(inits: dict[str, Init], results: Json) -> list[Row]:
    rows: list[Row] = [Row("version", "–", {n: i.version for n, i in inits.items()}, fmt="{}")]
    names = list(inits)

    start = results.get("startup")
    if start:
        py = start["python3 -c pass"]
        bare = start["true"]
        floor = start["python3 empty.pyz"]
        isolated = start["python3 -I -S -c pass"]
        pyinit_p50 = get(start, "pyinit", "wall_ms_p50")
        floor_p50 = isolated["wall_ms_p50"]
        ok = None if pyinit_p50 is None else pyinit_p50 <= STARTUP_MAX_RATIO * floor_p50
        detail = (
            ""
            if pyinit_p50 is None
            else f"{pyinit_p50 / floor_p50:.2f}× python -I -S,"
            f" {pyinit_p50 / py['wall_ms_p50']:.2f}× python,"
            f" {pyinit_p50 / floor['wall_ms_p50']:.2f}× empty .pyz"
        )
        for key, label in (("wall_ms_p50", "p50"), ("wall_ms_p90", "p90")):
            rows.append(
                Row(
                    f"start-up `INIT -- true` wall {label}, ms",
                    f"python3 -c pass {py[key]:.2f}; -I -S {isolated[key]:.2f};"
                    f" empty .pyz {floor[key]:.2f};"
                    f" true {bare[key]:.2f}",
                    {n: get(start, n, key) for n in names},
                )
            )
        rows[-2].target = f"≤ {STARTUP_MAX_RATIO}× python3 -I -S -c pass (p50)"
        rows[-2].verdict = verdict(ok, detail)
        rows.append(
            Row(
                "start-up p50 / python3 -I -S -c pass p50",
                f"python3 -c pass {py['wall_ms_p50'] / floor_p50:.2f}×",
                {
                    n: (None if (v := get(start, n, "wall_ms_p50")) is None else v / floor_p50)
                    for n in names
                },
                fmt="{:.2f}×",
            )
        )
        rows.append(
            Row(
                "start-up CPU (user+sys, whole tree) p50, ms",
                f"python3 -c pass {py['cpu_ms_p50']:.2f}; -I -S {isolated['cpu_ms_p50']:.2f};"
                f" true {bare['cpu_ms_p50']:.2f}",
                {n: get(start, n, "cpu_ms_p50") for n in names},
            )
        )

    launch = results.get("launch")
    if launch:
        base = launch.get("python3 -I -S -c pass", {}).get("ms_p50")
        value = get(launch, "pyinit", "ms_p50")
        ok = None if value is None or not base else value <= STARTUP_MAX_RATIO * base
        rows.append(
            Row(
                "launch → child exec as PID 1 (kernel clock) p50, ms",
                "–" if base is None else f"python3 -I -S -c pass exec→exit {base:.2f}",
                {n: get(launch, n, "ms_p50") for n in names},
                target=f"≤ {STARTUP_MAX_RATIO}× python3 -I -S -c pass",
                verdict=verdict(ok, "" if not ok and not value else f"{value / base:.2f}×")
                if base
                else "n/a",
            )
        )

    idle = results.get("idle")
    if idle:
        base = idle.get("python3 pause()", {})
        window = next((v["window_s"] for v in idle.values() if "window_s" in v), 0)
        wake = get(idle, "pyinit", "wakeups_per_s")
        rows.append(
            Row(
                f"idle wakeups/s (ctx switches over {window:.0f} s)",
                f"python3 pause() {base.get('wakeups_per_s', 0):.2f}",
                {n: get(idle, n, "wakeups_per_s") for n in names},
                target="0",
                verdict=verdict(None if wake is None else wake == 0),
            )
        )
        rows.append(
            Row(
                f"idle CPU over {window:.0f} s, s",
                f"python3 pause() {base.get('cpu_s', 0):.2f}",
                {n: get(idle, n, "cpu_s") for n in names},
            )
        )
        rss = get(idle, "pyinit", "rss_kib")
        base_rss = base.get("rss_kib")
        before_rss = get(idle, "pyinit-before", "rss_kib")
        ok = None if rss is None or not base_rss else rss <= RSS_MAX_RATIO * base_rss
        if ok and before_rss is not None:
            ok = rss <= before_rss  # issue 8: not above the build it replaces
        for key, label in (("rss_kib", "RSS"), ("pss_kib", "PSS"), ("uss_kib", "USS (private)")):
            rows.append(
                Row(
                    f"idle {label}, MiB",
                    f"python3 pause() {base.get(key, 0) / 1024:.2f}",
                    {
                        n: (None if (kib := get(idle, n, key)) is None else kib / 1024)
                        for n in names
                    },
                )
            )
            if key == "rss_kib":
                rows[-1].target = f"≤ {RSS_MAX_RATIO}× bare python" + (
                    ", ≤ pyinit-before" if before_rss is not None else ""
                )
                rows[-1].verdict = verdict(
                    ok, "" if ok is None else f"{rss / base_rss:.2f}× python"
                )

    sig = results.get("signals")
    if sig:
        direct = sig.get("direct", {})
        for key, label, limit in (
            ("p50_us", "p50", SIGNAL_P50_MAX_US),
            ("p99_us", "p99", SIGNAL_P99_MAX_US),
        ):
            value = get(sig, "pyinit", key)
            base = f"direct kill {direct[key]:.0f}" if key in direct else "–"
            rows.append(
                Row(
                    f"SIGUSR1 forwarding latency {label}, µs",
                    base,
                    {n: get(sig, n, key) for n in names},
                    fmt="{:.0f}",
                    target=f"< {limit:.0f} µs",
                    verdict=verdict(None if value is None else value < limit, stage=sig),
                )
            )
        if "p50_us" in direct:
            d50 = direct["p50_us"]
            ratio_p50 = {
                n: (None if (v := get(sig, n, "p50_us")) is None else v / d50) for n in names
            }
            value = ratio_p50.get("pyinit")
            rows.append(
                Row(
                    "forwarding p50 / direct kill p50",
                    f"direct kill {d50:.1f} µs",
                    ratio_p50,
                    fmt="{:.2f}×",
                    target=f"≤ {SIGNAL_MAX_RATIO}×",
                    verdict=verdict(
                        None if value is None else value <= SIGNAL_MAX_RATIO, stage=sig
                    ),
                )
            )
            rows.append(
                Row(
                    "forwarding p50 added over direct kill, / direct kill p50",
                    "(p50 − direct) / direct",
                    {n: (None if v is None else v - 1) for n, v in ratio_p50.items()},
                    fmt="{:.2f}×",
                )
            )

    zom = results.get("zombies")
    if zom:
        lag = get(zom, "pyinit", "lag_ms")
        count = next((v["orphans"] for v in zom.values() if "orphans" in v), 0)
        rows.append(
            Row(
                f"zombie storm ({count} orphans): last fork → no zombie, ms",
                "–",
                {n: get(zom, n, "lag_ms") for n in names},
                fmt="{:.1f}",
                target=f"~0 (≤ {ZOMBIE_LAG_MAX_MS:.0f} ms)",
                verdict=verdict(None if lag is None else lag <= ZOMBIE_LAG_MAX_MS, stage=zom),
            )
        )
        rows.append(
            Row(
                "zombie storm: unreaped at loop end / peak",
                "–",
                {
                    n: (
                        f"{zom[n]['pending_at_loop_end']} / {zom[n]['peak_pending']}"
                        if "peak_pending" in zom.get(n, {})
                        else None
                    )
                    for n in names
                },
                fmt="{}",
            )
        )
        rows.append(
            Row(
                "zombie storm: fork loop, s",
                "–",
                {n: get(zom, n, "fork_loop_s") for n in names},
                fmt="{:.2f}",
            )
        )
        rows.append(
            Row(
                "zombie storm: init CPU, s",
                "–",
                {n: get(zom, n, "init_cpu_s") for n in names},
                fmt="{:.2f}",
            )
        )
        per = {
            n: (None if (cpu := get(zom, n, "init_cpu_s")) is None else cpu / count * 1e6)
            for n in names
        }
        value = per.get("pyinit")
        rows.append(
            Row(
                "zombie storm: init CPU per orphan (utime+stime / orphans), µs",
                "–",
                per,
                fmt="{:.1f}",
                target=f"≤ {ORPHAN_CPU_MAX_US:.0f} µs",
                verdict=verdict(None if value is None else value <= ORPHAN_CPU_MAX_US, stage=zom),
            )
        )
    return rows


def render_markdown(rows: list[Row], inits: dict[str, Init], notes: list[str]) -> str:
    columns = [n for n in INIT_NAMES if n in inits]
    ratio_columns = [d for d in ("tini", "dumb-init") if d in inits and "pyinit" in inits]
    header = (
        ["metric", "baseline"]
        + columns
        + [f"pyinit/{d}" for d in ratio_columns]
        + ["target", "result"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.metric, row.baseline]
        for name in columns:
            value = row.values.get(name)
            cells.append("–" if value is None else row.fmt.format(value))
        for d in ratio_columns:
            cells.append(
                ratio(row.values.get("pyinit"), row.values.get(d)) if row.fmt != "{}" else "–"
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

STAGES = ("startup", "launch", "idle", "signals", "zombies")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark pyinit against tini and dumb-init (start-up, idle, memory, "
        "signal latency, zombie storm). Needs root for the zombie stage (unshare)."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20 start-ups, 2 s idle, 100 signals, 1,000 orphans",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the raw results as JSON instead of Markdown"
    )
    parser.add_argument(
        "--pyinit",
        metavar="CMD",
        help="how to run pyinit, split like a shell (default: dist/pyinit.pyz as a program)",
    )
    parser.add_argument(
        "--python",
        default=DEFAULT_PYTHON,
        help="interpreter for the baselines, the children and the default pyinit "
        f"(default {DEFAULT_PYTHON})",
    )
    parser.add_argument(
        "--tini", metavar="PATH", help="tini binary (default: PATH, then /usr/bin/tini)"
    )
    parser.add_argument(
        "--dumb-init", metavar="PATH", help="dumb-init binary (default: PATH, pyenv shims resolved)"
    )
    parser.add_argument(
        "--inits", default=",".join(INIT_NAMES), help="comma-separated subset of %(default)s"
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of %(default)s"
    )
    parser.add_argument(
        "--runs", type=int, help="start-up runs per command (default 100, quick 20)"
    )
    parser.add_argument("--idle-seconds", type=float, help="idle window (default 10, quick 2)")
    parser.add_argument(
        "--signals", type=int, help="signal samples per init (default 500, quick 100)"
    )
    parser.add_argument("--zombies", type=int, help="orphans per storm (default 10000, quick 1000)")
    parser.add_argument(
        "--before",
        metavar="PYZ",
        help="another pyinit build (e.g. main's dist/pyinit.pyz) for a `pyinit-before` column",
    )
    parser.add_argument(
        "--launches", type=int, help="launch-stage rounds per command (default 50, quick 10)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a pyinit target fails")
    args = parser.parse_args(argv)
    args.inits = [n.strip() for n in args.inits.split(",") if n.strip()]
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for value, known, what in ((args.inits, INIT_NAMES, "init"), (args.stages, STAGES, "stage")):
        unknown = set(value) - set(known)
        if unknown:
            parser.error(f"unknown {what}: {', '.join(sorted(unknown))}")
    quick = args.quick
    args.runs = args.runs or (20 if quick else 100)
    args.launches = args.launches or (10 if quick else 50)
    args.idle_seconds = args.idle_seconds or (2.0 if quick else 10.0)
    args.signals = args.signals or (100 if quick else 500)
    args.zombies = args.zombies or (1000 if quick else 10000)
    return args


def progress_log() -> Callable[[str], None]:
    """A logger for the bench's own progress: seconds since start, on stderr."""
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    return log


def python_missing(python: str) -> bool:
    """True (and says so) when the --python interpreter cannot run."""
    if os.access(python, os.X_OK):
        return False
    print(f"bench: error: interpreter {python} not found (--python)", file=sys.stderr)
    return True


def machine_note(what: str, python: str) -> str:
    """The table's first note: which interpreter ran what, on what machine."""
    return (
        f"{what} {python} ({version_of([python])}); "
        f"bench itself: {sys.executable} ({platform.python_version()}); "
        f"{os.cpu_count()} CPUs, kernel {platform.release()}"
    )


def run_stages(
    stages: dict[str, Callable[[], Json]],
    selected: list[str],
    results: dict[str, Json],
    notes: list[str],
    log: Callable[[str], None],
    needs_root: str | tuple[str, ...] = (),
) -> None:
    """Run the selected stages in order; a failing stage becomes a note.

    `needs_root` names the stages that need root and unshare(1) (the storm).
    """
    for stage in selected:
        rooted = (needs_root,) if isinstance(needs_root, str) else needs_root
        if stage in rooted and (os.geteuid() != 0 or not shutil.which("unshare")):
            notes.append(f"{stage} stage skipped: needs root and unshare(1).")
            continue
        try:
            results[stage] = stages[stage]()
        except (BenchError, OSError) as error:
            notes.append(f"{stage} stage failed: {error}")
            log(f"{stage} failed: {error}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = progress_log()
    global INTERPRETER_DIR
    INTERPRETER_DIR = os.path.dirname(args.python)
    if python_missing(args.python):
        return 2
    notes: list[str] = []
    inits = find_inits(args, notes)
    notes.insert(0, machine_note("interpreter for baselines, children and pyinit:", args.python))
    for name, init in inits.items():
        log(f"{name}: {init.version} [{init.path}]")
    if not inits:
        log("no init available: only the baselines will be measured")

    procs = Processes()
    if not become_subreaper():
        notes.append("could not become a child subreaper: a crashed init may leave orphans behind.")
    results: dict[str, Json] = {}
    stages: dict[str, Callable[[], Json]] = {
        "startup": lambda: bench_startup(inits, args.python, args.runs, log),
        "launch": lambda: bench_launch(inits, args.python, args.launches, log),
        "idle": lambda: bench_idle(inits, args.python, args.idle_seconds, procs, log),
        "signals": lambda: bench_signals(inits, args.python, args.signals, procs, log),
        "zombies": lambda: bench_zombies(inits, args.python, args.zombies, procs, log),
    }
    try:
        run_stages(stages, args.stages, results, notes, log, needs_root=("zombies", "launch"))
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        procs.stop_all()

    for stage in ("signals", "zombies"):
        for name, entry in results.get(stage, {}).items():
            if "error" in entry:
                notes.append(f"{stage}/{name}: {entry['error']}")
    if "idle" in results:
        notes.append(
            "PSS splits shared pages among every process mapping them, including the other "
            "inits and the bare python idling at the same time; USS counts private pages only."
        )
        noisy = [n for n, v in results["idle"].items() if not v.get("went_quiet_before_window")]
        if noisy:
            notes.append(f"never quiet for 0.3 s before the idle window: {', '.join(noisy)}")
    if "zombies" in results:
        notes.append(
            "zombie lag is an upper bound (one /proc scan + 1 ms poll late at worst); "
            "tini and pyinit run as PID 1 without -s there."
        )
    log("done")

    rows = build_rows(inits, results)
    failed = any(r.verdict.startswith("FAIL") for r in rows)
    if args.json:
        print(
            json.dumps(
                {
                    "python": {"path": args.python, "version": version_of([args.python])},
                    "inits": {
                        n: {"argv": i.prefix, "pid1_argv": i.pid1_prefix, "version": i.version}
                        for n, i in inits.items()
                    },
                    "settings": {
                        "runs": args.runs,
                        "idle_seconds": args.idle_seconds,
                        "signal_samples": args.signals,
                        "zombies": args.zombies,
                    },
                    "results": results,
                    "targets": {
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
        print(render_markdown(rows, inits, notes))
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
