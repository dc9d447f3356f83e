"""TOML-shaped tables -> the services model: one builder per table, the converters they share.

Both forms end here. The compact form is lexed into the same shape tomllib
gives for a `[services.NAME]` table (strings, ints, bools, lists), and one
builder, `build_service`, turns such a table into a `ServiceSpec`, so a rule
is written once and holds in both forms; `build_settings` does the same for
`[pyinit]`. A bad value raises `ValueError`, or `Invalid` naming the key path
inside the table; the form that read the text adds the source (entry or
file:line).
"""

from __future__ import annotations

import grp
import math
import pwd
import re
import shlex
import signal
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

from pyinit.config.errors import Invalid, did_you_mean
from pyinit.config.model import (
    DEFAULT_PROBE_INTERVAL,
    DEFAULT_READY_TIMEOUT,
    DEFAULT_RESTART_WINDOW,
    DEFAULT_SETTLE,
    Backoff,
    OutputMode,
    Readiness,
    ReadinessKind,
    ReloadMode,
    RestartPolicy,
    Schedule,
    ServiceSpec,
    Settings,
    Strategy,
    check_cron,
)
from pyinit.core.values import MAX_DIGITS, is_digits, parse_seconds, parse_signal, read_digits

SERVICE_KEYS = frozenset(
    "cmd class workers args kwargs after ready ready_timeout watchdog restart backoff"
    " max_restarts restart_window grace stop_signal reload reload_signal user group cwd env"
    " output critical oneshot every cron run_on_start strategy max_surge settle".split()
)
SETTINGS_KEYS = frozenset("grace log_format log_level ctl_socket health_port".split())
BACKOFF_KEYS = frozenset(("threshold", "min_delay", "max_delay"))
READY_TABLE_KEYS = frozenset(("exec", "interval"))

NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CLASS_REF = re.compile(rf"{_DOTTED}:{_DOTTED}", re.ASCII)

T = TypeVar("T")

# Bounds on every number (issue 7.6: `a[99999999999999999999999]: true` passed
# --check, then died of MemoryError building that many workers). Generous for
# any real use, small enough that nothing downstream (lists of workers, timer
# arithmetic, epoll timeouts) can blow up.
#: Workers of one service: each is a process; 10,000 is past any container's pid limit.
MAX_WORKERS = 10_000
#: max_restarts: a count compared with a window's restarts; a million is "no limit" in practice.
MAX_RESTARTS = 1_000_000
#: Any duration (grace, timeouts, windows, backoff, every): 100 years (36500d).
#: The loop clamps one epoll wait to ~24.8 days and waits again, so long
#: timers are fine; this bound only keeps float arithmetic and messages sane.
MAX_DURATION = 36_500 * 86_400.0


# -- the builders: a TOML-shaped table -> ServiceSpec, or [pyinit] -> Settings ------


