"""Text -> value, for every setting: durations, booleans, exit codes, counts, signals.

One place that the command line, the PYINIT_SERVICES compact form and the
TOML builders all use, so `10`, `2.5`, `500ms`, `true` and `TERM` mean the
same thing wherever a user writes them. Each parser returns the value or
raises ValueError with a message that names what was expected and quotes
what was given. On the single-command path, so no `re` here.
"""

from pyinit.core.signals import parse_signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_DIGITS", "is_digits", "parse_bool", "parse_choice", "parse_exit_code",
    "parse_seconds", "parse_signal", "read_digits",
]  # fmt: skip

#: Digits of any integer read from text; more is refused before int() parses it.
MAX_DIGITS = 12

_DURATION_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0))


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1 or 0 (true/false), got {text!r}")


def parse_seconds(text: str) -> float:
    """`10`, `2.5`, `500ms`, `30s`, `5m`, `1h`, `1d` -> seconds (>= 0)."""
    word = text.strip().lower()
    scale = 1.0
    for suffix, factor in _DURATION_UNITS:
        if word.endswith(suffix) and word[: -len(suffix)][-1:].isdigit():
            word, scale = word[: -len(suffix)], factor
            break
    try:
        value = float(word) * scale
    except ValueError:
        raise ValueError(f"expected seconds (e.g. 10, 2.5, 500ms, 1m), got {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also rejects nan
        raise ValueError(f"expected a duration of 0 or more seconds, got {text!r}")
    return value


def parse_exit_code(text: str) -> int:
    word = text.strip()
    if not is_digits(word) or not 0 <= read_digits(word) <= 255:
        raise ValueError(f"expected an exit status from 0 to 255, got {text!r}")
    return int(word)


def parse_choice(*choices: str) -> "Callable[[str], str]":
    """A parser that accepts one of `choices` (case-insensitive)."""

    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return word

    return parse


def is_digits(text: str) -> bool:
    """Only ASCII 0-9, at least one (str.isdigit also accepts '²' and '٣')."""
    return text.isascii() and text.isdigit()


def read_digits(text: str) -> int:
    """ASCII digits -> int; ValueError past MAX_DIGITS (int() of 10**5 digits is slow)."""
    if not is_digits(text):
        raise ValueError(f"expected a whole number (0 or more), got {text!r}")
    if len(text.lstrip("0")) > MAX_DIGITS:
        raise ValueError(f"number too large: {text[:MAX_DIGITS]}... ({len(text)} digits)")
    return int(text)
