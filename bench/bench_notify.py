#!/usr/bin/python3
"""sd_notify benchmark: how fast pyinit tells its service manager what happens.

Run from anywhere (paths are relative to the repository root):

    /usr/bin/python3 bench/bench_notify.py            # full run, ~30 s
    /usr/bin/python3 bench/bench_notify.py --quick    # smoke run, ~10 s
    /usr/bin/python3 bench/bench_notify.py --json     # raw numbers as JSON

The bench plays systemd / `podman --sdnotify=container`: it binds a Unix
datagram socket, hands it to pyinit as NOTIFY_SOCKET, and stamps every
datagram that arrives. Three stages (bench/README.md says what each number
means):

1. ready: a `ready = "notify"` service sends READY=1 to pyinit's socket;
   time until pyinit's READY=1 reaches the bench. A fresh pyinit per run
   (the start-up case), and in the same pyinit after a SIGHUP that restarts
   the service (the warm case);
2. reload: 50 `sleep` services with `reload = "none"`; SIGHUP -> RELOADING=1
   and -> READY=1, with the same file, and with a file that scales one
   service up, then down, by one worker;
3. start: the same 50 services from pyinit's exec to its READY=1.

It installs nothing and uses only the standard library. pyinit and the
children run on /usr/bin/python3 (what a container has); `python3` on PATH
here is a pyenv shim that adds ~50 ms to every start.
"""

from __future__ import annotations

import argparse
import json
import os
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
    become_subreaper,
    clean_env,
    machine_note,
    percentile,
    progress_log,
    python_missing,
    read_text,
    run_stages,
    version_of,
    wait_until,
)
from bench_services import ProcEvents, children_named, stale_pyz, wait_exit  # noqa: E402

Json = dict[str, Any]
Log = Callable[[str], None]

SERVICES = 50  # the reload and start stages' config size
# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS); Python 3.11's socket module lacks the name.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("=qq")


# --------------------------------------------------------------------------
# The fake service manager
# --------------------------------------------------------------------------


@dataclass
class Message:
    """One datagram from pyinit: its fields, and when it arrived (monotonic ns)."""

    fields: dict[str, str]
    arrived_ns: int  # kernel receive stamp, converted to CLOCK_MONOTONIC
    woke_ns: int  # when the bench had read it (arrived_ns + the bench's wakeup)


