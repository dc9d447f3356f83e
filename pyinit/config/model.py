"""What the user asked services mode to run: frozen values and pure helpers.

`pyinit.config` builds these from text (PYINIT_SERVICES, the TOML file); the
supervisor only reads them. Spec and runtime stay apart (cotyledon's
`ServiceConfig` vs `WorkerInfo`): nothing here changes while pyinit runs, so
a reload is "compare two Configs", and equality ignores where a value was
written (`origin`), so moving a table in the file is not a change.

No I/O and nothing that starts processes. This module is imported only when
services are configured: the single-command path never pays for
`dataclasses` and `enum` (see pyinit/model.py for why that matters).
"""

from __future__ import annotations

import enum
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import NewType

from pyinit.core.signals import signal_name

ServiceName = NewType("ServiceName", str)

#: Defaults from SPEC section 3, in seconds.
DEFAULT_WORKERS = 1
DEFAULT_READY_TIMEOUT = 60.0
DEFAULT_PROBE_INTERVAL = 1.0
DEFAULT_RESTART_WINDOW = 60.0
#: Same as pyinit.core.model.DEFAULT_GRACE; used when neither flag nor file sets it.
DEFAULT_GRACE = 10.0


class RestartPolicy(enum.Enum):
    """When a worker that exited is started again."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"  # exit status other than 0, or killed by a signal
    NEVER = "never"


class OutputMode(enum.Enum):
    """What happens to a child's stdout and stderr."""

    INHERIT = "inherit"  # the child writes to pyinit's own stdout/stderr
    PREFIX = "prefix"  # `web[0] | line`
    JSON = "json"  # one object a line: time, service, worker, stream, message


class ReloadMode(enum.Enum):
    """What SIGHUP (or `pyinit ctl reload`) does to an unchanged service."""

    SIGNAL = "signal"  # send reload_signal to its process groups; Service.reload() for classes
    RESTART = "restart"
    NONE = "none"


class ReadinessKind(enum.Enum):
    NONE = "none"  # ready as soon as it has started
    NOTIFY = "notify"  # READY=1 on the notify socket pyinit gives it
    TCP = "tcp"  # a connect() to host:port succeeds
    FILE = "file"  # path exists
    EXEC = "exec"  # command exits 0


@dataclass(frozen=True)
class Readiness:
    """How pyinit learns a service is ready; `interval` spaces the probes."""

    kind: ReadinessKind = ReadinessKind.NONE
    host: str = "127.0.0.1"
    port: int | None = None
    path: str | None = None
    command: tuple[str, ...] = ()
    interval: float = DEFAULT_PROBE_INTERVAL

    def describe(self) -> str:
        if self.kind is ReadinessKind.TCP:
            return f"tcp:{self.host}:{self.port}"
        if self.kind is ReadinessKind.FILE:
            return f"file:{self.path}"
        if self.kind is ReadinessKind.EXEC:
            return f"exec {shlex.join(self.command)} every {format_duration(self.interval)}"
        return str(self.kind.value)


@dataclass(frozen=True)
class Backoff:
    """Twisted ProcessMonitor's restart delay: see `backoff_delay`."""

    threshold: float = 1.0  # a run shorter than this is an "instant death"
    min_delay: float = 1.0
    max_delay: float = 3600.0


@dataclass(frozen=True)
class Schedule:
    """A periodic job: exactly one of `every` (seconds) and `cron` (5 fields) is set."""

    every: float | None = None
    cron: str | None = None
    run_on_start: bool = False

    def describe(self) -> str:
        when = f"every {format_duration(self.every)}" if self.every is not None else ""
        if self.cron is not None:
            when = f"cron {self.cron!r}"
        return when + (", and once at start" if self.run_on_start else "")


