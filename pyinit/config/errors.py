"""What the configuration layer raises, and where a service was written.

Shared by both forms (config_compact, config_toml) and the cross-service
checks in `pyinit.config`, which re-exports `ConfigError`. A converter deep
inside a table only knows the key path that failed (`Invalid`); the form
that read the text knows its `Source` (variable + entry, or file:line) and
turns the two into one `ConfigError` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pyinit.config.model import ServiceSpec


class ConfigError(ValueError):
    """A configuration error; the message is one line naming the entry or file:line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


class Invalid(Exception):
    """A bad value at `path` (keys inside a service or [pyinit] table); fronts add the source."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class Source(Protocol):
    """Where a service was written, to word its errors: a compact entry or a file table."""

    @property
    def origin(self) -> str: ...

    def error(self, path: tuple[str, ...], message: str) -> ConfigError: ...


@dataclass(frozen=True)
class Parsed:
    spec: ServiceSpec
    source: Source
    keys: frozenset[str] = frozenset()  # the keys the user wrote (defaults may depend on it)


def did_you_mean(word: str, choices: frozenset[str]) -> str:
    import difflib  # only on the error path: it costs ~6 ms to import

    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