def build_service(name: str, raw: Mapping[str, object], origin: str) -> ServiceSpec:
    """Check and convert one service's keys; raises Invalid naming the key."""
    command, py_class = _target(raw)
    oneshot = _get(raw, "oneshot", _bool, False)
    schedule = _schedule(raw)
    if oneshot and schedule is not None:
        key = "every" if "every" in raw else "cron"
        raise Invalid((key,), "a oneshot cannot also be periodic: use one or the other")
    single = oneshot or schedule is not None
    kind = "a oneshot" if oneshot else "a periodic job"
    restart = _get(raw, "restart", _enum(RestartPolicy), None)
    if restart is None:
        restart = RestartPolicy.NEVER if single else RestartPolicy.ALWAYS
    elif single and restart is RestartPolicy.ALWAYS:
        raise Invalid(("restart",), f"{kind} cannot restart always: use on-failure or never")
    workers = _get(raw, "workers", _count_up_to(MAX_WORKERS), 1)
    if single and workers > 1:
        raise Invalid(("workers",), f"{kind} runs one process: workers must be 0 or 1")
    ready = _get(raw, "ready", _readiness, Readiness())
    watchdog = _get(raw, "watchdog", _positive_duration, None)
    if watchdog is not None and ready.kind is not ReadinessKind.NOTIFY:
        raise Invalid(("watchdog",), 'needs ready = "notify" (WATCHDOG=1 comes over it)')
    reload = _get(raw, "reload", _enum(ReloadMode), ReloadMode.SIGNAL)
    if "reload_signal" in raw and reload is not ReloadMode.SIGNAL:
        raise Invalid(("reload_signal",), f'needs reload = "signal", not {reload.value!r}')
    strategy, max_surge, settle = _deploy(raw, single, kind, ready)
    if py_class is None and ("args" in raw or "kwargs" in raw):
        key = "args" if "args" in raw else "kwargs"
        raise Invalid((key,), "applies only to class services; put a command's arguments in cmd")
    return ServiceSpec(
        name=name,
        command=command,
        py_class=py_class,
        args=tuple(_get(raw, "args", _json_list, [])),
        kwargs=MappingProxyType(_get(raw, "kwargs", _json_table, {})),
        workers=workers,
        after=_get(raw, "after", _names, ()),
        ready=ready,
        ready_timeout=_get(raw, "ready_timeout", _duration, DEFAULT_READY_TIMEOUT),
        watchdog=watchdog,
        restart=restart,
        backoff=_get(raw, "backoff", _backoff, Backoff()),
        max_restarts=_get(raw, "max_restarts", _count_up_to(MAX_RESTARTS), 0),
        restart_window=_get(raw, "restart_window", _positive_duration, DEFAULT_RESTART_WINDOW),
        grace=_get(raw, "grace", _duration, None),
        stop_signal=_get(raw, "stop_signal", _signal, int(signal.SIGTERM)),
        reload=reload,
        reload_signal=_get(raw, "reload_signal", _signal, int(signal.SIGHUP)),
        user=_get(raw, "user", _user, None),
        group=_get(raw, "group", _group, None),
        cwd=_get(raw, "cwd", _path, None),
        env=MappingProxyType(_get(raw, "env", _env, {})),
        output=_get(raw, "output", _enum(OutputMode), OutputMode.INHERIT),
        critical=_get(raw, "critical", _bool, False),
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
    strategy = _get(raw, "strategy", _enum(Strategy), None)
    if strategy is Strategy.ROLLING and single:
        raise Invalid(("strategy",), f"{kind} cannot roll: it is not serving anything")
    if strategy is None:
        strategy = Strategy.ROLLING if raw.get("listen") and not single else Strategy.RESTART
    for key in ("max_surge", "settle"):
        if key in raw and strategy is not Strategy.ROLLING:
            raise Invalid((key,), 'needs strategy = "rolling"')
    max_surge = _get(raw, "max_surge", _count_up_to(MAX_WORKERS), 1)
    if max_surge < 1:
        raise Invalid(("max_surge",), "must be 1 or more (new workers started at a time)")
    default_settle = 0.0 if ready.kind is ReadinessKind.NOTIFY else DEFAULT_SETTLE
    return strategy, max_surge, _get(raw, "settle", _duration, default_settle)


def _get(raw: Mapping[str, object], key: str, convert: Callable[[object], T], default: T) -> T:
    """raw[key] converted, or default; an error inside is tagged with the key."""
    if key not in raw:
        return default
    try:
        return convert(raw[key])
    except Invalid as error:
        raise Invalid((key, *error.path), error.message) from None
    except ValueError as error:
        raise Invalid((key,), str(error)) from None


def _target(raw: Mapping[str, object]) -> tuple[tuple[str, ...] | None, str | None]:
    if "cmd" in raw and "class" in raw:
        raise Invalid(("class",), "cmd and class both given: a service runs one or the other")
    if "cmd" in raw:
        return _get(raw, "cmd", _command, None), None
    if "class" in raw:
        return None, _get(raw, "class", _class_ref, "")
    raise Invalid((), 'needs cmd (a command) or class ("module:Class")')


def _schedule(raw: Mapping[str, object]) -> Schedule | None:
    if "every" in raw and "cron" in raw:
        raise Invalid(("cron",), "every and cron both given: use one or the other")
    every = _get(raw, "every", _positive_duration, None)
    cron = _get(raw, "cron", _cron, None)
    run_on_start = _get(raw, "run_on_start", _bool, False)
    if every is None and cron is None:
        if "run_on_start" in raw:
            raise Invalid(("run_on_start",), "applies only with every or cron")
        return None
    return Schedule(every=every, cron=cron, run_on_start=run_on_start)


def build_settings(table: Mapping[str, object]) -> Settings:
    """Convert the [pyinit] table (its keys already checked); raises Invalid naming the key."""
    return Settings(
        grace=_get(table, "grace", _duration, None),
        log_format=_get(table, "log_format", _choice("text", "json"), None),
        log_level=_get(table, "log_level", _choice("debug", "info", "warning", "error"), None),
        ctl_socket=_get(table, "ctl_socket", _path, None),
        health_port=_get(table, "health_port", _health_port, None),
    )


# -- value converters: a TOML value -> a model value, or ValueError ---------------


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "an integer", float: "a float", list: "an array"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a table" if isinstance(value, dict) else "a date or time"


def _expected(what: str, value: object) -> ValueError:
    plain = isinstance(value, str | int | float) and not isinstance(value, bool)
    shown = repr(value) if plain else type_name(value)
    return ValueError(f"expected {what}, got {shown}")


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    if "\0" in value:
        raise ValueError(f"NUL character in {value!r}")
    return value


def _nonempty(value: object) -> str:
    text = _string(value)
    if not text.strip():
        raise ValueError("expected a non-empty string")
    return text


_path = _nonempty


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _count_up_to(limit: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise _expected(f"a whole number from 0 to {limit}", _short(value))
        return value

    return convert


def _short(value: object) -> object:
    """A huge integer described by its size (str() of one over 4300 digits raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**MAX_DIGITS:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    return value


def _duration(value: object) -> float:
    if isinstance(value, str):
        seconds = parse_seconds(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not seconds >= 0:  # negative, or nan
            raise _expected("a duration of 0 or more seconds", _short(value))
    else:
        raise _expected('a duration (seconds, or a string like "500ms", "30s", "1h")', value)
    if seconds > MAX_DURATION:
        raise _expected("a duration of at most 100 years (36500d)", _short(value))
    return seconds


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise _expected("a duration above 0", value)
    return seconds


def _signal(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(_short(value))
    return parse_signal(_nonempty(value))


def _choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = _string(value)
        if text.lower() not in choices:
            raise _expected(f"one of {', '.join(choices)}", value)
        return text.lower()

    return convert


E = TypeVar("E", RestartPolicy, OutputMode, ReloadMode, Strategy)


def _enum(kind: type[E]) -> Callable[[object], E]:
    choices = [member.value for member in kind]

    def convert(value: object) -> E:
        if value not in choices:
            raise _expected(f"one of {', '.join(choices)}", value)
        return kind(value)

    return convert


def _command(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as error:
            raise ValueError(f"{str(error).lower()} in {value!r}") from None
    elif isinstance(value, list):
        argv = [_string(word) for word in value]
    else:
        raise _expected("a command (a string, or an array of strings)", value)
    if not argv or not argv[0]:
        raise ValueError("empty command")
    for word in argv:
        _string(word)
    return tuple(argv)


def _class_ref(value: object) -> str:
    text = _string(value)
    if not _CLASS_REF.fullmatch(text):
        raise _expected("module:Class (e.g. myapp.services:Indexer)", value)
    return text


def _names(value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _expected("an array of service names", value)
    names: list[str] = []
    for item in items:
        name = _string(item)
        if not NAME.fullmatch(name):
            raise ValueError(f"bad service name {name!r}")
        if name in names:
            raise ValueError(f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)


def _readiness(value: object) -> Readiness:
    if isinstance(value, dict):
        return _exec_readiness(value)
    text = _string(value)
    if text in ("none", "notify"):
        return Readiness(kind=ReadinessKind(text))
    kind, _, rest = text.partition(":")
    if kind == "tcp" and rest:
        host, _, port = rest.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        return Readiness(kind=ReadinessKind.TCP, host=host, port=_port(port))
    if kind == "file" and rest:
        return Readiness(kind=ReadinessKind.FILE, path=_string(rest))
    if kind == "exec":
        raise ValueError('an exec check is a table: ready = {exec = [...], interval = "2s"}')
    raise _expected('none, notify, "tcp:PORT", "file:PATH" or {exec = [...]}', value)


def _exec_readiness(table: dict[object, object]) -> Readiness:
    for key in table:
        if key not in READY_TABLE_KEYS:
            raise Invalid((str(key),), f"unknown key{did_you_mean(str(key), READY_TABLE_KEYS)}")
    if "exec" not in table:
        raise ValueError("a readiness table needs exec = [...]")
    raw = {str(k): v for k, v in table.items()}
    return Readiness(
        kind=ReadinessKind.EXEC,
        command=_get(raw, "exec", _command, ()),
        interval=_get(raw, "interval", _positive_duration, DEFAULT_PROBE_INTERVAL),
    )


def _port(text: str) -> int:
    if not is_digits(text) or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {text[:20]!r}")
    return int(text)


def _health_port(value: object) -> tuple[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return "0.0.0.0", _port(str(_short(value)))
    address, _, port = _string(value).rpartition(":")
    return address.strip("[]") or "0.0.0.0", _port(port)


def _backoff(value: object) -> Backoff:
    if not isinstance(value, dict):
        raise _expected("a table {threshold, min_delay, max_delay}", value)
    for key in value:
        if key not in BACKOFF_KEYS:
            raise Invalid((key,), f"unknown key{did_you_mean(key, BACKOFF_KEYS)}")
    default = Backoff()
    backoff = Backoff(
        threshold=_get(value, "threshold", _duration, default.threshold),
        min_delay=_get(value, "min_delay", _duration, default.min_delay),
        max_delay=_get(value, "max_delay", _duration, default.max_delay),
    )
    if backoff.min_delay > backoff.max_delay:
        raise Invalid(("max_delay",), "is below min_delay")
    return backoff


def _cron(value: object) -> str:
    text = _nonempty(value)
    check_cron(text)
    return " ".join(text.split())


def _user(value: object) -> str:
    name = _account(value)
    if not name.isdigit():
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise ValueError(f"unknown user {name!r} (not in the user database)") from None
    return name


def _group(value: object) -> str:
    name = _account(value)
    if not name.isdigit():
        try:
            grp.getgrnam(name)
        except KeyError:
            raise ValueError(f"unknown group {name!r} (not in the group database)") from None
    return name


def _account(value: object) -> str:
    """A user or group: a name, or a numeric id (written as a number or digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(_short(value))
    name = _nonempty(value)
    if name.startswith("-") or (is_digits(name) and read_digits(name) >= 2**32 - 1):
        raise ValueError(f"bad id {name!r}")
    if not name.isascii():
        raise ValueError(f"expected an ASCII name or a number, got {name!r}")
    return name


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _expected('a table (env = { NAME = "value" })', value)
    env: dict[str, str] = {}
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"bad variable name {key!r}")
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        try:
            env[key] = _string(item)
        except ValueError as error:
            raise Invalid((key,), str(error)) from None
    return env


def _json_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise _expected("an array", value)
    return [_json_value(item) for item in value]


def _json_table(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _expected("a table", value)
    return {str(key): _json_value(item) for key, item in value.items()}


def _json_value(value: object) -> object:
    """Values that can reach a worker in another interpreter: no TOML dates and times."""
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if not isinstance(value, str | int | float | bool):
        raise ValueError(f"{type_name(value)} cannot be passed to a worker process")
    return value
