"""TOML-shaped tables -> the services model: one builder per table.

Both forms end here. The compact form is lexed into the same shape tomllib
gives for a `[services.NAME]` table (strings, ints, bools, lists), and one
builder, `build_service`, turns such a table into a `ServiceSpec`, so a rule
is written once and holds in both forms; `build_settings` does the same for
`[pyinit]`. The value converters the builders share are convert.py; the
rules that tie keys together (a oneshot cannot be periodic, a watchdog needs
ready = "notify", ...) are here. A bad value raises `ValueError`, or
`Invalid` naming the key path inside the table; the form that read the text
adds the source (entry or file:line).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from types import MappingProxyType

from pyinit.config import convert
from pyinit.config.convert import MAX_RESTARTS, MAX_WORKERS
from pyinit.config.errors import Invalid
from pyinit.config.model import (
    DEFAULT_READY_TIMEOUT,
    DEFAULT_RESTART_WINDOW,
    Backoff,
    OutputMode,
    Readiness,
    ReadinessKind,
    ReloadMode,
    RestartPolicy,
    Schedule,
    ServiceSpec,
    Settings,
)

SERVICE_KEYS = frozenset(
    "cmd class workers args kwargs after ready ready_timeout watchdog restart backoff"
    " max_restarts restart_window grace stop_signal reload reload_signal user group cwd env"
    " output critical oneshot every cron run_on_start".split()
)
SETTINGS_KEYS = frozenset("grace log_format log_level ctl_socket health_port".split())

# -- the builders: a TOML-shaped table -> ServiceSpec, or [pyinit] -> Settings ------


def build_service(name: str, raw: Mapping[str, object], origin: str) -> ServiceSpec:
    """Check and convert one service's keys; raises Invalid naming the key."""
    command, py_class = _target(raw)
    oneshot = convert.get(raw, "oneshot", convert.boolean, False)
    schedule = _schedule(raw)
    if oneshot and schedule is not None:
        key = "every" if "every" in raw else "cron"
        raise Invalid((key,), "a oneshot cannot also be periodic: use one or the other")
    single = oneshot or schedule is not None
    kind = "a oneshot" if oneshot else "a periodic job"
    restart = convert.get(raw, "restart", convert.enum_of(RestartPolicy), None)
    if restart is None:
        restart = RestartPolicy.NEVER if single else RestartPolicy.ALWAYS
    elif single and restart is RestartPolicy.ALWAYS:
        raise Invalid(("restart",), f"{kind} cannot restart always: use on-failure or never")
    workers = convert.get(raw, "workers", convert.count_up_to(MAX_WORKERS), 1)
    if single and workers > 1:
        raise Invalid(("workers",), f"{kind} runs one process: workers must be 0 or 1")
    ready = convert.get(raw, "ready", convert.readiness, Readiness())
    watchdog = convert.get(raw, "watchdog", convert.positive_duration, None)
    if watchdog is not None and ready.kind is not ReadinessKind.NOTIFY:
        raise Invalid(("watchdog",), 'needs ready = "notify" (WATCHDOG=1 comes over it)')
    reload = convert.get(raw, "reload", convert.enum_of(ReloadMode), ReloadMode.SIGNAL)
    if "reload_signal" in raw and reload is not ReloadMode.SIGNAL:
        raise Invalid(("reload_signal",), f'needs reload = "signal", not {reload.value!r}')
    if py_class is None and ("args" in raw or "kwargs" in raw):
        key = "args" if "args" in raw else "kwargs"
        raise Invalid((key,), "applies only to class services; put a command's arguments in cmd")
    return ServiceSpec(
        name=name,
        command=command,
        py_class=py_class,
        args=tuple(convert.get(raw, "args", convert.json_list, [])),
        kwargs=MappingProxyType(convert.get(raw, "kwargs", convert.json_table, {})),
        workers=workers,
        after=convert.get(raw, "after", convert.names, ()),
        ready=ready,
        ready_timeout=convert.get(raw, "ready_timeout", convert.duration, DEFAULT_READY_TIMEOUT),
        watchdog=watchdog,
        restart=restart,
        backoff=convert.get(raw, "backoff", convert.backoff, Backoff()),
        max_restarts=convert.get(raw, "max_restarts", convert.count_up_to(MAX_RESTARTS), 0),
        restart_window=convert.get(
            raw, "restart_window", convert.positive_duration, DEFAULT_RESTART_WINDOW
        ),
        grace=convert.get(raw, "grace", convert.duration, None),
        stop_signal=convert.get(raw, "stop_signal", convert.signal_number, int(signal.SIGTERM)),
        reload=reload,
        reload_signal=convert.get(raw, "reload_signal", convert.signal_number, int(signal.SIGHUP)),
        user=convert.get(raw, "user", convert.user, None),
        group=convert.get(raw, "group", convert.group, None),
        cwd=convert.get(raw, "cwd", convert.path, None),
        env=MappingProxyType(convert.get(raw, "env", convert.env_table, {})),
        output=convert.get(raw, "output", convert.enum_of(OutputMode), OutputMode.INHERIT),
        critical=convert.get(raw, "critical", convert.boolean, False),
        oneshot=oneshot,
        schedule=schedule,
        origin=origin,
    )


def _target(raw: Mapping[str, object]) -> tuple[tuple[str, ...] | None, str | None]:
    if "cmd" in raw and "class" in raw:
        raise Invalid(("class",), "cmd and class both given: a service runs one or the other")
    if "cmd" in raw:
        return convert.get(raw, "cmd", convert.command, None), None
    if "class" in raw:
        return None, convert.get(raw, "class", convert.class_ref, "")
    raise Invalid((), 'needs cmd (a command) or class ("module:Class")')


def _schedule(raw: Mapping[str, object]) -> Schedule | None:
    if "every" in raw and "cron" in raw:
        raise Invalid(("cron",), "every and cron both given: use one or the other")
    every = convert.get(raw, "every", convert.positive_duration, None)
    cron = convert.get(raw, "cron", convert.cron, None)
    run_on_start = convert.get(raw, "run_on_start", convert.boolean, False)
    if every is None and cron is None:
        if "run_on_start" in raw:
            raise Invalid(("run_on_start",), "applies only with every or cron")
        return None
    return Schedule(every=every, cron=cron, run_on_start=run_on_start)


def build_settings(table: Mapping[str, object]) -> Settings:
    """Convert the [pyinit] table (its keys already checked); raises Invalid naming the key."""
    return Settings(
        grace=convert.get(table, "grace", convert.duration, None),
        log_format=convert.get(table, "log_format", convert.choice("text", "json"), None),
        log_level=convert.get(
            table, "log_level", convert.choice("debug", "info", "warning", "error"), None
        ),
        ctl_socket=convert.get(table, "ctl_socket", convert.path, None),
        health_port=convert.get(table, "health_port", convert.health_port, None),
    )
