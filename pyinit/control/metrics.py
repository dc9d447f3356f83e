"""`GET /metrics` on the health port: the supervisor's state in Prometheus text format.

Why a Collector read at scrape time, and not Gauges kept up to date: the
supervisor already holds every fact a scrape needs (worker states, restart
counts, last exits), so mirroring them into metric objects on every event
would put bookkeeping on PID 1's hot path for a page nobody may ever ask for.
`PyinitCollector.collect()` turns one `status()` snapshot into metric
families when Prometheus asks, and costs nothing in between. The few facts
that exist nowhere else (orphans reaped, signals forwarded, reloads) are
plain ints the supervisor counts where it handles those events.

Why this module is imported lazily (by the health port, on the first
/metrics request): `prometheus_client` pulls in http.server, urllib, ssl
and wsgiref; on Python 3.11 that is about 40 ms and 14 MiB of RSS, which a
pyinit that is never scraped must not pay, and the single-command path never
sees it at all.

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

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus reads
#: pid -> (RSS bytes, CPU seconds), or Nones: control.server.process_usage
Usage = Callable[[int], tuple[int | None, float | None]]


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


class PyinitCollector:
    """A prometheus_client custom collector over a MetricsSource (see the module docstring)."""

    def __init__(self, source: MetricsSource, usage: Usage | None = None) -> None:
        self.source = source
        self.usage = usage

    def collect(self) -> Iterator[Metric]:
        yield from self._worker_metrics(self.source.status())
        source = self.source
        ready = GaugeMetricFamily("pyinit_ready", "1 when every service is ready, else 0")
        ready.add_metric([], 1.0 if source.is_ready() else 0.0)
        yield ready
        counts = source.counters()
        orphans = CounterMetricFamily(
            "pyinit_orphans_reaped", "Zombies pyinit reaped that were not its own workers"
        )
        orphans.add_metric([], counts.get("orphans_reaped", 0))
        yield orphans
        forwarded = CounterMetricFamily(
            "pyinit_signals_forwarded",
            "Signals pyinit received and passed on to its services' process groups",
            labels=["signal"],
        )
        for name, count in sorted(source.forwarded_signals().items()):
            forwarded.add_metric([name], count)
        yield forwarded
        reloads = CounterMetricFamily(
            "pyinit_reloads", "Reloads (SIGHUP, ctl reload) by result", labels=["result"]
        )
        reloads.add_metric(["ok"], counts.get("reloads_ok", 0))
        reloads.add_metric(["failed"], counts.get("reloads_failed", 0))
        yield reloads

    def _worker_metrics(self, rows: list[dict[str, object]]) -> Iterator[Metric]:
        labels = ["service", "worker"]

        def gauge(name: str, text: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=[*labels, *extra])

        state = gauge("pyinit_worker_state", "1 for the worker's current state", ("state",))
        ready = gauge("pyinit_worker_ready", "1 when the worker runs and is ready, else 0")
        restarts = CounterMetricFamily(
            "pyinit_worker_restarts", "Restarts by the restart policy", labels=labels
        )
        starts = CounterMetricFamily(
            "pyinit_worker_starts", "Starts of the worker, whatever the reason", labels=labels
        )
        exit_code = gauge(
            "pyinit_worker_last_exit_code", "Shell code of the last exit (128+N: killed by N)"
        )
        exit_time = gauge(
            "pyinit_worker_last_exit_timestamp_seconds", "Unix time of the worker's last exit"
        )
        uptime = gauge("pyinit_worker_uptime_seconds", "Seconds since the worker's process started")
        rss = gauge("pyinit_worker_resident_memory_bytes", "Resident memory of its process")
        cpu = CounterMetricFamily(
            "pyinit_worker_cpu_seconds", "User and system CPU time of the worker's process",
            labels=labels,
        )  # fmt: skip
        next_run = GaugeMetricFamily(
            "pyinit_service_next_run_timestamp_seconds",
            "Periodic jobs: Unix time of the next run",
            labels=["service"],
        )
        scheduled: set[str] = set()
        for row in rows:
            key = [str(row.get("service")), str(row.get("worker"))]
            pid = row.get("pid")
            if self.usage is not None and isinstance(pid, int) and pid > 0:
                memory, seconds = self.usage(pid)
                # utime + stime in clock ticks: 3 decimals say it all, without float dust.
                cpu_time = None if seconds is None else round(seconds, 3)
                row = {**row, "rss": memory, "cpu": cpu_time}
            state.add_metric([*key, str(row.get("state"))], 1.0)
            ready.add_metric(key, 1.0 if row.get("ready") is True else 0.0)
            restarts.add_metric(key, _number(row, "restarts") or 0.0)
            starts.add_metric(key, _number(row, "starts") or 0.0)
            for family, field in (
                (exit_code, "last_exit_code"),
                (exit_time, "last_exit_time"),
                (uptime, "uptime"),
                (rss, "rss"),
                (cpu, "cpu"),
            ):
                value = _number(row, field)
                if value is not None:
                    family.add_metric(key, value)
            when = _number(row, "next_run")
            if when is not None and key[0] not in scheduled:
                scheduled.add(key[0])
                next_run.add_metric([key[0]], when)
        yield from (state, ready, restarts, starts, exit_code, exit_time, uptime, rss, cpu)
        yield next_run


def make_registry(source: MetricsSource, usage: Usage | None = None) -> CollectorRegistry:
    """A registry of our own: the global one would also carry what others registered."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PyinitCollector(source, usage))
    ProcessCollector(registry=registry)  # pyinit's own process_resident_memory_bytes and friends
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The /metrics page, in the Prometheus text format 0.0.4."""
    return generate_latest(registry)