@dataclass(frozen=True)
class ServiceSpec:
    """One service as configured. `command` xor `py_class` is set.

    `grace` None means pyinit's own grace (--grace, PYINIT_GRACE, [pyinit]).
    `user`/`group` are names or numeric ids as written; config checked that
    names exist. `args`/`kwargs` are for `py_class` only and hold JSON-shaped
    values, since they travel to a fresh interpreter.
    """

    name: str
    command: tuple[str, ...] | None = None
    py_class: str | None = None  # "module:Class"
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    workers: int = DEFAULT_WORKERS
    after: tuple[str, ...] = ()
    ready: Readiness = field(default_factory=Readiness)
    ready_timeout: float = DEFAULT_READY_TIMEOUT  # 0: wait forever
    watchdog: float | None = None
    restart: RestartPolicy = RestartPolicy.ALWAYS
    backoff: Backoff = field(default_factory=Backoff)
    max_restarts: int = 0  # 0: no limit
    restart_window: float = DEFAULT_RESTART_WINDOW
    grace: float | None = None
    stop_signal: int = signal.SIGTERM
    reload: ReloadMode = ReloadMode.SIGNAL
    reload_signal: int = signal.SIGHUP
    user: str | None = None
    group: str | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    output: OutputMode = OutputMode.INHERIT
    critical: bool = False
    oneshot: bool = False
    schedule: Schedule | None = None
    # Where it was written ("PYINIT_SERVICES entry 2", "/etc/pyinit.toml:7"), for messages.
    origin: str = field(default="", compare=False)

    @property
    def kind(self) -> str:
        """service, oneshot or periodic: how its exits are read."""
        if self.schedule is not None:
            return "periodic"
        return "oneshot" if self.oneshot else "service"

    def runs(self) -> str:
        """The command line (shell-quoted) or `py:module:Class`."""
        if self.command is not None:
            return shlex.join(self.command)
        return f"py:{self.py_class}"


@dataclass(frozen=True)
class Settings:
    """The `[pyinit]` table. None: not set in the file (flag, variable or default decide)."""

    grace: float | None = None
    log_format: str | None = None
    log_level: str | None = None
    ctl_socket: str | None = None
    health_port: tuple[str, int] | None = None  # (address, port)


@dataclass(frozen=True)
class Config:
    """Everything services mode needs, merged from PYINIT_SERVICES and the file.

    `services` keeps the order they were written in (PYINIT_SERVICES first).
    `path` is the TOML file, if any: SIGHUP re-reads it.
    """

    settings: Settings = field(default_factory=Settings)
    services: Mapping[str, ServiceSpec] = field(default_factory=lambda: MappingProxyType({}))
    path: str | None = None


# -- pure helpers ---------------------------------------------------------------


def backoff_delay(instant_deaths: int, backoff: Backoff) -> float:
    """Seconds to wait before the next start, after `instant_deaths` in a row.

    The supervisor counts consecutive runs shorter than `backoff.threshold`
    and resets the count to 0 after a run that lasted at least that long.
    0 deaths (the last run was a good one, or it never ran): start now.
    n >= 1: min_delay * 2**(n-1), capped at max_delay: 1, 2, 4, ... 3600.
    """
    if instant_deaths <= 0:
        return 0.0
    exponent = min(instant_deaths - 1, 64)  # 2**64 s is past any max_delay; avoids overflow
    return min(backoff.min_delay * 2.0**exponent, backoff.max_delay)


def start_order(config: Config) -> list[tuple[str, ...]]:
    """Services in layers: each layer's `after` names are all in earlier layers.

    Layer 0 has the services with no `after`; independent services share a
    layer and start together; stopping walks the layers backwards. Within a
    layer, the configured order. Raises ValueError on a cycle or an unknown
    name (config.load has already rejected both).
    """
    remaining = dict(config.services)
    placed: set[str] = set()
    layers: list[tuple[str, ...]] = []
    while remaining:
        layer = tuple(n for n, s in remaining.items() if placed.issuperset(s.after))
        if not layer:
            raise ValueError(f"no start order: cycle or unknown name among {sorted(remaining)}")
        layers.append(layer)
        placed.update(layer)
        for name in layer:
            del remaining[name]
    return layers


