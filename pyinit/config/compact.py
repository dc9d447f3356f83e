"""The PYINIT_SERVICES grammar: `NAME[OPTIONS]: TARGET` entries -> parsed services.

    web: gunicorn -b :8000 app:app; worker[3]: python -m myapp.worker
    web[after=migrate, ready=tcp:8000]: gunicorn app:app

Entries are split on `;` and newlines outside quotes; empty entries (`a: x;;
b: y`, a trailing `;`, blank lines) are skipped and not counted when entries
are numbered. Each entry is lexed into the TOML-shaped table tomllib would
give for `[services.NAME]` (option text -> ints, bools, lists, strings; TARGET
-> `cmd` or `class`) and handed to config_values.build_service, so the rules
on values are the TOML form's. Errors name the entry:

    PYINIT_SERVICES entry 2 (web): unknown option 'worker' (did you mean 'workers'?)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from pyinit.config.build import SERVICE_KEYS, build_service
from pyinit.config.convert import NAME
from pyinit.config.errors import ConfigError, Invalid, Parsed, did_you_mean
from pyinit.core.values import is_digits, parse_bool, read_digits


@dataclass(frozen=True)
class _EntrySource:
    """Entry `number` of `variable`; `name` labels messages when the entry has a valid one."""

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


def parse_compact(text: str, variable: str) -> list[Parsed]:
    """Every entry of `text` (the value of `variable`), in order; names must be unique."""
    parsed: list[Parsed] = []
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
    return name if NAME.fullmatch(name) else None


def _parse_entry(entry: str, number: int, variable: str) -> Parsed:
    """`NAME[OPTIONS]: TARGET` -> a ServiceSpec."""
    source = _EntrySource(variable, number, _name_of(entry))
    end = min((i for i in (entry.find("["), entry.find(":")) if i >= 0), default=-1)
    if end < 0:
        raise source.error((), f"expected NAME: COMMAND or NAME[OPTIONS]: COMMAND, got {entry!r}")
    name = entry[:end].strip()
    if not name:
        raise source.error((), f"missing service name before {entry[end]!r} in {entry!r}")
    if not NAME.fullmatch(name):
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
        spec = build_service(name, raw, source.origin)
    except Invalid as error:
        raise source.error(error.path, error.message) from None
    return Parsed(spec, source)


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
        if not sep and is_digits(key):
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
        raise source.error((), f"unknown option {key!r}{did_you_mean(key, SERVICE_KEYS)}")


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
            return read_digits(value)
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
