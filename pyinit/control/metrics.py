"""`GET /metrics` on the health port: the supervisor's state in Prometheus text format.

Why a Collector read at scrape time, and not Gauges kept up to date: the
supervisor already holds every fact a scrape needs (worker states, restart
counts, last exits), so mirroring them into metric objects on every event
would put bookkeeping on PID 1's hot path for a page nobody may ever ask for.
`PyinitCollector.collect()` turns one `status()` snapshot into metric
families when Prometheus asks, and costs nothing in between. The few facts
that exist nowhere else (orphans reaped, signals forwarded, reloads) are
plain ints the supervisor counts where it handles those events.

Why the text is written here and not by `prometheus_client`: the format
(exposition format 0.0.4) is a few lines of escaping, and importing that
library into PID 1 pulled in http.server, urllib, ssl and wsgiref: +10 MiB
of RSS (16 -> 26 MiB in services mode) and a 50-80 ms stall of the loop on
the first scrape, for one page of text. The tests read the page with
prometheus_client's own parser, so it stays what Prometheus reads.

What a scrape shows (labels in braces):

    pyinit_worker_state{service,worker,state}            1 for the current state
    pyinit_worker_ready{service,worker}                  1 running and ready, else 0
    pyinit_worker_restarts_total{service,worker}         restarts by the restart policy
    pyinit_worker_starts_total{service,worker}           every start (ctl restart, reload too)
    pyinit_worker_last_exit_code{service,worker}         its shell code (128+N: signal N)
    pyinit_worker_last_exit_timestamp_seconds{...}       Unix time of the last exit
    pyinit_worker_uptime_seconds{service,worker}         while it has a process
    pyinit_worker_resident_memory_bytes{service,worker}  RSS of its process
    pyinit_worker_cpu_seconds_total{service,worker}      user + system CPU of its process
    pyinit_service_next_run_timestamp_seconds{service}   periodic jobs: Unix time of the next run
    pyinit_ready                                         1 when `pyinit ctl ready` would say ready
    pyinit_orphans_reaped_total                          zombies that were no worker of ours
    pyinit_signals_forwarded_total{signal}               signals pyinit passed on to its services
    pyinit_reloads_total{result="ok"|"failed"}           SIGHUP and `ctl reload`
    process_*                                            pyinit's own RSS, CPU, fds, start time
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

#: The text format every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: pid -> (RSS bytes, CPU seconds), or Nones: control.usage.process_usage
Usage = Callable[[int], tuple[int | None, float | None]]
#: When this module was imported: pyinit's start, near enough (services mode imports it at start).
_STARTED = time.time()


class Family:
    """One metric family: its samples, and the text Prometheus reads for them."""

    def __init__(self, name: str, kind: str, text: str, labels: tuple[str, ...] = ()) -> None:
        # A counter's samples end in _total, and so do its HELP and TYPE lines
        # in format 0.0.4 (what prometheus_client writes too).
        self.name = f"{name}_total" if kind == "counter" else name
        self.kind, self.text, self.labels = kind, text, labels
        self.samples: list[tuple[tuple[str, ...], float]] = []

    def add(self, values: list[str] | tuple[str, ...], value: float) -> None:
        self.samples.append((tuple(values), float(value)))

    def lines(self) -> Iterator[str]:
        help_text = self.text.replace("\\", "\\\\").replace("\n", "\\n")
        yield f"# HELP {self.name} {help_text}"
        yield f"# TYPE {self.name} {self.kind}"
        for values, value in self.samples:
            pairs = zip(self.labels, values, strict=True)
            labels = ",".join(f'{key}="{_label_value(text)}"' for key, text in pairs)
            yield f"{self.name}{{{labels}}} {value!r}" if labels else f"{self.name} {value!r}"


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsSource(Protocol):
    """What a scrape reads (supervise.verbs.Controls); every call comes from the loop.

    `status()` rows are those of `pyinit ctl status --json` (control/protocol.py).
    """

    def status(self) -> list[dict[str, object]]: ...
    def is_ready(self) -> bool: ...
    def counters(self) -> Mapping[str, int]: ...
    def forwarded_signals(self) -> Mapping[str, int]: ...


def _number(row: Mapping[str, object], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def render(source: MetricsSource, usage: Usage | None = None) -> bytes:
    """The /metrics page, from one snapshot of the supervisor's state."""
    families = [*_worker_families(source.status(), usage), *_pyinit_families(source, usage)]
    text = "\n".join(line for family in families for line in family.lines())
    return (text + "\n").encode()


