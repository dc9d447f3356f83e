"""Value converters: one TOML-shaped value -> one model value, or ValueError.

What the builders (build.py) share, and what keeps every number bounded
(issue 7.6). Each converter takes what tomllib, or the compact lexer, gives
for one key (str, int, float, bool, list, dict) and returns the model's value,
or raises `ValueError` saying what was expected, or `Invalid` naming the key
path inside a nested table (`ready.exec`, `backoff.max_delay`). Text-level
parsing shared with the CLI (durations, signals, digits) is core/values.py.
"""

from __future__ import annotations

import grp
import math
import pwd
import re
import shlex
from collections.abc import Callable, Mapping
from typing import TypeVar

from pyinit.config.errors import Invalid, did_you_mean
from pyinit.config.model import (
    DEFAULT_PROBE_INTERVAL,
    Backoff,
    OutputMode,
    Readiness,
    ReadinessKind,
    ReloadMode,
    RestartPolicy,
    check_cron,
)
from pyinit.core.values import MAX_DIGITS, is_digits, parse_seconds, parse_signal, read_digits

BACKOFF_KEYS = frozenset(("threshold", "min_delay", "max_delay"))
READY_TABLE_KEYS = frozenset(("exec", "interval"))

NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CLASS_REF = re.compile(rf"{_DOTTED}:{_DOTTED}", re.ASCII)

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

T = TypeVar("T")


def get(raw: Mapping[str, object], key: str, converter: Callable[[object], T], default: T) -> T:
    """raw[key] converted, or default; an error inside is tagged with the key."""
    if key not in raw:
        return default
    try:
        return converter(raw[key])
    except Invalid as error:
        raise Invalid((key, *error.path), error.message) from None
    except ValueError as error:
        raise Invalid((key,), str(error)) from None


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


def string(value: object) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    if "\0" in value:
        raise ValueError(f"NUL character in {value!r}")
    return value


def nonempty(value: object) -> str:
    text = string(value)
    if not text.strip():
        raise ValueError("expected a non-empty string")
    return text


path = nonempty


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def count_up_to(limit: int) -> Callable[[object], int]:
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


def duration(value: object) -> float:
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


def positive_duration(value: object) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise _expected("a duration above 0", value)
    return seconds


def signal_number(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(_short(value))
    return parse_signal(nonempty(value))


def choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = string(value)
        if text.lower() not in choices:
            raise _expected(f"one of {', '.join(choices)}", value)
        return text.lower()

    return convert


E = TypeVar("E", RestartPolicy, OutputMode, ReloadMode)


def enum_of(kind: type[E]) -> Callable[[object], E]:
    choices = [member.value for member in kind]

    def convert(value: object) -> E:
        if value not in choices:
            raise _expected(f"one of {', '.join(choices)}", value)
        return kind(value)

    return convert


def command(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as error:
            raise ValueError(f"{str(error).lower()} in {value!r}") from None
    elif isinstance(value, list):
        argv = [string(word) for word in value]
    else:
        raise _expected("a command (a string, or an array of strings)", value)
    if not argv or not argv[0]:
        raise ValueError("empty command")
    for word in argv:
        string(word)
    return tuple(argv)


def class_ref(value: object) -> str:
    text = string(value)
    if not _CLASS_REF.fullmatch(text):
        raise _expected("module:Class (e.g. myapp.services:Indexer)", value)
    return text


def names(value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _expected("an array of service names", value)
    names: list[str] = []
    for item in items:
        name = string(item)
        if not NAME.fullmatch(name):
            raise ValueError(f"bad service name {name!r}")
        if name in names:
            raise ValueError(f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)


def readiness(value: object) -> Readiness:
    if isinstance(value, dict):
        return _exec_readiness(value)
    text = string(value)
    if text in ("none", "notify"):
        return Readiness(kind=ReadinessKind(text))
    kind, _, rest = text.partition(":")
    if kind == "tcp" and rest:
        host, _, port = rest.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        return Readiness(kind=ReadinessKind.TCP, host=host, port=_port(port))
    if kind == "file" and rest:
        return Readiness(kind=ReadinessKind.FILE, path=string(rest))
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
        command=get(raw, "exec", command, ()),
        interval=get(raw, "interval", positive_duration, DEFAULT_PROBE_INTERVAL),
    )


def _port(text: str) -> int:
    if not is_digits(text) or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {text[:20]!r}")
    return int(text)


def health_port(value: object) -> tuple[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return "0.0.0.0", _port(str(_short(value)))
    address, _, port = string(value).rpartition(":")
    return address.strip("[]") or "0.0.0.0", _port(port)


def backoff(value: object) -> Backoff:
    if not isinstance(value, dict):
        raise _expected("a table {threshold, min_delay, max_delay}", value)
    for key in value:
        if key not in BACKOFF_KEYS:
            raise Invalid((key,), f"unknown key{did_you_mean(key, BACKOFF_KEYS)}")
    default = Backoff()
    backoff = Backoff(
        threshold=get(value, "threshold", duration, default.threshold),
        min_delay=get(value, "min_delay", duration, default.min_delay),
        max_delay=get(value, "max_delay", duration, default.max_delay),
    )
    if backoff.min_delay > backoff.max_delay:
        raise Invalid(("max_delay",), "is below min_delay")
    return backoff


def cron(value: object) -> str:
    text = nonempty(value)
    check_cron(text)
    return " ".join(text.split())


def user(value: object) -> str:
    name = _account(value)
    if not name.isdigit():
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise ValueError(f"unknown user {name!r} (not in the user database)") from None
    return name


def group(value: object) -> str:
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
    name = nonempty(value)
    if name.startswith("-") or (is_digits(name) and read_digits(name) >= 2**32 - 1):
        raise ValueError(f"bad id {name!r}")
    if not name.isascii():
        raise ValueError(f"expected an ASCII name or a number, got {name!r}")
    return name


def env_table(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _expected('a table (env = { NAME = "value" })', value)
    env: dict[str, str] = {}
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"bad variable name {key!r}")
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        try:
            env[key] = string(item)
        except ValueError as error:
            raise Invalid((key,), str(error)) from None
    return env


def json_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise _expected("an array", value)
    return [_json_value(item) for item in value]


def json_table(value: object) -> dict[str, object]:
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
