"""Text -> services model: the PYINIT_SERVICES compact form and the TOML file.

Both forms end in the same place. The compact form is lexed into the same
shape tomllib gives for a `[services.NAME]` table (strings, ints, bools,
lists), and one builder, `_build_service`, turns such a table into a
`ServiceSpec`, so a rule is written once and holds in both forms.

Every error is a `ConfigError` whose one-line message names its source:

    PYINIT_SERVICES entry 2 (web): unknown option 'worker' (did you mean 'workers'?)
    /etc/pyinit.toml:14: services.web.grace: expected seconds (e.g. 10, 2.5, 500ms, 1m), ...

tomllib does not report where a key was written, so `_KeyLines` scans the
text once for table headers and `key =` lines and maps each dotted key path
to its line; an error on a value inside an inline table points at the line
of the key that holds the table. Nothing is skipped silently, apart from
empty entries (`a: x;; b: y`, a trailing `;`, blank lines), which are not
counted when entries are numbered.

Decisions where SPEC.md is silent (README/--check users see them as errors):
- oneshot and periodic services run one process: `workers` must be 0 or 1.
- `oneshot` and `every`/`cron` exclude each other; `restart = "always"` is
  refused for both (a run would never finish); their default is `never`.
- `after` may name services and oneshots, not periodic jobs (a periodic job
  is never "ready" in a sense another service could wait for).
- `user`/`group` are names that must exist (pwd/grp), or numeric ids that
  need not (as `docker run --user 1001`).
- cron takes exactly the 5 classic fields (see services_model.check_cron).
- `args`/`kwargs` only with `class`, and only JSON-shaped values (no TOML
  dates): they travel to a fresh interpreter.
- `ready = "tcp:PORT"` probes 127.0.0.1; `tcp:HOST:PORT` names the host.
- `[pyinit]` holds grace, log_format, log_level, ctl_socket, health_port;
  signal rewriting and exit remapping stay with the flags/variables, since
  they are about COMMAND.
"""

from __future__ import annotations

import grp
import math
import pwd
import re
import shlex
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from pyinit.cli import parse_bool, parse_seconds
from pyinit.services_model import (
    DEFAULT_PROBE_INTERVAL,
    DEFAULT_READY_TIMEOUT,
    DEFAULT_RESTART_WINDOW,
    Backoff,
    Config,
    OutputMode,
    Readiness,
    ReadinessKind,
    ReloadMode,
    RestartPolicy,
    Schedule,
    ServiceSpec,
    Settings,
    check_cron,
    find_cycle,
)
from pyinit.signals import parse_signal

VARIABLE = "PYINIT_SERVICES"

SERVICE_KEYS = frozenset(
    "cmd class workers args kwargs after ready ready_timeout watchdog restart backoff"
    " max_restarts restart_window grace stop_signal reload reload_signal user group cwd env"
    " output critical oneshot every cron run_on_start".split()
)
SETTINGS_KEYS = frozenset("grace log_format log_level ctl_socket health_port".split())
BACKOFF_KEYS = frozenset(("threshold", "min_delay", "max_delay"))
READY_TABLE_KEYS = frozenset(("exec", "interval"))

_NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CLASS_REF = re.compile(rf"{_DOTTED}:{_DOTTED}", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration error; the message is one line naming the entry or file:line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


class _Invalid(Exception):
    """A bad value at `path` (keys inside a service or [pyinit] table); fronts add the source."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# -- public entry points --------------------------------------------------------


def load(environ: Mapping[str, str], config_path: str | None = None) -> Config:
    """PYINIT_SERVICES and the TOML file (`config_path`, else PYINIT_CONFIG), merged and checked."""
    path = config_path or environ.get("PYINIT_CONFIG") or None
    toml_text = _read(path) if path else None
    return parse_config(environ.get(VARIABLE, ""), toml_text, path)


def parse_config(services_text: str, toml_text: str | None, path: str | None) -> Config:
    """Pure form of `load`: both texts in, one checked Config out."""
    parsed = _parse_compact(services_text, VARIABLE)
    settings = Settings()
    if toml_text is not None:
        settings, from_file = _parse_toml(toml_text, path or "<config>")
        parsed = _merge(parsed, from_file)
    _check_dependencies(parsed)
    services = MappingProxyType({p.spec.name: p.spec for p in parsed})
    return Config(settings=settings, services=services, path=path)


def parse_services(text: str, origin: str = VARIABLE) -> dict[str, ServiceSpec]:
    """The compact form alone, with its `after` names checked among themselves."""
    parsed = _parse_compact(text, origin)
    _check_dependencies(parsed)
    return {p.spec.name: p.spec for p in parsed}


def load_toml(text: str, path: str) -> tuple[Settings, dict[str, ServiceSpec]]:
    """The TOML form alone, with its `after` names checked among themselves."""
    settings, parsed = _parse_toml(text, path)
    _check_dependencies(parsed)
    return settings, {p.spec.name: p.spec for p in parsed}


# -- sources: where a service was written, to word its errors --------------------


@dataclass(frozen=True)
class _EntrySource:
    variable: str
    number: int
    name: str | None

    @property
    def origin(self) -> str:
        return f"{self.variable} entry {self.number}"

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        label = f" ({self.name})" if self.name else ""
        where = f"{'.'.join(path)}: " if path else ""
        return ConfigError(f"{self.origin}{label}: {where}{message}")


@dataclass(frozen=True)
class _FileSource:
    path: str
    lines: _KeyLines
    table: tuple[str, ...]  # ("services", name) or ("pyinit",)

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.lines.line_of(self.table)}"

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        full = self.table + path
        return ConfigError(f"{self.path}:{self.lines.line_of(full)}: {_dotted(full)}: {message}")


_Source = _EntrySource | _FileSource


@dataclass(frozen=True)
class _Parsed:
    spec: ServiceSpec
    source: _Source


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if _BARE_KEY.fullmatch(p) else _quote(p) for p in path)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the compact form -------------------------------------------------------------


def _parse_compact(text: str, variable: str) -> list[_Parsed]:
    parsed: list[_Parsed] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(_split_entries(text, variable), 1):
        item = _parse_entry(entry, number, variable)
        name = item.spec.name
        if name in seen:
            raise item.source.error((), f"service {name!r} is already entry {seen[name]}")
        seen[name] = number
        parsed.append(item)
    return parsed


def _split_entries(text: str, variable: str) -> list[str]:
    """Split on `;` and newlines outside quotes; a backslash escapes one character."""
    entries: list[str] = []
    current: list[str] = []
    quote: str | None = None
    chars = iter(text)
    for char in chars:
        if quote is None and char in ";\n":
            entries.append("".join(current))
            current = []
            continue
        current.append(char)
        if char == "\\" and quote != "'":
            current.append(next(chars, ""))
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    entries.append("".join(current))
    entries = [e.strip() for e in entries if e.strip()]
    if quote is not None:
        number = len(entries)
        raise _EntrySource(variable, number, _name_of(entries[-1])).error(
            (), f"unterminated {quote} quote"
        )
    return entries


def _name_of(entry: str) -> str | None:
    """The entry's NAME when it is a valid one (to label messages), else None."""
    end = min((i for i in (entry.find("["), entry.find(":")) if i >= 0), default=-1)
    name = entry[:end].strip() if end >= 0 else ""
    return name if _NAME.fullmatch(name) else None


def _parse_entry(entry: str, number: int, variable: str) -> _Parsed:
    """`NAME[OPTIONS]: TARGET` -> a ServiceSpec."""
    source = _EntrySource(variable, number, _name_of(entry))
    end = min((i for i in (entry.find("["), entry.find(":")) if i >= 0), default=-1)
    if end < 0:
        raise source.error((), f"expected NAME: COMMAND or NAME[OPTIONS]: COMMAND, got {entry!r}")
    name = entry[:end].strip()
    if not name:
        raise source.error((), f"missing service name before {entry[end]!r} in {entry!r}")
    if not _NAME.fullmatch(name):
        raise source.error((), f"bad service name {name!r}: use letters, digits, '_', '-', '.'")
    rest = entry[end:]
    raw: dict[str, object] = {}
    if rest.startswith("["):
        close = _closing_bracket(rest)
        if close < 0:
            raise source.error((), "missing ']' after the options")
        raw = _parse_options(rest[1:close], source)
        rest = rest[close + 1 :].lstrip()
        if not rest.startswith(":"):
            raise source.error((), f"expected ':' after the options, got {rest[:20]!r}")
    raw.update(_parse_target(rest[1:].strip(), source))
    try:
        spec = _build_service(name, raw, source.origin)
    except _Invalid as error:
        raise source.error(error.path, error.message) from None
    return _Parsed(spec, source)


def _closing_bracket(text: str) -> int:
    """Index of the `]` closing text[0]'s `[`; nested pairs allowed (`ready=tcp:[::1]:80`)."""
    quote: str | None = None
    depth = 0
    for index, char in enumerate(text):
        if quote is None and char in "[]":
            depth += 1 if char == "[" else -1
            if depth == 0:
                return index
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    return -1


def _parse_target(target: str, source: _EntrySource) -> dict[str, object]:
    if not target:
        raise source.error((), "missing command after ':'")
    if target.startswith("py:"):
        return {"class": target[3:].strip()}
    try:
        argv = shlex.split(target)
    except ValueError as error:
        raise source.error((), f"command {target!r}: {str(error).lower()}") from None
    if not argv:
        raise source.error((), "missing command after ':'")
    return {"cmd": argv}


# Option value kinds in the compact form: how its text becomes a TOML-shaped value.
_INT_OPTIONS = frozenset(("workers", "max_restarts"))
_BOOL_OPTIONS = frozenset(("critical", "oneshot", "run_on_start"))
_TOML_ONLY = frozenset(("env", "backoff", "args", "kwargs"))


def _parse_options(text: str, source: _EntrySource) -> dict[str, object]:
    raw: dict[str, object] = {}
    if not text.strip():
        return raw
    for item in _split_commas(text):
        item = item.strip()
        if not item:
            raise source.error((), f"empty option in [{text}]")
        key, sep, value = item.partition("=")
        key, has_value = key.strip(), bool(sep)
        if not sep and _DIGITS.fullmatch(key):
            key, value, has_value = "workers", key, True  # `web[3]`
        _check_option_key(key, source)
        if key in raw:
            raise source.error((), f"option {key!r} given twice")
        raw[key] = _option_value(key, has_value, value.strip(), source)
    return raw


def _split_commas(text: str) -> Iterator[str]:
    start, quote = 0, None
    for index, char in enumerate(text):
        if quote is None and char == ",":
            yield text[start:index]
            start = index + 1
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    yield text[start:]


def _check_option_key(key: str, source: _EntrySource) -> None:
    if key in ("cmd", "class"):
        raise source.error((), f"{key!r} is not an option: the command goes after ':'")
    if key in _TOML_ONLY:
        raise source.error((), f"option {key!r} exists only in the TOML file (--config)")
    if key not in SERVICE_KEYS:
        raise source.error((), f"unknown option {key!r}{_did_you_mean(key, SERVICE_KEYS)}")


def _option_value(key: str, has_value: bool, text: str, source: _EntrySource) -> object:
    """Option text -> the value TOML would hold for the key."""
    if not has_value:
        if key in _BOOL_OPTIONS:
            return True
        raise source.error((), f"option {key!r} needs a value ({key}=...)")
    try:
        value = _unquote(text)
    except ValueError as error:
        raise source.error((key,), str(error)) from None
    if not value:
        raise source.error((key,), "empty value")
    try:
        if key in _INT_OPTIONS:
            return _ascii_int(value)
        if key in _BOOL_OPTIONS:
            return parse_bool(value)
    except ValueError as error:
        raise source.error((key,), str(error)) from None
    if key == "after":
        return [name.strip() for name in value.split("+")]
    if key == "ready" and value.startswith("exec"):
        raise source.error(
            (key,), "exec readiness exists only in the TOML file: ready = {exec = [...]}"
        )
    return value


def _unquote(text: str) -> str:
    if not text or text[0] not in "'\"":
        return text
    quote = text[0]
    if len(text) < 2 or text[-1] != quote:
        raise ValueError(f"unterminated {quote} quote in {text!r}")
    inner = text[1:-1]
    if quote == '"':
        inner = re.sub(r"\\(.)", r"\1", inner)
    return inner


def _ascii_int(text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"expected a whole number (0 or more), got {text!r}")
    return int(text)


def _did_you_mean(word: str, choices: frozenset[str]) -> str:
    import difflib  # only on the error path: it costs ~6 ms to import

    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- the TOML form ----------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None


_TOML_ERROR = re.compile(r"^(?P<msg>.*?) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def _parse_toml(text: str, path: str) -> tuple[Settings, list[_Parsed]]:
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(_reword_toml_error(str(error), text, path)) from None
    lines = _KeyLines(text)
    for key in document:
        if key not in ("pyinit", "services"):
            raise ConfigError(
                f"{path}:{lines.line_of((key,))}: {_dotted((key,))}: unknown key "
                "(the file has a [pyinit] table and [services.NAME] tables)"
            )
    settings = Settings()
    if "pyinit" in document:
        table_source = _FileSource(path, lines, ("pyinit",))
        settings = _settings(document["pyinit"], table_source)
    services = document.get("services", {})
    if not isinstance(services, dict):
        raise _FileSource(path, lines, ("services",)).error((), "expected [services.NAME] tables")
    return settings, [
        _file_service(name, table, _FileSource(path, lines, ("services", name)))
        for name, table in services.items()
    ]


def _reword_toml_error(message: str, text: str, path: str) -> str:
    """tomllib's `Invalid value (at line 3, column 7)` -> `PATH:3: invalid TOML: ...`."""
    found = _TOML_ERROR.match(message)
    if found:
        detail = found["msg"][:1].lower() + found["msg"][1:]
        return f"{path}:{found['line']}: invalid TOML: {detail} (column {found['col']})"
    if message.endswith("(at end of document)"):
        detail = message[: -len(" (at end of document)")]
        last = text.count("\n") + (0 if text.endswith("\n") else 1)
        return f"{path}:{max(last, 1)}: invalid TOML: {detail[:1].lower()}{detail[1:]} (at the end)"
    return f"{path}: invalid TOML: {message}"


def _file_service(name: str, table: object, source: _FileSource) -> _Parsed:
    if not _NAME.fullmatch(name):
        raise source.error((), "bad service name: use letters, digits, '_', '-', '.'")
    if not isinstance(table, dict):
        raise source.error((), f"expected a table ([services.{name}]), got {_type_name(table)}")
    for key in table:
        if key not in SERVICE_KEYS:
            raise source.error((key,), f"unknown key{_did_you_mean(key, SERVICE_KEYS)}")
    try:
        spec = _build_service(name, table, source.origin)
    except _Invalid as error:
        raise source.error(error.path, error.message) from None
    return _Parsed(spec, source)


def _settings(table: object, source: _FileSource) -> Settings:
    if not isinstance(table, dict):
        raise source.error((), f"expected a table, got {_type_name(table)}")
    for key in table:
        if key not in SETTINGS_KEYS:
            raise source.error((key,), f"unknown key{_did_you_mean(key, SETTINGS_KEYS)}")
    try:
        return Settings(
            grace=_get(table, "grace", _duration, None),
            log_format=_get(table, "log_format", _choice("text", "json"), None),
            log_level=_get(table, "log_level", _choice("debug", "info", "warning", "error"), None),
            ctl_socket=_get(table, "ctl_socket", _path, None),
            health_port=_get(table, "health_port", _health_port, None),
        )
    except _Invalid as error:
        raise source.error(error.path, error.message) from None


class _KeyLines:
    """Dotted key path -> the line (1-based) where it is defined in a TOML text.

    A small scanner, enough for text tomllib has accepted: it follows table
    headers and `key =` lines, and skips strings, comments and values that
    span lines (arrays, multi-line strings) so their content is never taken
    for a key.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        state = _ValueState()
        for number, line in enumerate(text.split("\n"), 1):
            if state.depth or state.multiline:
                state.scan(line, 0)
                continue
            stripped = line.lstrip()
            if stripped.startswith("["):
                keys, _ = _key_path(stripped, 2 if stripped.startswith("[[") else 1)
                if keys:
                    table = keys
                    self._lines.setdefault(table, number)
                continue
            keys, index = _key_path(stripped, 0)
            if keys and stripped[index : index + 1] == "=":
                self._lines.setdefault(table + keys, number)
                state.scan(stripped, index + 1)

    def line_of(self, path: tuple[str, ...]) -> int | str:
        """The line of `path`, else of its nearest enclosing key or table; '?' if none."""
        for end in range(len(path), 0, -1):
            if path[:end] in self._lines:
                return self._lines[path[:end]]
        inside = [line for key, line in self._lines.items() if key[: len(path)] == path]
        return min(inside, default="?")  # `[a.b]` defines a without a line of its own


def _key_path(text: str, index: int) -> tuple[tuple[str, ...], int]:
    """Parse `a."b c".d` from text[index:] -> (parts, index after it and its spaces)."""
    parts: list[str] = []
    while True:
        while index < len(text) and text[index] in " \t":
            index += 1
        if index < len(text) and text[index] in "\"'":
            quote = text[index]
            close = index + 1
            while close < len(text) and text[close] != quote:
                close += 2 if quote == '"' and text[close] == "\\" else 1
            part = text[index + 1 : close]
            if quote == '"':
                part = _unescape_basic(part)
            index = close + 1
        else:
            found = _BARE_KEY.match(text, index)
            if not found:
                return (), index
            part, index = found.group(), found.end()
        parts.append(part)
        while index < len(text) and text[index] in " \t":
            index += 1
        if index < len(text) and text[index] == ".":
            index += 1
            continue
        return tuple(parts), index


def _unescape_basic(text: str) -> str:
    try:
        return str(text.encode("latin-1", "backslashreplace").decode("unicode_escape"))
    except (UnicodeDecodeError, UnicodeEncodeError):
        return text


class _ValueState:
    """Bracket depth and multi-line string state while scanning TOML values."""

    def __init__(self) -> None:
        self.depth = 0
        self.multiline: str | None = None

    def scan(self, line: str, index: int) -> None:
        while index < len(line):
            if self.multiline is not None:
                close = line.find(self.multiline, index)
                if close < 0:
                    return
                self.multiline, index = None, close + 3
                continue
            char = line[index]
            if char == "#":
                return
            if line.startswith('"""', index) or line.startswith("'''", index):
                self.multiline, index = line[index : index + 3], index + 3
            elif char in "\"'":
                index = self._skip_string(line, index)
            else:
                self.depth += char in "[{"
                self.depth -= char in "]}"
                index += 1

    @staticmethod
    def _skip_string(line: str, index: int) -> int:
        quote, index = line[index], index + 1
        while index < len(line) and line[index] != quote:
            index += 2 if quote == '"' and line[index] == "\\" else 1
        return index + 1


# -- one builder for both forms: a TOML-shaped table -> ServiceSpec ---------------


def _build_service(name: str, raw: Mapping[str, object], origin: str) -> ServiceSpec:
    """Check and convert one service's keys; raises _Invalid naming the key."""
    command, py_class = _target(raw)
    oneshot = _get(raw, "oneshot", _bool, False)
    schedule = _schedule(raw)
    if oneshot and schedule is not None:
        key = "every" if "every" in raw else "cron"
        raise _Invalid((key,), "a oneshot cannot also be periodic: use one or the other")
    single = oneshot or schedule is not None
    kind = "a oneshot" if oneshot else "a periodic job"
    restart = _get(raw, "restart", _enum(RestartPolicy), None)
    if restart is None:
        restart = RestartPolicy.NEVER if single else RestartPolicy.ALWAYS
    elif single and restart is RestartPolicy.ALWAYS:
        raise _Invalid(("restart",), f"{kind} cannot restart always: use on-failure or never")
    workers = _get(raw, "workers", _count, 1)
    if single and workers > 1:
        raise _Invalid(("workers",), f"{kind} runs one process: workers must be 0 or 1")
    ready = _get(raw, "ready", _readiness, Readiness())
    watchdog = _get(raw, "watchdog", _positive_duration, None)
    if watchdog is not None and ready.kind is not ReadinessKind.NOTIFY:
        raise _Invalid(("watchdog",), 'needs ready = "notify" (WATCHDOG=1 comes over it)')
    reload = _get(raw, "reload", _enum(ReloadMode), ReloadMode.SIGNAL)
    if "reload_signal" in raw and reload is not ReloadMode.SIGNAL:
        raise _Invalid(("reload_signal",), f'needs reload = "signal", not {reload.value!r}')
    if py_class is None and ("args" in raw or "kwargs" in raw):
        key = "args" if "args" in raw else "kwargs"
        raise _Invalid((key,), "applies only to class services; put a command's arguments in cmd")
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
        max_restarts=_get(raw, "max_restarts", _count, 0),
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
        origin=origin,
    )


def _get(raw: Mapping[str, object], key: str, convert: Callable[[object], T], default: T) -> T:
    """raw[key] converted, or default; an error inside is tagged with the key."""
    if key not in raw:
        return default
    try:
        return convert(raw[key])
    except _Invalid as error:
        raise _Invalid((key, *error.path), error.message) from None
    except ValueError as error:
        raise _Invalid((key,), str(error)) from None


def _target(raw: Mapping[str, object]) -> tuple[tuple[str, ...] | None, str | None]:
    if "cmd" in raw and "class" in raw:
        raise _Invalid(("class",), "cmd and class both given: a service runs one or the other")
    if "cmd" in raw:
        return _get(raw, "cmd", _command, None), None
    if "class" in raw:
        return None, _get(raw, "class", _class_ref, "")
    raise _Invalid((), 'needs cmd (a command) or class ("module:Class")')


def _schedule(raw: Mapping[str, object]) -> Schedule | None:
    if "every" in raw and "cron" in raw:
        raise _Invalid(("cron",), "every and cron both given: use one or the other")
    every = _get(raw, "every", _positive_duration, None)
    cron = _get(raw, "cron", _cron, None)
    run_on_start = _get(raw, "run_on_start", _bool, False)
    if every is None and cron is None:
        if "run_on_start" in raw:
            raise _Invalid(("run_on_start",), "applies only with every or cron")
        return None
    return Schedule(every=every, cron=cron, run_on_start=run_on_start)


# -- value converters: a TOML value -> a model value, or ValueError ---------------


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "an integer", float: "a float", list: "an array"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a table" if isinstance(value, dict) else "a date or time"


def _expected(what: str, value: object) -> ValueError:
    plain = isinstance(value, str | int | float) and not isinstance(value, bool)
    shown = repr(value) if plain else _type_name(value)
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


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _expected("a whole number, 0 or more", value)
    return value


def _duration(value: object) -> float:
    if isinstance(value, str):
        seconds = parse_seconds(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not 0 <= seconds < math.inf:
            raise _expected("a duration of 0 or more seconds", value)
    else:
        raise _expected('a duration (seconds, or a string like "500ms", "30s", "1h")', value)
    return seconds


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise _expected("a duration above 0", value)
    return seconds


def _signal(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return parse_signal(_nonempty(value))


def _choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = _string(value)
        if text.lower() not in choices:
            raise _expected(f"one of {', '.join(choices)}", value)
        return text.lower()

    return convert


E = TypeVar("E", RestartPolicy, OutputMode, ReloadMode)


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
        if not _NAME.fullmatch(name):
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
            raise _Invalid((str(key),), f"unknown key{_did_you_mean(str(key), READY_TABLE_KEYS)}")
    if "exec" not in table:
        raise ValueError("a readiness table needs exec = [...]")
    raw = {str(k): v for k, v in table.items()}
    return Readiness(
        kind=ReadinessKind.EXEC,
        command=_get(raw, "exec", _command, ()),
        interval=_get(raw, "interval", _positive_duration, DEFAULT_PROBE_INTERVAL),
    )


def _port(text: str) -> int:
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


def _health_port(value: object) -> tuple[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return "0.0.0.0", _port(str(value))
    address, _, port = _string(value).rpartition(":")
    return address.strip("[]") or "0.0.0.0", _port(port)


def _backoff(value: object) -> Backoff:
    if not isinstance(value, dict):
        raise _expected("a table {threshold, min_delay, max_delay}", value)
    for key in value:
        if key not in BACKOFF_KEYS:
            raise _Invalid((key,), f"unknown key{_did_you_mean(key, BACKOFF_KEYS)}")
    default = Backoff()
    backoff = Backoff(
        threshold=_get(value, "threshold", _duration, default.threshold),
        min_delay=_get(value, "min_delay", _duration, default.min_delay),
        max_delay=_get(value, "max_delay", _duration, default.max_delay),
    )
    if backoff.min_delay > backoff.max_delay:
        raise _Invalid(("max_delay",), "is below min_delay")
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
        value = str(value)
    name = _nonempty(value)
    if name.startswith("-") or (_DIGITS.fullmatch(name) and int(name) >= 2**32 - 1):
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
            raise _Invalid((key,), str(error)) from None
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
        raise ValueError(f"{_type_name(value)} cannot be passed to a worker process")
    return value


# -- across services: names in both forms, `after` ---------------------------------


def _merge(first: list[_Parsed], second: list[_Parsed]) -> list[_Parsed]:
    """PYINIT_SERVICES entries, then the file's services; a name in both is an error."""
    where = {p.spec.name: p.source for p in first}
    for item in second:
        other = where.get(item.spec.name)
        if other is not None:
            message = f"service {item.spec.name!r} is also defined at {item.source.origin}"
            raise other.error((), message)
    return first + second


def _check_dependencies(parsed: list[_Parsed]) -> None:
    """Every `after` name exists and is not periodic, and there is no cycle."""
    specs = {p.spec.name: p.spec for p in parsed}
    for item in parsed:
        for name in item.spec.after:
            target = specs.get(name)
            if target is None:
                hint = _did_you_mean(name, frozenset(specs))
                raise item.source.error(("after",), f"unknown service {name!r}{hint}")
            if target.schedule is not None:
                message = f"{name!r} is a periodic job: only services and oneshots can be awaited"
                raise item.source.error(("after",), message)
    cycle = find_cycle({name: spec.after for name, spec in specs.items()})
    if cycle:
        source = next(p.source for p in parsed if p.spec.name == cycle[0])
        raise source.error(("after",), f"dependency cycle: {' -> '.join(cycle)}")
