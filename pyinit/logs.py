"""pyinit's own log lines on stderr: text by default, JSON lines on request.

Text lines are written straight to fd 2 (`pyinit: info: started ...`): the
`logging` package costs ~10 ms of imports, most of pyinit's start-up
budget, and a line-at-a-time writer needs none of it. JSON goes through
python-json-logger, imported only when asked for. Both take the same call:
`log.info(message, event=..., pid=...)`; the fields appear in JSON records
(time, level, message always) and are left out of text lines, whose message
already says what matters.

Nothing here may raise into the caller: a closed or full stderr must not
take PID 1 down.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Log:
    """Leveled event logger; see the module docstring."""

    def __init__(self, level: str = "info", fmt: str = "text") -> None:
        self.threshold = LEVELS[level]
        self._json = _json_logger() if fmt == "json" else None

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def debug(self, message: str, **fields: object) -> None:
        self._emit("debug", message, fields)

    def info(self, message: str, **fields: object) -> None:
        self._emit("info", message, fields)

    def warning(self, message: str, **fields: object) -> None:
        self._emit("warning", message, fields)

    def error(self, message: str, **fields: object) -> None:
        self._emit("error", message, fields)

    def exception(self, message: str, **fields: object) -> None:
        """An error with the current exception's traceback (for our own bugs)."""
        import traceback

        fields["traceback"] = traceback.format_exc().rstrip()
        self._emit("error", message, fields)

    def _emit(self, level: str, message: str, fields: dict[str, object]) -> None:
        if LEVELS[level] < self.threshold:
            return
        try:
            if self._json is not None:
                self._json.log(LEVELS[level], message, extra=fields)
                return
            line = f"pyinit: {level}: {message}\n"
            if "traceback" in fields:
                line += f"{fields['traceback']}\n"
            os.write(2, line.encode("utf-8", "backslashreplace"))
        except Exception:  # noqa: S110 - see the module docstring
            pass


def _json_logger() -> logging.Logger:
    """A `logging.Logger` writing python-json-logger records to stderr."""
    import logging

    try:  # python-json-logger >= 3.1
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:  # older releases
        from pythonjsonlogger.jsonlogger import JsonFormatter  # type: ignore[attr-defined]

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(message)s",
            rename_fields={"levelname": "level"},
            timestamp="time",
        )
    )
    logger = logging.getLogger("pyinit")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def fatal(message: str) -> None:
    """The one-line usage/config error format: `pyinit: error: ...`."""
    try:
        os.write(2, f"pyinit: error: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass
