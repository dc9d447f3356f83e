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

import dataclasses
import signal
from collections.abc import Mapping
from types import MappingProxyType

from pyinit.config import convert
from pyinit.config.convert import MAX_RESTARTS, MAX_WORKERS
from pyinit.config.errors import Invalid
from pyinit.config.listen import DEFAULT_MODE, ListenAddress, listen_entries, parse_mode
from pyinit.config.model import (
    DEFAULT_READY_TIMEOUT,
    DEFAULT_RESTART_WINDOW,
    Backoff,
    OutputMode,
    Readiness,
    ReadinessKind,
    ReloadMode,
    ReloadTarget,
    RestartPolicy,
    Schedule,
    ServiceSpec,
    Settings,
    Strategy,
)
from pyinit.core.logs import FORMATS as LOG_FORMATS

SERVICE_KEYS = frozenset(
    "cmd class workers args kwargs after ready ready_timeout watchdog restart backoff"
    " max_restarts restart_window grace stop_signal reload reload_signal user group cwd env"
    " output critical oneshot every cron run_on_start strategy max_surge settle"
    " listen listen_mode listen_owner listen_group reload_to".split()
)
SETTINGS_KEYS = frozenset("grace log_format log_level ctl_socket health_port".split())
#: Seconds a new worker must have run before it replaces an old one in a
#: rolling deploy, unless it says READY=1 itself (ready = "notify"): a tcp or
#: file check may be answered by the old workers, and none says nothing.
DEFAULT_SETTLE = 1.0

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
    listen = _listen(raw)
    if ready.kind is ReadinessKind.TCP and any(
        a.kind == "tcp" and a.port == ready.port for a in listen
    ):
        # pyinit's own socket accepts the probe's connect() into its queue
        # whether or not a worker serves it: the check would always pass.
        raise Invalid(
            ("ready",),
            f"port {ready.port} is in listen, held by pyinit: a tcp check of it always"
            ' passes; use ready = "notify" or an exec check',
        )
    reload = convert.get(raw, "reload", convert.enum_of(ReloadMode), ReloadMode.SIGNAL)
    for key in ("reload_signal", "reload_to"):
        if key in raw and reload is not ReloadMode.SIGNAL:
            raise Invalid((key,), f'needs reload = "signal", not {reload.value!r}')
    strategy, max_surge, settle = _deploy(raw, single, kind, ready)
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
        reload_to=convert.get(raw, "reload_to", convert.enum_of(ReloadTarget), ReloadTarget.MAIN),
        listen=listen,
        user=convert.get(raw, "user", convert.user, None),
        group=convert.get(raw, "group", convert.group, None),
        cwd=convert.get(raw, "cwd", convert.path, None),
        env=MappingProxyType(convert.get(raw, "env", convert.env_table, {})),
        output=convert.get(raw, "output", convert.enum_of(OutputMode), OutputMode.INHERIT),
        critical=convert.get(raw, "critical", convert.boolean, False),
        oneshot=oneshot,
        schedule=schedule,
        strategy=strategy,
        max_surge=max_surge,
        settle=settle,
        origin=origin,
    )


def _deploy(
    raw: Mapping[str, object], single: bool, kind: str, ready: Readiness
) -> tuple[Strategy, int, float]:
    """strategy, max_surge, settle (issue 9).

    Rolling is the default where pyinit knows it works: a service whose
    sockets pyinit holds (`listen`), since old and new workers then share
    them. Without them pyinit cannot tell a worker that binds its own port
    (a second copy fails with EADDRINUSE) or must run alone from one that
    may overlap, so the default stays restart and `strategy = "rolling"`
    says so. A oneshot or periodic job has nothing to keep serving.
    """
    strategy = convert.get(raw, "strategy", convert.enum_of(Strategy), None)
    if strategy is Strategy.ROLLING and single:
        raise Invalid(("strategy",), f"{kind} cannot roll: it is not serving anything")
    if strategy is None:
        strategy = Strategy.ROLLING if raw.get("listen") and not single else Strategy.RESTART
    for key in ("max_surge", "settle"):
        if key in raw and strategy is not Strategy.ROLLING:
            raise Invalid((key,), 'needs strategy = "rolling"')
    max_surge = convert.get(raw, "max_surge", convert.count_up_to(MAX_WORKERS), 1)
    if max_surge < 1:
        raise Invalid(("max_surge",), "must be 1 or more (new workers started at a time)")
    default_settle = 0.0 if ready.kind is ReadinessKind.NOTIFY else DEFAULT_SETTLE
    return strategy, max_surge, convert.get(raw, "settle", convert.duration, default_settle)


def _target(raw: Mapping[str, object]) -> tuple[tuple[str, ...] | None, str | None]:
    if "cmd" in raw and "class" in raw:
        raise Invalid(("class",), "cmd and class both given: a service runs one or the other")
    if "cmd" in raw:
        return convert.get(raw, "cmd", convert.command, None), None
    if "class" in raw:
        return None, convert.get(raw, "class", convert.class_ref, "")
    raise Invalid((), 'needs cmd (a command) or class ("module:Class")')


def _listen(raw: Mapping[str, object]) -> tuple[ListenAddress, ...]:
    """`listen`, with listen_mode/owner/group applied to its socket files."""
    none: tuple[ListenAddress, ...] = ()
    addresses = convert.get(raw, "listen", listen_entries, none)
    file_keys = [key for key in ("listen_mode", "listen_owner", "listen_group") if key in raw]
    if file_keys and not any(address.is_file for address in addresses):
        raise Invalid((file_keys[0],), "needs a unix socket in listen (unix:/path)")
    mode = convert.get(raw, "listen_mode", parse_mode, DEFAULT_MODE)
    owner = convert.get(raw, "listen_owner", convert.user, None)
    group = convert.get(raw, "listen_group", convert.group, None)
    return tuple(
        dataclasses.replace(address, mode=mode, owner=owner, group=group)
        if address.is_file
        else address
        for address in addresses
    )


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
        log_format=convert.get(table, "log_format", convert.choice(*LOG_FORMATS), None),
        log_level=convert.get(
            table, "log_level", convert.choice("debug", "info", "warning", "error"), None
        ),
        ctl_socket=convert.get(table, "ctl_socket", convert.path, None),
        health_port=convert.get(table, "health_port", convert.health_port, None),
    )
