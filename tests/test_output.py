"""Child-output relays (`output = "prefix"` / `"json"`): every line arrives, whole and in order.

Real pipes, real child processes, pyinit's real event loop driven from the
test (`run_until`). The output side is a temp file (or a pipe we break on
purpose) that the test reads back byte for byte. What SPEC.md section 7
promises and these tests hold the relay to: "No line of child output is lost
or cut at shutdown".
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.helpers import wait_until

from pyinit.config.model import OutputMode
from pyinit.core.logs import Log
from pyinit.core.loop import Loop
from pyinit.supervise.output import MAX_LINE, OutputRelay, make_pipe

MODES = [OutputMode.PREFIX, OutputMode.JSON]
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# issue 11: one schema with pyinit's own records (level and source added)
KEYS = {"time", "level", "source", "stream", "message", "service", "worker"}

# A child that copies the file argv[1] to fd 1 in chunks of random size (so lines
# straddle writes and reads), then exits. No newline is added at the end.
CAT_IN_CHUNKS = textwrap.dedent(
    """
    import os, random, sys
    data = memoryview(open(sys.argv[1], "rb").read())
    rng = random.Random(int(sys.argv[2]))
    while data:
        n = os.write(1, data[: rng.randint(1, 200_000)])
        data = data[n:]
    """
)


class RecordingLog(Log):
    """pyinit's Log, also remembering exceptions the loop contained (there must be none)."""

    def __init__(self) -> None:
        super().__init__(level="error")
        self.errors: list[str] = []

    def exception(self, message: str, **fields: object) -> None:
        import traceback

        self.errors.append(f"{message}\n{traceback.format_exc()}")