def _pyinit_families(source: MetricsSource, usage: Usage | None) -> Iterator[Family]:
    ready = Family("pyinit_ready", "gauge", "1 when every service is ready, else 0")
    ready.add([], 1.0 if source.is_ready() else 0.0)
    yield ready
    counts = source.counters()
    orphans = Family(
        "pyinit_orphans_reaped", "counter", "Zombies pyinit reaped that were not its own workers"
    )
    orphans.add([], counts.get("orphans_reaped", 0))
    yield orphans
    forwarded = Family(
        "pyinit_signals_forwarded",
        "counter",
        "Signals pyinit received and passed on to its services' process groups",
        ("signal",),
    )
    for name, count in sorted(source.forwarded_signals().items()):
        forwarded.add([name], count)
    yield forwarded
    reloads = Family(
        "pyinit_reloads", "counter", "Reloads (SIGHUP, ctl reload) by result", ("result",)
    )
    reloads.add(["ok"], counts.get("reloads_ok", 0))
    reloads.add(["failed"], counts.get("reloads_failed", 0))
    yield reloads
    yield from _own_process(usage)


def _own_process(usage: Usage | None) -> Iterator[Family]:
    """pyinit's own process_* metrics, named as every Prometheus client library names them."""
    memory, seconds = usage(os.getpid()) if usage is not None else (None, None)
    if memory is not None:
        rss = Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
        rss.add([], memory)
        yield rss
    if seconds is not None:
        cpu = Family("process_cpu_seconds", "counter", "Total user and system CPU time in seconds.")
        cpu.add([], round(seconds, 3))
        yield cpu
    try:
        open_fds = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own fd
    except OSError:
        pass
    else:
        fds = Family("process_open_fds", "gauge", "Number of open file descriptors.")
        fds.add([], open_fds)
        yield fds
    limit = Family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
    limit.add([], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    yield limit
    started = Family(
        "process_start_time_seconds", "gauge", "Start time of the process since unix epoch."
    )
    started.add([], round(_STARTED, 3))
    yield started


def _worker_families(rows: list[dict[str, object]], usage: Usage | None) -> list[Family]:
    labels = ("service", "worker")

    def gauge(name: str, text: str, extra: tuple[str, ...] = ()) -> Family:
        return Family(name, "gauge", text, (*labels, *extra))

    state = gauge("pyinit_worker_state", "1 for the worker's current state", ("state",))
    ready = gauge("pyinit_worker_ready", "1 when the worker runs and is ready, else 0")
    restarts = Family("pyinit_worker_restarts", "counter", "Restarts by the restart policy", labels)
    starts = Family(
        "pyinit_worker_starts", "counter", "Starts of the worker, whatever the reason", labels
    )
    exit_code = gauge(
        "pyinit_worker_last_exit_code", "Shell code of the last exit (128+N: killed by N)"
    )
    exit_time = gauge(
        "pyinit_worker_last_exit_timestamp_seconds", "Unix time of the worker's last exit"
    )
    uptime = gauge("pyinit_worker_uptime_seconds", "Seconds since the worker's process started")
    rss = gauge("pyinit_worker_resident_memory_bytes", "Resident memory of its process")
    cpu = Family(
        "pyinit_worker_cpu_seconds", "counter",
        "User and system CPU time of the worker's process", labels,
    )  # fmt: skip
    next_run = Family(
        "pyinit_service_next_run_timestamp_seconds",
        "gauge",
        "Periodic jobs: Unix time of the next run",
        ("service",),
    )
    scheduled: set[str] = set()
    for row in rows:
        key = [str(row.get("service")), str(row.get("worker"))]
        pid = row.get("pid")
        if usage is not None and isinstance(pid, int) and pid > 0:
            memory, seconds = usage(pid)
            # utime + stime in clock ticks: 3 decimals say it all, without float dust.
            cpu_time = None if seconds is None else round(seconds, 3)
            row = {**row, "rss": memory, "cpu": cpu_time}
        state.add([*key, str(row.get("state"))], 1.0)
        ready.add(key, 1.0 if row.get("ready") is True else 0.0)
        restarts.add(key, _number(row, "restarts") or 0.0)
        starts.add(key, _number(row, "starts") or 0.0)
        for family, field in (
            (exit_code, "last_exit_code"),
            (exit_time, "last_exit_time"),
            (uptime, "uptime"),
            (rss, "rss"),
            (cpu, "cpu"),
        ):
            value = _number(row, field)
            if value is not None:
                family.add(key, value)
        when = _number(row, "next_run")
        if when is not None and key[0] not in scheduled:
            scheduled.add(key[0])
            next_run.add([key[0]], when)
    return [state, ready, restarts, starts, exit_code, exit_time, uptime, rss, cpu, next_run]