def find_cycle(after: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A dependency cycle as [a, b, ..., a], or None. Unknown names are ignored."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in after:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack = [iter(after[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif nxt in after and state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt in after and not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(after[nxt]))
    return None


def next_cron_time(expr: str, after: datetime) -> datetime | None:
    """The first time strictly after `after` that matches the 5-field cron `expr`.

    Pass an aware datetime in the zone the schedule means (the container's
    TZ, UTC unless set); the answer is in the same zone. None when the
    expression never matches in the next 50 years (e.g. `0 0 31 4 *` with a
    day-of-week). Uses cronsim (Debian cron semantics, DST handled for
    zoneinfo zones). `expr` must have passed `check_cron`.
    """
    # Here, not at the top: cronsim costs ~11 ms to import and only cron schedules need it.
    from cronsim import CronSim

    try:
        return next(CronSim(expr, after))
    except StopIteration:
        return None


def check_cron(expr: str) -> None:
    """Raise ValueError saying what is wrong with a cron expression.

    Only the classic 5 fields (minute hour day month weekday): a 6th field
    means seconds to some tools and years to others, so it is refused rather
    than guessed. cronsim reads names (MON, JAN), ranges, steps, L and #.
    """
    from cronsim import CronSim, CronSimError  # ~11 ms: only when a cron is given

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 cron fields (minute hour day month weekday), got {len(fields)} in {expr!r}"
        )
    try:
        CronSim(expr, datetime(2000, 1, 1))
    except (CronSimError, ValueError, IndexError, KeyError) as error:
        raise ValueError(f"bad cron expression {expr!r}: {error}") from None


def format_duration(seconds: float | None) -> str:
    """3600 -> '1h', 90 -> '90s', 0.5 -> '500ms': the way a user writes it."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def format_plan(config: Config) -> str:
    """What `pyinit --check` prints: the order, then each service and how it runs.

    Never prints environment values (SPEC 9: the environment is never
    logged), only their names. A service's grace of None is shown as
    pyinit's: put the effective grace in `config.settings` to show it.
    """
    specs = config.services
    if not specs:
        return "no services configured\n"
    workers = sum(s.workers for s in specs.values())
    lines = [f"{_plural(len(specs), 'service')}, {_plural(workers, 'worker')}"]
    lines.append("start order (stop runs it backwards):")
    for number, layer in enumerate(start_order(config), 1):
        lines.append(f"  {number}. {', '.join(layer)}")
    default_grace = config.settings.grace if config.settings.grace is not None else DEFAULT_GRACE
    for spec in specs.values():
        lines.append("")
        lines.extend(_describe(spec, default_grace))
    return "\n".join(lines) + "\n"


def _describe(spec: ServiceSpec, default_grace: float) -> list[str]:
    origin = f"  ({spec.origin})" if spec.origin else ""
    out = [f"{spec.name}: {spec.kind}, {_plural(spec.workers, 'worker')}{origin}"]
    out.append(f"  runs     {spec.runs()}")
    if spec.py_class is not None and (spec.args or spec.kwargs):
        out.append(f"  with     args={list(spec.args)!r} kwargs={dict(spec.kwargs)!r}")
    who = ", ".join(f"{k} {v}" for k, v in (("user", spec.user), ("group", spec.group)) if v)
    who = who or "pyinit's user"
    out.append(f"  as       {who}" + (f", in {spec.cwd}" if spec.cwd else ""))
    if spec.env:
        out.append(f"  env      {', '.join(sorted(spec.env))}")
    if spec.after:
        out.append(f"  after    {', '.join(spec.after)}")
    if spec.schedule is not None:
        out.append(f"  when     {spec.schedule.describe()}")
    ready = spec.ready.describe()
    if spec.ready.kind is not ReadinessKind.NONE:
        limit = format_duration(spec.ready_timeout) if spec.ready_timeout else "no limit"
        ready += f", within {limit}"
    if spec.watchdog is not None:
        ready += f", watchdog {format_duration(spec.watchdog)}"
    out.append(f"  ready    {ready}")
    out.append(f"  restart  {_restart_text(spec)}")
    grace = spec.grace if spec.grace is not None else default_grace
    grace_text = "forever" if grace == 0 else format_duration(grace)
    out.append(f"  stop     {signal_name(spec.stop_signal)}, SIGKILL after {grace_text}")
    reload = spec.reload.value
    if spec.reload is ReloadMode.SIGNAL:
        reload += f" {signal_name(spec.reload_signal)}"
    out.append(f"  reload   {reload}; output {spec.output.value}")
    return out


def _restart_text(spec: ServiceSpec) -> str:
    text = spec.restart.value
    if spec.restart is not RestartPolicy.NEVER:
        b = spec.backoff
        text += (
            f" (backoff {format_duration(b.min_delay)}..{format_duration(b.max_delay)}"
            f" after runs under {format_duration(b.threshold)})"
        )
        if spec.max_restarts:
            text += f", failed after {spec.max_restarts} in {format_duration(spec.restart_window)}"
    if spec.critical:
        text += "; critical: its failure stops pyinit"
    return text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
