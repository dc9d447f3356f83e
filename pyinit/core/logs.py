"""pyinit's own log lines on stderr: text by default, JSON lines or logfmt on request.

Text lines are written straight to fd 2 (`pyinit: info: started ...`): the
`logging` package costs ~10 ms of imports, most of pyinit's start-up
budget, and a line-at-a-time writer needs none of it. JSON records are
formatted by python-json-logger, imported only when asked for; logfmt needs
no import at all. All take the same call: `log.info(message, event=...,
pid=...)`; the fields appear in JSON and logfmt records and are left out of
text lines, whose message already says what matters. A newline in a text
message is written as `\\n`, so user text cannot forge a second line (issue
7, item 21).

One schema (issue 11) for pyinit's lines and for the lines of services run
with `output = "json"` or `"logfmt"` (supervise/output.py): every record
starts with `RECORD_KEYS` -- time (RFC 3339, UTC, milliseconds, `Z`), level,
source (`pyinit`, or `service[worker]` for a service's lines and for the
Python worker runner's own), stream (stdout or stderr), message -- then the
fields that apply (service, worker, pid, event, exit_code, signal, delay...).
`timestamp()` and `logfmt()` below are that schema's one definition.

Nothing here may raise into the caller or block the loop: a closed or full
stderr must not take PID 1 down nor stop it reaping (item 2). Writes go
through a `Sink`: a non-blocking way to write to fd 1 or 2 that leaves the
file description the children share as it is (setting O_NONBLOCK on it
would make *their* writes fail with EAGAIN). A line that cannot be written
now is dropped and counted, and the count is said once writing works again.
"""

import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.core.loop import Loop

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
FORMATS = ("text", "json", "logfmt")
#: The keys every JSON or logfmt record starts with, pyinit's and services' alike.
RECORD_KEYS = ("time", "level", "source", "stream", "message")
_DEV_NULL = posix.makedev(1, 3)
# File types from st_mode (stat.S_IFMT and friends, without importing stat
# or _stat: ~30 us of start-up for three numbers).
_S_IFMT, _S_IFIFO, _S_IFCHR = 0o170000, 0o010000, 0o020000
_UNSUPPORTED = frozenset({95, 22, 29})  # EOPNOTSUPP, EINVAL, ESPIPE: no RWF_NOWAIT here


class Sink:
    """Non-blocking writes to one of our output fds; see the module docstring.

    How, in order of preference:
    * a FIFO or a terminal is opened again through /proc/self/fd/N with
      O_NONBLOCK: a new file description of the same pipe or tty, ours alone;
    * a pipe we may not reopen (owned by another user): pwritev2 with
      RWF_NOWAIT (Linux 6.x honours it on pipes);
    * anything else (a regular file, a socket) is written as is.
    `write()` returns how much was written, or None when it would block.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd  # what to poll for writability
        self._nowait = False
        self._waiters: list[Callable[[], None]] = []
        self._loop: Loop | None = None
        try:
            info = posix.fstat(fd)
        except OSError:
            return
        mode = info.st_mode
        kind = mode & _S_IFMT
        if info.st_rdev == _DEV_NULL and kind == _S_IFCHR:
            return  # never blocks: no descriptor spent on it
        if kind in (_S_IFIFO, _S_IFCHR):
            flags = posix.O_WRONLY | posix.O_NONBLOCK | posix.O_CLOEXEC | posix.O_NOCTTY
            try:
                self.fd = posix.open(f"/proc/self/fd/{fd}", flags)
            except OSError:
                self._nowait = kind == _S_IFIFO

    def write(self, data: bytes | memoryview) -> int | None:
        """Write what fits now; None if nothing does. Raises OSError (EPIPE...)."""
        try:
            if self._nowait:
                return posix.pwritev(self.fd, [data], -1, posix.RWF_NOWAIT)
            return posix.write(self.fd, data)
        except BlockingIOError:
            return None
        except BrokenPipeError:
            from pyinit.core.signals import note_own_sigpipe

            note_own_sigpipe()  # the SIGPIPE this raised is ours: not for the child
            raise
        except OSError as error:
            if self._nowait and error.errno in _UNSUPPORTED:
                self._nowait = False  # an older kernel: plain (blocking) writes
                return self.write(data)
            raise

    def when_writable(self, loop: "Loop", callback: "Callable[[], None]") -> None:
        """Call `callback` once, when the fd can take more (shared by all relays)."""
        self._waiters.append(callback)
        if self._loop is None:
            self._loop = loop
            loop.add_writer(self.fd, self._on_writable)

    def _on_writable(self) -> None:
        waiters, self._waiters = self._waiters, []
        if self._loop is not None:
            self._loop.remove_writer(self.fd)
            self._loop = None
        for callback in waiters:
            callback()


_sinks: "dict[int, Sink]" = {}


def sink(fd: int) -> "Sink":
    """The one Sink for our fd 1 or 2 (opened on first use, then shared)."""
    found = _sinks.get(fd)
    if found is None:
        found = _sinks[fd] = Sink(fd)
    return found


class Log:
    """Leveled event logger; see the module docstring."""

    def __init__(self, level: str = "info", fmt: str = "text", source: str = "pyinit") -> None:
        self.threshold = LEVELS[level]
        self.format = fmt if fmt in FORMATS else "text"
        self.source = source  # `pyinit`, or `service[worker]` in a Python worker
        self._json = _json_formatter() if fmt == "json" else None
        self._sink: Sink | None = None
        self.dropped = 0  # lines not written since the last one that was
        self._tail = b""  # the unwritten end of a line written in part

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
        """An error with the current exception's traceback (for our own bugs).

        Never raises: out of descriptors or memory, `import traceback` itself
        can fail inside the loop's error handler; the exception's repr is
        then logged instead.
        """
        try:
            fields["traceback"] = _traceback_text()
            self._emit("error", message, fields)
        except Exception:  # noqa: S110 - see the docstring
            pass

    def _emit(self, level: str, message: str, fields: dict[str, object]) -> None:
        if LEVELS[level] < self.threshold:
            return
        try:
            if self._json is not None:
                line = _json_line(self._json, level, self.source, message, fields)
            elif self.format == "logfmt":
                head = {"time": timestamp(time.time()), "level": level, "source": self.source}
                line = logfmt({**head, "stream": "stderr", "message": message, **fields})
            else:
                if "\n" in message or "\r" in message:
                    message = message.replace("\r", "\\r").replace("\n", "\\n")
                line = f"pyinit: {level}: {message}\n"
                if "traceback" in fields:
                    line += f"{fields['traceback']}\n"
            self.write_line(line)
        except Exception:  # noqa: S110 - see the module docstring
            pass

    def write_line(self, line: str) -> None:
        """Write one whole line to stderr now, or drop it (and count it)."""
        if not line.endswith("\n"):
            line += "\n"
        data = line.encode("utf-8", "backslashreplace")
        if self.dropped:
            notice = f"pyinit: warning: {self.dropped} log line(s) dropped: stderr was full\n"
            data = notice.encode() + data
        if self._sink is None:
            self._sink = sink(2)
        try:
            if self._tail and not self._write_tail():
                self.dropped += 1
                return
            written = self._sink.write(data)
        except OSError:
            self.dropped = 0  # stderr is gone for good (EPIPE, EBADF): no one to tell
            return
        if written is None:
            self.dropped += 1
            return
        self.dropped = 0
        self._tail = bytes(data[written:])

    def finish(self, wait: float = 0.5) -> None:
        """Before exiting: if lines were dropped, wait up to `wait` s for stderr
        to take the notice saying so (bounded: the exit must not hang)."""
        if self._sink is None or not (self.dropped or self._tail):
            return
        import select

        deadline = time.monotonic() + wait
        try:
            while self.dropped or self._tail:
                left = deadline - time.monotonic()
                poller = select.poll()
                poller.register(self._sink.fd, select.POLLOUT)
                if left <= 0 or not poller.poll(max(1, int(left * 1000))):
                    return
                count, self.dropped = self.dropped, 0
                if self._tail and not self._write_tail():
                    self.dropped = count
                elif count:
                    self.write_line(
                        f"pyinit: warning: {count} log line(s) dropped: stderr was full"
                    )
                    if self.dropped:  # not written after all: still `count` to tell
                        self.dropped = count
        except Exception:  # noqa: S110 - see the module docstring
            pass

    def _write_tail(self) -> bool:
        assert self._sink is not None
        written = self._sink.write(self._tail)
        if written is None:
            return False
        self._tail = self._tail[written:]
        return not self._tail


def _traceback_text() -> str:
    """The current exception's traceback, or at least its repr."""
    current = sys.exc_info()[1]
    try:
        import traceback

        return traceback.format_exc().rstrip()
    except Exception as error:
        return f"{current!r} (no traceback: {error!r})"