class Manager:
    """The NOTIFY_SOCKET pyinit talks to, as systemd or podman would bind it.

    Each datagram carries the kernel's receive time (SO_TIMESTAMPNS,
    CLOCK_REALTIME), which we move onto CLOCK_MONOTONIC with an offset read
    at that moment. So "arrived" does not include how late the bench itself
    woke up; `woke_ns` keeps that too, for the JSON.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.stamped = True
        except OSError:
            self.stamped = False
        self.sock.bind(str(path))

    def next(self, timeout: float) -> Message:
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            raise BenchError(f"no datagram from pyinit within {timeout:g} s")
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(TIMESPEC.size))
        woke = time.monotonic_ns()
        offset = time.time_ns() - time.monotonic_ns()
        arrived = woke
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack(payload[: TIMESPEC.size])
                arrived = min(woke, sec * 1_000_000_000 + nsec - offset)
        fields = {}
        for line in data.decode("utf-8", "replace").split("\n"):
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value
        return Message(fields, arrived, woke)

    def wait_for(self, key: str, timeout: float, seen: list[Message] | None = None) -> Message:
        """The next datagram with `key`=1 (others are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(deadline - time.monotonic())
            if seen is not None:
                seen.append(message)
            if message.fields.get(key) == "1":
                return message

    def drain(self) -> list[Message]:
        """Whatever is queued now (never blocks)."""
        out = []
        while select.select([self.sock], [], [], 0)[0]:
            out.append(self.next(0))
        return out

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# pyinit, configs, one run
# --------------------------------------------------------------------------


@dataclass
class Pyinit:
    """How to run pyinit, and the private sockets each run gets."""

    base: list[str]
    version: str
    tmp: Path
    events: ProcEvents | None

    def launch(
        self, config: Path, manager: Manager, procs: Processes, name: str
    ) -> tuple[subprocess.Popen[bytes], int, str]:
        """Start pyinit on `config`; (process, exec time ns, how that time was taken)."""
        env = clean_env()
        env.pop("NOTIFY_SOCKET", None)
        env.update(
            NOTIFY_SOCKET=str(manager.path),
            PYINIT_CTL_SOCKET=str(self.tmp / "ctl" / "ctl.sock"),
            PYINIT_CONFIG=str(config),
        )
        log_path = self.tmp / f"{name}.log"
        output = open(log_path, "ab")  # noqa: SIM115 (Popen keeps a dup)
        try:
            spawned = time.monotonic_ns()
            proc = procs.start(self.base, env=env, stdout=output, stderr=output)
        finally:
            output.close()
        return proc, spawned, str(log_path)

    def exec_ns(self, proc: subprocess.Popen[bytes], spawned: int) -> tuple[int, str]:
        """pyinit's exec time from the proc connector, else the time just before Popen."""
        if self.events is not None:
            self.events.drain()
            if proc.pid in self.events.execs:
                return self.events.execs[proc.pid], "exec (proc connector)"
        return spawned, "spawn (before Popen)"

    def stop(self, proc: subprocess.Popen[bytes], procs: Processes) -> None:
        """SIGTERM and wait, so pyinit removes its sockets; then kill what is left."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            wait_exit(proc.pid, 10)
        procs.stop(proc)


def notify_config(path: Path, report: Path, python: str) -> Path:
    path.write_text(
        "[services.notifier]\n"
        f"cmd = {json.dumps([python, str(CHILDREN / 'notify_ready.py'), str(report)])}\n"
        'ready = "notify"\n'
        'reload = "restart"\n'
    )
    return path


def sleep_config(path: Path, first_workers: int = 1) -> Path:
    """SERVICES `sleep` services with reload = "none"; s00 runs `first_workers` workers.

    Written to a temporary name and renamed, as an editor or the kubelet would,
    so pyinit never reads half a file.
    """
    blocks = []
    for index in range(SERVICES):
        blocks.append(
            f"[services.s{index:02d}]\n"
            'cmd = ["sleep", "100000"]\n'
            'reload = "none"\n'
            f"workers = {first_workers if index == 0 else 1}\n"
        )
    staging = path.with_suffix(".new")
    staging.write_text("\n".join(blocks))
    os.rename(staging, path)
    return path


def log_tail(path: str) -> str:
    try:
        return " | ".join(read_text(path).strip().splitlines()[-3:])
    except OSError:
        return ""


def stats(values: list[float]) -> Json:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


def ms(ns: int) -> float:
    return ns / 1e6


# --------------------------------------------------------------------------
# Stage 1: a service's READY=1 -> pyinit's READY=1
# --------------------------------------------------------------------------


def read_report(report: Path, not_pid: int, timeout: float) -> tuple[int, int]:
    """(pid, ns) that notify_ready.py wrote, from a process other than `not_pid`."""

    def fresh() -> tuple[int, int] | None:
        try:
            pid, ns = read_text(str(report)).split()
        except (OSError, ValueError):
            return None
        return (int(pid), int(ns)) if int(pid) != not_pid else None

    return wait_until(fresh, timeout, f"no READY report in {report}")


def bench_ready(pyinit: Pyinit, python: str, runs: int, procs: Processes, log: Log) -> Json:
    """Each run: a fresh pyinit with one notify service (cold), then one SIGHUP (warm).

    Cold: the service's first READY=1 -> pyinit's first READY=1. Warm: the
    service has `reload = "restart"`, so the SIGHUP restarts it and pyinit
    sends RELOADING=1, then READY=1 only once the new process has sent its
    own READY=1; same measurement, in a pyinit that has done it before.
    """
    log(f"ready: {runs} fresh pyinits, one notify service each, + one reload each")
    tmp = pyinit.tmp
    manager = Manager(tmp / "ready-upstream.sock")
    report = tmp / "ready-report.txt"
    config = notify_config(tmp / "ready.toml", report, python)
    cold: list[float] = []
    warm: list[float] = []
    exec_to_ready: list[float] = []
    exec_to_service: list[float] = []
    wake: list[float] = []
    samples: list[Json] = []
    timing = ""
    try:
        for run in range(runs):
            report.unlink(missing_ok=True)
            manager.drain()
            proc, spawned, log_path = pyinit.launch(config, manager, procs, "ready")
            try:
                try:
                    up = manager.wait_for("READY", 20)
                except BenchError as error:
                    raise BenchError(f"{error}; pyinit output: {log_tail(log_path)}") from None
                pid, sent = read_report(report, 0, 5)
                started, timing = pyinit.exec_ns(proc, spawned)
                cold.append(ms(up.arrived_ns - sent))
                exec_to_ready.append(ms(up.arrived_ns - started))
                exec_to_service.append(ms(sent - started))
                wake.append((up.woke_ns - up.arrived_ns) / 1e3)

                manager.drain()
                proc.send_signal(signal.SIGHUP)
                seen: list[Message] = []
                manager.wait_for("RELOADING", 5, seen)
                up2 = manager.wait_for("READY", 10, seen)
                pid2, sent2 = read_report(report, pid, 5)
                warm.append(ms(up2.arrived_ns - sent2))
                samples.append(
                    {
                        "cold_ms": cold[-1],
                        "warm_ms": warm[-1],
                        "exec_to_ready_ms": exec_to_ready[-1],
                        "exec_to_service_ready_ms": exec_to_service[-1],
                    }
                )
            finally:
                pyinit.stop(proc, procs)
            if run == 0:
                log(f"  first run: cold {cold[0]:.3f} ms, warm {warm[0]:.3f} ms")
    finally:
        manager.close()
    result = {
        "cold_ms": stats(cold),
        "warm_ms": stats(warm),
        "exec_to_ready_ms": stats(exec_to_ready),
        "exec_to_service_ready_ms": stats(exec_to_service),
        "bench_wakeup_us": stats(wake),
        "start_timing": timing,
        "samples": samples,
    }
    log(
        f"  READY=1 -> upstream READY=1: cold p50 {result['cold_ms']['p50']:.3f} ms, "
        f"warm p50 {result['warm_ms']['p50']:.3f} ms"
    )
    return result


# --------------------------------------------------------------------------
# Stage 2: SIGHUP -> RELOADING=1 -> READY=1, 50 services
# --------------------------------------------------------------------------


def reload_once(proc: subprocess.Popen[bytes], manager: Manager, ready_timeout: float) -> Json:
    """One SIGHUP; its RELOADING=1 and READY=1 times (ready_ms None if none came)."""
    manager.drain()
    sent = time.monotonic_ns()
    proc.send_signal(signal.SIGHUP)
    seen: list[Message] = []
    reloading = manager.wait_for("RELOADING", 5, seen)
    sample: Json = {"reloading_ms": ms(reloading.arrived_ns - sent), "ready_ms": None}
    usec = reloading.fields.get("MONOTONIC_USEC", "")
    if usec.isdigit():  # pyinit's own clock when it built the message
        sample["pyinit_stamp_ms"] = ms(int(usec) * 1000 - sent)
    try:
        ready = manager.wait_for("READY", ready_timeout, seen)
        sample["ready_ms"] = ms(ready.arrived_ns - sent)
    except BenchError:
        pass
    sample["status"] = [m.fields["STATUS"] for m in seen if "STATUS" in m.fields]
    return sample


def sleeps_of(pid: int) -> int:
    return len(children_named(pid, "sleep"))


def bench_reload(
    pyinit: Pyinit, reloads: int, procs: Processes, log: Log, notes: list[str]
) -> Json:
    """One pyinit, 50 services; a cold reload, then `reloads` each of: same file,
    s00 +1 worker, s00 -1 worker. Between reloads the bench waits until pyinit
    runs the expected number of `sleep`s, so no reload overlaps the last one's
    work."""
    log(f"reload: {SERVICES} services, {reloads} SIGHUPs each: same file, scale up, scale down")
    tmp = pyinit.tmp
    manager = Manager(tmp / "reload-upstream.sock")
    config = sleep_config(tmp / "reload.toml")
    proc, _, log_path = pyinit.launch(config, manager, procs, "reload")
    result: Json = {}
    try:
        try:
            manager.wait_for("READY", 30)
        except BenchError as error:
            raise BenchError(f"{error}; pyinit output: {log_tail(log_path)}") from None
        wait_until(lambda: sleeps_of(proc.pid) == SERVICES, 10, f"{SERVICES} sleeps running")
        result["first"] = reload_once(proc, manager, 5)
        workers = 1
        series: dict[str, list[Json]] = {"same": [], "up": [], "down": []}
        for kind in series:
            for _ in range(reloads):
                if kind != "same":
                    workers += 1 if kind == "up" else -1
                    sleep_config(config, workers)
                sample = reload_once(proc, manager, 2)
                series[kind].append(sample)
                expected = SERVICES - 1 + workers
                wait_until(
                    lambda n=expected: sleeps_of(proc.pid) == n,
                    10,
                    f"{expected} sleeps after a reload ({kind})",
                )
                if (
                    sample["ready_ms"] is None
                    and sum(s["ready_ms"] is None for s in series[kind]) >= 2
                ):
                    break  # a reload that never says READY=1 costs 2 s; two show it
        for kind, samples in series.items():
            missing = sum(s["ready_ms"] is None for s in samples)
            result[kind] = {
                "reloads": len(samples),
                "reloading_ms": stats([s["reloading_ms"] for s in samples]),
                "ready_ms": stats([s["ready_ms"] for s in samples if s["ready_ms"] is not None]),
                "pyinit_stamp_ms": stats(
                    [s["pyinit_stamp_ms"] for s in samples if "pyinit_stamp_ms" in s]
                ),
                "ready_missing": missing,
                "samples": samples,
            }
            if missing:
                statuses = [text for s in samples for text in s["status"]]
                notes.append(
                    f"reload ({kind}): no READY=1 within 2 s after RELOADING=1 in {missing} of "
                    f"{len(samples)} reloads (last STATUS=: {statuses[-1] if statuses else 'none'})"
                    "; a service manager waiting for it would still think pyinit is reloading."
                )
            p50 = result[kind]["ready_ms"].get("p50")
            log(
                f"  {kind}: RELOADING=1 p50 {result[kind]['reloading_ms']['p50']:.2f} ms, "
                f"READY=1 p50 {'never' if p50 is None else f'{p50:.2f} ms'}"
            )
    finally:
        pyinit.stop(proc, procs)
        manager.close()
    return result


# --------------------------------------------------------------------------
# Stage 3: exec -> READY=1 with 50 services
# --------------------------------------------------------------------------


def bench_start(pyinit: Pyinit, runs: int, procs: Processes, log: Log) -> Json:
    """Fresh pyinits on the 50-service file: exec -> READY=1 upstream, and
    (with the proc connector) where the time goes: exec -> first service exec
    (pyinit's own start-up), first -> last service exec (spawning 50)."""
    log(f"start: {runs} fresh pyinits with {SERVICES} services")
    tmp = pyinit.tmp
    manager = Manager(tmp / "start-upstream.sock")
    config = sleep_config(tmp / "start.toml")
    total: list[float] = []
    own: list[float] = []
    spawning: list[float] = []
    timing = ""
    try:
        for _ in range(runs):
            manager.drain()
            proc, spawned, log_path = pyinit.launch(config, manager, procs, "start")
            if pyinit.events is not None:
                pyinit.events.watch(proc.pid)
            try:
                try:
                    up = manager.wait_for("READY", 30)
                except BenchError as error:
                    raise BenchError(f"{error}; pyinit output: {log_tail(log_path)}") from None
                started, timing = pyinit.exec_ns(proc, spawned)
                total.append(ms(up.arrived_ns - started))
                if pyinit.events is not None:
                    execs = pyinit.events.exec_times(proc.pid)
                    if len(execs) >= SERVICES:
                        own.append(ms(execs[0] - started))
                        spawning.append(ms(execs[SERVICES - 1] - execs[0]))
            finally:
                pyinit.stop(proc, procs)
    finally:
        manager.close()
    result = {
        "exec_to_ready_ms": stats(total),
        "exec_to_first_service_ms": stats(own),
        "first_to_last_service_ms": stats(spawning),
        "start_timing": timing,
    }
    log(f"  exec -> READY=1 p50 {result['exec_to_ready_ms']['p50']:.1f} ms")
    return result


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def render_markdown(results: Json, notes: list[str]) -> str:
    rows: list[tuple[str, Json, str, str]] = []  # metric, stats, format, note
    ready = results.get("ready")
    if ready:
        n = ready["cold_ms"]["n"]
        rows += [
            (
                f"READY=1 → upstream READY=1, fresh pyinit ({n}×), ms",
                ready["cold_ms"],
                "{:.3f}",
                "the service's first READY=1; one pyinit per sample",
            ),
            (
                f"READY=1 → upstream READY=1, after a reload ({n}×), ms",
                ready["warm_ms"],
                "{:.3f}",
                "same pyinits: SIGHUP restarted the service (reload = restart)",
            ),
            (
                "exec → service sends READY=1 (1 notify service), ms",
                ready["exec_to_service_ready_ms"],
                "{:.1f}",
                "pyinit start-up + the service's Python start-up",
            ),
            (
                "exec → upstream READY=1 (1 notify service), ms",
                ready["exec_to_ready_ms"],
                "{:.1f}",
                ready["start_timing"],
            ),
        ]
    reload = results.get("reload")
    if reload:
        first = reload["first"]
        rows.append(
            (
                "reload, first SIGHUP → READY=1 (1×), ms",
                {"p50": first["ready_ms"], "p99": None},
                "{:.2f}",
                f"cold: lazy imports; RELOADING=1 at {first['reloading_ms']:.2f} ms",
            )
        )
        labels = {
            "same": "same file",
            "up": "s00 +1 worker",
            "down": "s00 −1 worker",
        }
        for kind, label in labels.items():
            entry = reload.get(kind)
            if not entry:
                continue
            count = entry["reloads"]
            rows.append(
                (
                    f"reload, {label} ({count}×): SIGHUP → RELOADING=1, ms",
                    entry["reloading_ms"],
                    "{:.2f}",
                    f"{SERVICES} services, reload = none",
                )
            )
            missing = entry["ready_missing"]
            rows.append(
                (
                    f"reload, {label} ({count}×): SIGHUP → READY=1, ms",
                    entry["ready_ms"],
                    "{:.2f}",
                    f"READY=1 missing in {missing} of {count} (bug, see notes)"
                    if missing
                    else "READY=1 after every RELOADING=1",
                )
            )
    start = results.get("start")
    if start:
        n = start["exec_to_ready_ms"]["n"]
        rows.append(
            (
                f"start, {SERVICES} services ({n}×): exec → upstream READY=1, ms",
                start["exec_to_ready_ms"],
                "{:.1f}",
                start["start_timing"],
            )
        )
        if start["exec_to_first_service_ms"]["n"]:
            rows += [
                (
                    "start: exec → first service's exec, ms",
                    start["exec_to_first_service_ms"],
                    "{:.1f}",
                    "pyinit's own start-up (proc connector)",
                ),
                (
                    f"start: first → {SERVICES}th service's exec, ms",
                    start["first_to_last_service_ms"],
                    "{:.1f}",
                    "spawning the services",
                ),
            ]
    lines = ["| metric | p50 | p99 | notes |", "|---|---|---|---|"]
    for metric, entry, fmt, note in rows:
        cells = [metric]
        for key in ("p50", "p99"):
            value = entry.get(key)
            cells.append("–" if value is None else fmt.format(value))
        cells.append(note or "–")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if notes:
        lines.append("")
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

STAGES = ("ready", "reload", "start")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark pyinit's sd_notify: a service's READY=1 to pyinit's READY=1, "
        f"SIGHUP to RELOADING=1/READY=1 with {SERVICES} services, and start-up to READY=1."
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 10 ready runs, 10 reloads, 3 starts"
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
        help=f"interpreter for pyinit and the notify service (default {DEFAULT_PYTHON})",
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of %(default)s"
    )
    parser.add_argument("--runs", type=int, help="ready-stage runs (default 30, quick 10)")
    parser.add_argument("--reloads", type=int, help="reloads per kind (default 20, quick 10)")
    parser.add_argument("--starts", type=int, help="50-service starts (default 10, quick 3)")
    args = parser.parse_args(argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage: {', '.join(sorted(unknown))}")
    args.runs = args.runs or (10 if args.quick else 30)
    args.reloads = args.reloads or (10 if args.quick else 20)
    args.starts = args.starts or (3 if args.quick else 10)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = progress_log()
    if python_missing(args.python):
        return 2
    base = shlex.split(args.pyinit) if args.pyinit else [args.python, str(REPO / "dist/pyinit.pyz")]
    missing = [a for a in base if a.endswith(".pyz") and not Path(a).exists()]
    if missing:
        print(f"bench: error: {missing[0]} not found (python3 build_zipapp.py)", file=sys.stderr)
        return 2
    notes = [machine_note("pyinit and the notify service run on", args.python)]
    stale = stale_pyz(base)
    if stale:
        notes.append(stale)
    events = ProcEvents.open()
    if events is None:
        notes.append(
            "proc connector unavailable: times start just before Popen (not at exec), and the "
            "start stage cannot split pyinit's start-up from spawning."
        )
    else:
        events.watch(os.getpid())
    tmp = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    pyinit = Pyinit(base, version_of(base), tmp, events)
    log(f"pyinit: {pyinit.version} [{shlex.join(base)}]")
    procs = Processes()
    if not become_subreaper():
        notes.append("could not become a child subreaper: a crashed pyinit may leave orphans.")
    results: Json = {}
    stages: dict[str, Callable[[], Json]] = {
        "ready": lambda: bench_ready(pyinit, args.python, args.runs, procs, log),
        "reload": lambda: bench_reload(pyinit, args.reloads, procs, log, notes),
        "start": lambda: bench_start(pyinit, args.starts, procs, log),
    }
    try:
        run_stages(stages, args.stages, results, notes, log)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        procs.stop_all()
        if events:
            events.close()
        shutil.rmtree(tmp, ignore_errors=True)

    if "ready" in results:
        wake = results["ready"]["bench_wakeup_us"].get("p50")
        notes.append(
            "arrival times are the kernel's receive stamps on the bench's socket "
            "(SO_TIMESTAMPNS, moved onto CLOCK_MONOTONIC)"
            + (f"; the bench itself read them {wake:.0f} µs later (p50)" if wake else "")
            + ". The service reads time.monotonic_ns() just before its sendto()."
        )
    if "reload" in results:
        notes.append(
            "reload: from just before kill(SIGHUP); between reloads the bench waits until "
            "pyinit runs the expected number of `sleep`s. p99 of 10-30 samples is close to "
            "the maximum."
        )
    log("done")
    if args.json:
        print(
            json.dumps(
                {
                    "python": {"path": args.python, "version": version_of([args.python])},
                    "pyinit": {"argv": base, "version": pyinit.version},
                    "settings": {
                        "runs": args.runs,
                        "reloads": args.reloads,
                        "starts": args.starts,
                        "services": SERVICES,
                        "proc_connector": events is not None,
                    },
                    "results": results,
                    "notes": notes,
                },
                indent=2,
            )
        )
    else:
        print(render_markdown(results, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
