"""Relays for `output = "prefix"` and `output = "json"`: child pipe -> our stdout/stderr.

`inherit` needs none of this: the child writes to pyinit's fds itself. In the
other modes each worker's stdout and stderr is a pipe whose read end is a
reader on the one event loop (STYLE rule 8: no threads in PID 1). Why it is
built this way:

* Whole lines only. Two workers writing to one stdout must not mix halves of
  lines, so partial lines are buffered across reads and each batch of whole
  lines goes out in one write. A line longer than 64 KiB (`MAX_LINE`) is
  emitted in 64 KiB pieces, each ended with a newline, so a child that never
  writes a newline cannot make PID 1 buffer without bound. (In json mode a
  piece boundary may cut a UTF-8 character; the halves become U+FFFD.)
* Reads never block (O_NONBLOCK, at most `READS_PER_WAKEUP` reads per wakeup,
  so one chatty child cannot starve the loop). Writes never block either
  (issue 7, item 2: a blocked write froze PID 1, no reaping, SIGTERM
  ignored): they go through a non-blocking `logs.Sink`. When our stdout is
  full, the relay keeps what it could not write, stops reading the child's
  pipe and waits for the sink to be writable (a writer on the loop). The
  child's pipe then fills and the child waits: the back-pressure it would
  get writing to stdout directly, while the loop goes on.
* A write error (EPIPE: nobody reads our stdout; EBADF) must not take PID 1
  down nor block the child: output is dropped from then on, but the pipe is
  still drained to the end. SIGPIPE is caught by pyinit (signals.py), so the
  write returns EPIPE instead of killing us.
* No line lost or cut at shutdown: at EOF the relay flushes a last partial
  line (adding the newline) and closes itself. `close()` does the same for
  the supervisor, which may not wait for EOF (a grandchild can hold the write
  end open forever): it reads what is in the pipe now, at most one pipe
  capacity, so a child still writing cannot keep it busy. If our stdout is
  full then, close() waits for it at most `CLOSE_FLUSH_SECONDS` per stall
  (shared by every relay of that stdout): a shutdown always finishes, and
  what could not be written is dropped.

Formats: prefix `web[0] | line` (the bytes pass through untouched); json one
object a line with the keys time (UTC, ISO 8601 with milliseconds), service,
worker, stream, message (the line decoded as UTF-8 with errors="replace").
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import time

from pyinit.config.model import OutputMode
from pyinit.core.logs import sink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.core.loop import Loop
    from pyinit.supervise.unit import Worker

MAX_LINE = 64 * 1024  # longer lines are emitted in pieces of this size
READ_SIZE = 64 * 1024  # Linux's default pipe capacity
READS_PER_WAKEUP = 16  # up to 1 MiB per wakeup, then let other readers run
CLOSE_FLUSH_SECONDS = 1.0  # how long close() may wait for a full stdout
_stalled_until: dict[int, float] = {}  # out fd -> end of the current close() wait


def make_pipe() -> tuple[int, int]:
    """A (read_fd, write_fd) pipe, both close-on-exec.

    The supervisor hands write_fd to the child as its stdout or stderr (Popen
    dup2()s it, which clears close-on-exec on the copy) and closes it here
    after the spawn, so EOF on read_fd means every writer has gone.
    """
    return os.pipe2(os.O_CLOEXEC)


class OutputRelay:
    """Copy one child stream to `out_fd` in whole lines; see the module docstring."""

    def __init__(
        self,
        loop: Loop,
        fd: int,
        *,
        service: str,
        worker: int,
        stream: str,
        mode: OutputMode,
        out_fd: int | None = None,
    ) -> None:
        if mode not in (OutputMode.PREFIX, OutputMode.JSON):
            raise ValueError(f"no relay for output mode {mode.value!r}")
        self._loop = loop
        self._fd = fd
        self._out_fd = out_fd if out_fd is not None else (2 if stream == "stderr" else 1)
        self._sink = sink(self._out_fd)
        self._pending = b""  # formatted output our stdout could not take yet
        self._reading = True
        self._partial = b""
        self.closed = False
        self.write_error: OSError | None = None  # set once writing failed; output is dropped
        if mode is OutputMode.PREFIX:
            self._prefix = f"{service}[{worker}] | ".encode("utf-8", "backslashreplace")
            self._format = self._format_prefix
        else:
            self._dumps = json.JSONEncoder(ensure_ascii=False).encode
            # Constant part of every record; time and message are filled in per line.
            self._fields = (
                f", {self._dumps('service')}: {self._dumps(service)}, "
                f'"worker": {int(worker)}, "stream": {self._dumps(stream)}, "message": '
            )
            self._format = self._format_json
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def close(self) -> None:
        """Drain what is in the pipe now, flush a partial line, unregister, close. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._flush_pending_before_close()
        try:
            budget = fcntl.fcntl(self._fd, fcntl.F_GETPIPE_SZ)
        except OSError:  # not a pipe (a pty, a file): one read's worth
            budget = READ_SIZE
        while budget > 0:
            data = self._read()
            if not data:
                break
            budget -= len(data)
            self._feed(data)
        if self._partial:
            self._emit([self._partial])
            self._partial = b""
        self._flush_pending_before_close()
        self._pending = b""
        self._loop.remove_reader(self._fd)
        try:
            os.close(self._fd)
        except OSError:
            pass

    def _on_readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            if self._pending:  # our stdout is full: leave the rest in the child's pipe
                return
            data = self._read()
            if data is None:  # EAGAIN: wait for the next wakeup
                return
            if not data:  # EOF: every writer has exited
                self.close()
                return
            self._feed(data)

    def _read(self) -> bytes | None:
        """Up to READ_SIZE bytes; b"" at EOF (or a broken fd), None if nothing is there yet."""
        try:
            return os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _feed(self, data: bytes) -> None:
        """Split into whole lines (pieces of MAX_LINE at most); keep the rest for later."""
        buffered = self._partial + data if self._partial else data
        lines = buffered.split(b"\n")
        rest = lines.pop()
        if len(buffered) > MAX_LINE:  # cheap gate: only then can a line be too long
            lines = [piece for line in lines for piece in _pieces(line)]
            while len(rest) > MAX_LINE:
                lines.append(rest[:MAX_LINE])
                rest = rest[MAX_LINE:]
        self._partial = rest
        if lines:
            self._emit(lines)

    def _emit(self, lines: list[bytes]) -> None:
        if self.write_error is None:
            self._write(self._format(lines))

    def _format_prefix(self, lines: list[bytes]) -> bytes:
        prefix = self._prefix
        return prefix + (b"\n" + prefix).join(lines) + b"\n"

    def _format_json(self, lines: list[bytes]) -> bytes:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        head = f'{{"time": "{stamp}.{int(now * 1000) % 1000:03d}Z"{self._fields}'
        dumps = self._dumps
        records = [head + dumps(line.decode("utf-8", "replace")) + "}\n" for line in lines]
        return "".join(records).encode("utf-8")

    def _write(self, data: bytes) -> None:
        """Write what our stdout takes now; keep the rest and pause reading."""
        if self._pending:
            self._pending += data
            return
        rest = self._write_now(data)
        if rest:
            self._pending = rest
            self._pause()

    def _write_now(self, data: bytes) -> bytes:
        """Write without blocking; return what is left (b"" also after an error)."""
        view = memoryview(data)
        while view:
            try:
                written = self._sink.write(view)
            except OSError as exc:  # EPIPE, EBADF, ENOSPC...
                self.write_error = exc
                return b""
            if written is None:
                return bytes(view)
            view = view[written:]
        if _stalled_until:
            _stalled_until.pop(self._out_fd, None)  # it drains again
        return b""

    def _pause(self) -> None:
        """Stop reading the child's pipe until our stdout can take more."""
        if self._reading and not self.closed:
            self._reading = False
            self._loop.remove_reader(self._fd)
        self._sink.when_writable(self._loop, self._on_writable)

    def _on_writable(self) -> None:
        if self.closed:
            return
        self._pending = self._write_now(self._pending)
        if self._pending:
            self._sink.when_writable(self._loop, self._on_writable)
            return
        self._reading = True
        self._loop.add_reader(self._fd, self._on_readable)

    def _flush_pending_before_close(self) -> None:
        """Write what is pending, waiting for our stdout at most CLOSE_FLUSH_SECONDS
        per stall (all relays share one wait), then drop what is left."""
        while self._pending and self.write_error is None:
            self._pending = self._write_now(self._pending)
            if not self._pending:
                _stalled_until.pop(self._out_fd, None)
                return
            now = time.monotonic()
            until = _stalled_until.setdefault(self._out_fd, now + CLOSE_FLUSH_SECONDS)
            if now >= until:
                return  # dropped: the caller clears _pending
            poller = select.poll()
            poller.register(self._sink.fd, select.POLLOUT)
            poller.poll(max(1, int((until - now) * 1000)))


def _pieces(line: bytes) -> list[bytes]:
    """`line` cut into MAX_LINE pieces (an empty line stays one empty line)."""
    if len(line) <= MAX_LINE:
        return [line]
    return [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)]


def open_relays(loop: Loop, worker: Worker) -> tuple[int, int]:
    """Relays for one worker's prefix/json output; returns the child's (stdout, stderr) ends.

    The read ends become `worker.relays`; the caller closes the returned
    write ends once the child has them.
    """
    ends: list[int] = []
    try:
        for stream in ("stdout", "stderr"):
            read_end, write_end = make_pipe()
            ends.append(write_end)
            worker.relays.append(
                OutputRelay(
                    loop,
                    read_end,
                    service=worker.unit.name,
                    worker=worker.worker_id,
                    stream=stream,
                    mode=worker.unit.spec.output,
                )
            )
    except OSError:  # out of descriptors: give back what was taken
        for fd in ends:
            os.close(fd)
        raise
    return ends[0], ends[1]


def close_relays(worker: Worker) -> None:
    """Flush and close a worker's relays (it exited, or never started)."""
    for relay in worker.relays:
        relay.close()  # type: ignore[attr-defined]
    worker.relays.clear()