def timestamp(now: float) -> str:
    """`now` (time.time()) as RFC 3339 UTC with milliseconds: 2026-12-04T17:41:50.123Z."""
    whole = int(now)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{stamp}.{int((now - whole) * 1000):03d}Z"


def logfmt(fields: dict[str, object]) -> str:
    """One logfmt line (`key=value ...`, newline-terminated); None values are left out."""
    return " ".join(f"{k}={logfmt_value(v)}" for k, v in fields.items() if v is not None) + "\n"


_LOGFMT_QUOTED = frozenset(' ="\\')
_LOGFMT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def logfmt_value(value: object) -> str:
    """A value as logfmt writes it: bare when it can be, else in double quotes.

    The rules of go-logfmt, which most collectors follow: quote an empty
    value and one holding a space, `=`, `"` or a character that is not
    printable; inside quotes escape `"` and backslash, and write newline,
    return and tab as `\\n`, `\\r`, `\\t`, any other such character as `\\uXXXX`.
    So a value never spans two lines, whatever a child printed.
    """
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if text and text.isprintable() and not any(c in _LOGFMT_QUOTED for c in text):
        return text
    out = []
    for char in text:
        if char in _LOGFMT_ESCAPES:
            out.append(_LOGFMT_ESCAPES[char])
        elif not char.isprintable():
            code = ord(char)
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _json_formatter() -> object:
    """A python-json-logger formatter for our records: RECORD_KEYS first, then fields."""
    try:  # python-json-logger >= 3.1
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:  # older releases
        from pythonjsonlogger.jsonlogger import JsonFormatter  # type: ignore[attr-defined]

    return JsonFormatter(" ".join(f"%({key})s" for key in RECORD_KEYS), json_ensure_ascii=False)


def _json_line(
    formatter: object, level: str, source: str, message: str, fields: dict[str, object]
) -> str:
    import logging

    record = logging.makeLogRecord(
        {"name": "pyinit", "levelno": LEVELS[level], "levelname": level.upper(), "msg": message}
    )
    record.__dict__.update(
        time=timestamp(record.created), level=level, source=source, stream="stderr"
    )
    record.__dict__.update(fields)
    return formatter.format(record) + "\n"  # type: ignore[attr-defined, no-any-return]


def fatal(message: str) -> None:
    """The one-line usage/config error format: `pyinit: error: ...`."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    try:
        posix.write(2, f"pyinit: error: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass
