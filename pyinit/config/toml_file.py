"""The TOML file (--config / PYINIT_CONFIG): `[pyinit]` and `[services.NAME]` -> parsed services.

tomllib gives the tables; config_values.build_service and build_settings
check and convert them, as they do for the compact form. Errors name the file
and line:

    /etc/pyinit.toml:14: services.web.grace: expected seconds (e.g. 10, 2.5, 500ms, 1m), ...

tomllib does not report where a key was written, so `_KeyLines` scans the
text once for table headers and `key =` lines and maps each dotted key path
to its line; an error on a value inside an inline table points at the line
of the key that holds the table. tomllib's own syntax errors are reworded to
the same `PATH:LINE:` shape. tomllib itself is imported only when a file is
read (the single-command path never pays for it).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from pyinit.config.build import SERVICE_KEYS, SETTINGS_KEYS, build_service, build_settings
from pyinit.config.convert import NAME, type_name
from pyinit.config.errors import ConfigError, Invalid, Parsed, did_you_mean
from pyinit.config.model import Settings

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


@dataclass(frozen=True)
class _FileSource:
    """A table of the file at `path`; errors give the line of the key they are about."""

    path: str
    lines: _KeyLines
    table: tuple[str, ...]  # ("services", name) or ("pyinit",)

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.lines.line_of(self.table)}"

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        full = self.table + path
        return ConfigError(f"{self.path}:{self.lines.line_of(full)}: {_dotted(full)}: {message}")


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if _BARE_KEY.fullmatch(p) else _quote(p) for p in path)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Largest configuration file read. A real one is a few KiB; the cap keeps a
#: mistaken path (a log, a disk image) from costing PID 1 seconds and memory.
MAX_FILE_SIZE = 1024 * 1024


def read_file(path: str) -> str:
    """The file's text, or a ConfigError naming the path.

    Only a regular file of at most MAX_FILE_SIZE bytes is read. O_NONBLOCK
    keeps open() from waiting for a writer when the path is a FIFO (that hung
    PID 1), and fstat on the open descriptor judges the file actually opened,
    so a path swapped after a check cannot slip a device such as /dev/zero in.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        data = _read_regular(fd, path)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None


def _read_regular(fd: int, path: str) -> bytes:
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: cannot read: Is a directory (expected a TOML file)")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file (a FIFO, a device or a socket)")
    too_big = f"{path}: larger than {MAX_FILE_SIZE // 1024 // 1024} MiB: not a configuration file"
    if info.st_size > MAX_FILE_SIZE:
        raise ConfigError(too_big)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:  # the file may grow while we read: never past the cap
            chunk = os.read(fd, MAX_FILE_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_SIZE:
                raise ConfigError(too_big)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    return b"".join(chunks)


_TOML_ERROR = re.compile(r"^(?P<msg>.*?) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def parse_toml(text: str, path: str) -> tuple[Settings, list[Parsed]]:
    """The [pyinit] settings and every [services.NAME] table, in file order."""
    import tomllib  # ~2 ms, only paid when there is a file (PYINIT_SERVICES needs none)

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(_reword_toml_error(str(error), text, path)) from None
    except ValueError as error:  # int() of an integer over 4300 digits
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise ConfigError(f"{path}: invalid TOML: values nested too deeply") from None
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


def _file_service(name: str, table: object, source: _FileSource) -> Parsed:
    if not NAME.fullmatch(name):
        raise source.error((), "bad service name: use letters, digits, '_', '-', '.'")
    if not isinstance(table, dict):
        raise source.error((), f"expected a table ([services.{name}]), got {type_name(table)}")
    for key in table:
        if key not in SERVICE_KEYS:
            raise source.error((key,), f"unknown key{did_you_mean(key, SERVICE_KEYS)}")
    try:
        spec = build_service(name, table, source.origin)
    except Invalid as error:
        raise source.error(error.path, error.message) from None
    return Parsed(spec, source)


def _settings(table: object, source: _FileSource) -> Settings:
    if not isinstance(table, dict):
        raise source.error((), f"expected a table, got {type_name(table)}")
    for key in table:
        if key not in SETTINGS_KEYS:
            raise source.error((key,), f"unknown key{did_you_mean(key, SETTINGS_KEYS)}")
    try:
        return build_settings(table)
    except Invalid as error:
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