class Harness:
    """One loop, the children and relays a test started; `cleanup()` kills and closes all."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.log = RecordingLog()
        self.loop = Loop(self.log)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.relays: list[OutputRelay] = []
        self.fds: list[int] = []

    def out_file(self, name: str = "out") -> tuple[int, Path]:
        path = self.tmp_path / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.fds.append(fd)
        return fd, path

    def spawn(
        self,
        argv: list[str],
        mode: OutputMode,
        out_fd: int,
        *,
        streams: tuple[str, ...] = ("stdout",),
        service: str = "web",
        worker: int = 0,
    ) -> tuple[subprocess.Popen[bytes], dict[str, OutputRelay]]:
        """Start `argv` with each of `streams` piped into a relay writing to `out_fd`."""
        pipes = {stream: make_pipe() for stream in streams}
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=pipes["stdout"][1] if "stdout" in pipes else None,
            stderr=pipes["stderr"][1] if "stderr" in pipes else None,
            start_new_session=True,  # so cleanup can kill grandchildren too
        )
        self.procs.append(proc)
        relays = {}
        for stream, (read_fd, write_fd) in pipes.items():
            os.close(write_fd)  # as the supervisor does: EOF once the child's copies are gone
            relay = OutputRelay(
                self.loop,
                read_fd,
                service=service,
                worker=worker,
                stream=stream,
                mode=mode,
                out_fd=out_fd,
            )
            self.relays.append(relay)
            relays[stream] = relay
        return proc, relays

    def python(self, code: str, *args: str) -> list[str]:
        return [sys.executable, "-c", code, *args]

    def run_until(self, predicate: Callable[[], bool], timeout: float, message: str) -> None:
        """Drive the loop until `predicate()` holds; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        # A timer at the deadline bounds the loop's otherwise unbounded epoll wait.
        timer = self.loop.call_at(deadline, lambda: None)
        try:
            while not predicate():
                if time.monotonic() >= deadline:
                    raise AssertionError(f"timed out after {timeout}s waiting for: {message}")
                self.loop._run_once()
        finally:
            timer.cancel()

    def cleanup(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        for relay in self.relays:
            relay.close()
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.cleanup()
    assert harness.log.errors == [], "the loop contained exceptions from a relay"


def make_payload(size: int, seed: int) -> bytes:
    """~`size` bytes of lines of mixed length (empty to exactly MAX_LINE, some non-ASCII),
    the last one without a trailing newline."""
    rng = random.Random(seed)
    ascii_text = bytes(range(32, 127)) * (MAX_LINE // 95 + 2)
    utf8_text = ("é日本語ß€" * (MAX_LINE // 6)).encode()
    lines: list[bytes] = []
    total = 0
    number = 0
    while total < size:
        kind = rng.random()
        if kind < 0.85:
            length = rng.randint(0, 200)
        elif kind < 0.98:
            length = rng.randint(200, 8000)
        else:
            length = rng.choice([MAX_LINE - 1, MAX_LINE, 40_000])
        source = utf8_text if rng.random() < 0.1 else ascii_text
        head = b"%07d " % number
        body = source[: max(0, length - len(head))]
        if source is utf8_text:
            body = body.decode("utf-8", "ignore").encode()  # cut on a character boundary
        lines.append((head + body)[:length])
        total += len(lines[-1]) + 1
        number += 1
    lines.append(b"last line, no newline")
    return b"\n".join(lines)


def expected_prefix(payload: bytes, service: str, worker: int) -> bytes:
    prefix = f"{service}[{worker}] | ".encode()
    return b"".join(prefix + line + b"\n" for line in payload.split(b"\n"))


def parse_json_lines(raw: bytes) -> list[dict[str, object]]:
    assert raw.endswith(b"\n"), "the last record is cut"
    records = [json.loads(line) for line in raw.split(b"\n")[:-1]]
    for record in records:
        assert set(record) == KEYS, record
        assert isinstance(record["time"], str) and TIME_RE.fullmatch(record["time"]), record
    return records


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_ten_megabytes_arrive_whole_and_in_order(h: Harness, mode: OutputMode) -> None:
    payload = make_payload(10 * 1024 * 1024, seed=1)
    source = h.tmp_path / "payload"
    source.write_bytes(payload)
    out_fd, out_path = h.out_file()

    started = time.monotonic()
    proc, relays = h.spawn(h.python(CAT_IN_CHUNKS, str(source), "2"), mode, out_fd, worker=4)
    h.run_until(lambda: relays["stdout"].closed, 10, "the relay to reach EOF and close itself")
    elapsed = time.monotonic() - started
    assert proc.wait(timeout=5) == 0
    print(f"{mode.value}: {len(payload) / elapsed / 1e6:.0f} MB/s through the relay")

    raw = out_path.read_bytes()
    if mode is OutputMode.PREFIX:
        assert raw == expected_prefix(payload, "web", 4)
    else:
        records = parse_json_lines(raw)
        messages = [r["message"] for r in records]
        assert messages == payload.decode().split("\n")
        assert {(r["service"], r["worker"], r["stream"]) for r in records} == {("web", 4, "stdout")}


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_interleaved_stdout_and_stderr_stay_ordered_per_stream(
    h: Harness, mode: OutputMode
) -> None:
    # Both streams in random-size chunks, switching streams at random, cutting lines anywhere.
    code = textwrap.dedent(
        """
        import os, random
        rng = random.Random(3)
        data = {
            fd: memoryview(b"".join(
                b"%s %06d %s\\n" % (name, i, b"x" * rng.randint(0, 300)) for i in range(20_000)
            ))
            for fd, name in ((1, b"out"), (2, b"err"))
        }
        while data:
            fd = rng.choice(sorted(data))
            n = os.write(fd, data[fd][: rng.randint(1, 9000)])
            data[fd] = data[fd][n:]
            if not data[fd]:
                del data[fd]
        """
    )
    out_fd, out_path = h.out_file()  # one file for both: relays write whole lines only
    proc, relays = h.spawn(h.python(code), mode, out_fd, streams=("stdout", "stderr"))
    h.run_until(
        lambda: all(r.closed for r in relays.values()), 10, "both relays to reach EOF and close"
    )
    assert proc.wait(timeout=5) == 0

    raw = out_path.read_bytes()
    if mode is OutputMode.PREFIX:
        assert raw.endswith(b"\n")
        lines = raw.split(b"\n")[:-1]
        assert all(line.startswith(b"web[0] | ") for line in lines)
        pairs = [(line[9:12].decode(), line[9:].decode()) for line in lines]
    else:
        pairs = []
        for record in parse_json_lines(raw):
            message = str(record["message"])
            assert record["stream"] == {"out": "stdout", "err": "stderr"}[message[:3]]
            pairs.append((message[:3], message))
    for name in ("out", "err"):
        stream_lines = [text for kind, text in pairs if kind == name]
        assert [int(text.split()[1]) for text in stream_lines] == list(range(20_000)), name
        assert all(re.fullmatch(rf"{name} \d{{6}} x*", text) for text in stream_lines), name
    assert {kind for kind, _ in pairs} == {"out", "err"}


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (b"one\ntwo", b"svc[1] | one\nsvc[1] | two\n"),
        (b"no newline at all", b"svc[1] | no newline at all\n"),
        (b"\n\nthree\n", b"svc[1] | \nsvc[1] | \nsvc[1] | three\n"),
        (b"", b""),
    ],
    ids=["partial-last", "only-partial", "empty-lines", "silent"],
)
def test_partial_last_line_is_flushed_with_a_newline_at_eof(
    h: Harness, written: bytes, expected: bytes
) -> None:
    out_fd, out_path = h.out_file()
    code = f"import os; os.write(1, {written!r})"
    _, relays = h.spawn(h.python(code), OutputMode.PREFIX, out_fd, service="svc", worker=1)
    h.run_until(lambda: relays["stdout"].closed, 5, "EOF")
    assert out_path.read_bytes() == expected


def test_lines_longer_than_64k_are_emitted_in_64k_pieces(h: Harness) -> None:
    long_line = bytes(range(65, 91)) * 6000  # 156,000 bytes
    written = b"a" * MAX_LINE + b"\n" + long_line + b"\nshort\n" + b"z" * (MAX_LINE + 10)
    source = h.tmp_path / "payload"
    source.write_bytes(written)
    out_fd, out_path = h.out_file()
    _, relays = h.spawn(h.python(CAT_IN_CHUNKS, str(source), "5"), OutputMode.PREFIX, out_fd)
    h.run_until(lambda: relays["stdout"].closed, 5, "EOF")

    pieces = [long_line[i : i + MAX_LINE] for i in range(0, len(long_line), MAX_LINE)]
    lines = [b"a" * MAX_LINE, *pieces, b"short", b"z" * MAX_LINE, b"z" * 10]
    assert out_path.read_bytes() == b"".join(b"web[0] | " + line + b"\n" for line in lines)


def test_json_records_have_exactly_the_spec_keys(h: Harness) -> None:
    out_fd, out_path = h.out_file()
    code = 'import os; os.write(2, "plain\\nquote \\" back\\\\slash\\ttab é日本\\n".encode())'
    before = time.time()
    _, relays = h.spawn(
        h.python(code), OutputMode.JSON, out_fd, streams=("stderr",), service="web-1.x", worker=3
    )
    h.run_until(lambda: relays["stderr"].closed, 5, "EOF")
    after = time.time()

    records = parse_json_lines(out_path.read_bytes())
    assert [r["message"] for r in records] == ["plain", 'quote " back\\slash\ttab é日本']
    for record in records:
        assert (record["service"], record["worker"], record["stream"]) == ("web-1.x", 3, "stderr")
        stamp = time.mktime(time.strptime(str(record["time"])[:19], "%Y-%m-%dT%H:%M:%S"))
        stamp -= time.timezone  # mktime took it as local time; it is UTC
        assert before - 1 <= stamp <= after + 1


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_invalid_utf8_is_replaced_in_json_and_passed_through_in_prefix(
    h: Harness, mode: OutputMode
) -> None:
    written = b"ok\xff\xfe bad\n\xc3\nafter\n"
    out_fd, out_path = h.out_file()
    _, relays = h.spawn(h.python(f"import os; os.write(1, {written!r})"), mode, out_fd)
    h.run_until(lambda: relays["stdout"].closed, 5, "EOF")

    raw = out_path.read_bytes()
    if mode is OutputMode.PREFIX:
        assert raw == b"web[0] | ok\xff\xfe bad\nweb[0] | \xc3\nweb[0] | after\n"
    else:
        messages = [r["message"] for r in parse_json_lines(raw)]
        assert messages == ["ok\ufffd\ufffd bad", "\ufffd", "after"]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_close_drains_what_an_exited_child_left_in_the_pipe(h: Harness, mode: OutputMode) -> None:
    """The supervisor reaps the worker and closes the relay before the loop read a byte."""
    code = "import os; os.write(1, b''.join(b'line %05d\\n' % i for i in range(5000)) + b'tail')"
    out_fd, out_path = h.out_file()
    proc, relays = h.spawn(h.python(code), mode, out_fd)
    assert proc.wait(timeout=5) == 0  # 55 KB fit in the pipe: the child exits unread

    relays["stdout"].close()
    relays["stdout"].close()  # idempotent
    expected = [f"line {i:05d}" for i in range(5000)] + ["tail"]
    raw = out_path.read_bytes()
    if mode is OutputMode.PREFIX:
        assert raw == "".join(f"web[0] | {line}\n" for line in expected).encode()
    else:
        assert [r["message"] for r in parse_json_lines(raw)] == expected


def test_close_does_not_wait_for_eof_held_by_a_grandchild(h: Harness) -> None:
    """A background grandchild keeps the write end open: EOF never comes, close() still ends."""
    code = "import os, subprocess; os.write(1, b'a\\nb'); subprocess.Popen(['sleep', '30'])"
    out_fd, out_path = h.out_file()
    proc, relays = h.spawn(h.python(code), OutputMode.PREFIX, out_fd)
    assert proc.wait(timeout=5) == 0
    started = time.monotonic()
    relays["stdout"].close()
    assert time.monotonic() - started < 1
    assert out_path.read_bytes() == b"web[0] | a\nweb[0] | b\n"


def test_close_while_the_child_is_still_writing_drains_the_pipe(h: Harness) -> None:
    """Lines written one write() each (atomic, < PIPE_BUF): the pipe holds only whole lines,
    and close() must relay all of them, in order, without waiting for the child to stop."""
    code = textwrap.dedent(
        """
        import os, itertools
        try:
            for i in itertools.count():
                os.write(1, b"line %08d %s\\n" % (i, b"y" * 80))
        except BrokenPipeError:
            raise SystemExit(3)
        """
    )
    out_fd, out_path = h.out_file()
    proc, relays = h.spawn(h.python(code), OutputMode.PREFIX, out_fd)
    relay = relays["stdout"]
    read_fd = relay._fd

    def queued() -> int:
        buf = bytearray(4)
        fcntl.ioctl(read_fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder)

    wait_until(lambda: queued() >= 60_000, 5, "the child to fill the pipe")
    started = time.monotonic()
    relay.close()
    assert time.monotonic() - started < 1, "close() chased a child that never stops writing"
    assert relay.closed

    lines = out_path.read_bytes().split(b"\n")
    assert lines.pop() == b""
    assert len(lines) * 95 >= 60_000
    assert lines == [b"web[0] | line %08d %s" % (i, b"y" * 80) for i in range(len(lines))]
    # With the read end closed, the child's next write fails: it ends instead of hanging.
    assert proc.wait(timeout=5) == 3


@pytest.mark.parametrize("failure", ["EPIPE", "EBADF"])
def test_broken_output_does_not_raise_and_the_child_still_finishes(
    h: Harness, failure: str
) -> None:
    code = "import os\nfor i in range(40_000): os.write(1, b'%0100d\\n' % i)"  # 4 MB, 40k writes
    if failure == "EPIPE":
        dead_read, out_fd = make_pipe()
        os.close(dead_read)  # nobody will ever read what the relay writes
        h.fds.append(out_fd)
    else:
        out_fd = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # a number no fd can have
    proc, relays = h.spawn(h.python(code), OutputMode.JSON, out_fd)
    relay = relays["stdout"]

    h.run_until(lambda: relay.closed, 10, "the relay to drain the child to EOF")
    assert proc.wait(timeout=5) == 0, "the child blocked or died on its stdout"
    assert relay.write_error is not None
    assert relay.write_error.errno == getattr(errno, failure)
