"""A load generator for deploy tests and bench/bench_deploy.py: new TCP connections in a loop.

Each of `threads` threads opens a fresh connection to (host, port), sends
`GET / HTTP/1.0`, reads the whole answer and closes, again and again until
stopped. A fresh connection each time is what finds the moments a deploy
leaves nobody listening (a refused connect) or drops an accepted one (a
reset): a keep-alive client would sit on one old worker and see neither.

What it records: every answer (its completion time and body) and every
failure (its time and the error); from them, the numbers a deploy is judged
by: requests sent, failed, and the longest gap with no successful answer.
Every socket has a timeout, so a thread never hangs past `stop()`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"


@dataclass
class Tally:
    """What the threads saw; `answers` are (monotonic time, body) in arrival order."""

    answers: list[tuple[float, str]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.answers) + len(self.failures)

    def longest_gap(self, since: float | None = None, until: float | None = None) -> float:
        """Seconds of the longest stretch without a successful answer, in [since, until]."""
        start = self.started if since is None else since
        end = (self.stopped or time.monotonic()) if until is None else until
        times = sorted(t for t, _ in self.answers if start <= t <= end)
        edges = [start, *times, end]
        return max((b - a for a, b in zip(edges, edges[1:], strict=False)), default=0.0)


class LoadGenerator:
    """`threads` clients hitting host:port until `stop()`; use as a context manager."""

    def __init__(
        self, host: str, port: int, threads: int = 4, timeout: float = 5.0, pause: float = 0.0
    ) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self.pause = pause  # seconds between one thread's requests (0: back to back)
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> LoadGenerator:
        self.tally.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Tally:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 1.0)
        self.tally.stopped = time.monotonic()
        return self.tally

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                body = self.fetch()
            except Exception as error:  # every way a request can fail is a failure
                with self._lock:
                    self.tally.failures.append(
                        (time.monotonic(), f"{type(error).__name__}: {error}")
                    )
            else:
                with self._lock:
                    self.tally.answers.append((time.monotonic(), body))
            if self.pause:
                self._stop.wait(self.pause)

    def fetch(self) -> str:
        """One request on a new connection; the body, or an exception."""
        with socket.create_connection(self.address, timeout=self.timeout) as sock:
            sock.sendall(REQUEST)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        data = b"".join(chunks)
        head, sep, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if not sep or b" 200 " not in status + b" ":
            raise ValueError(f"bad answer: {data[:80]!r}")
        return body.decode(errors="replace").strip()

    def latest(self) -> str | None:
        """The body of the most recent successful answer."""
        with self._lock:
            return self.tally.answers[-1][1] if self.tally.answers else None

    def wait_for_body(
        self, predicate: Callable[[str], bool], timeout: float, since: float = 0.0
    ) -> float:
        """Wait until an answer after `since` satisfies `predicate`; its time, or TimeoutError.

        Answers are looked at from the newest back, so a slow test thread
        does not re-read the whole history on every look.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            with self._lock:
                fresh = self.tally.answers[seen:]
                seen = len(self.tally.answers)
            for when, body in fresh:
                if when >= since and predicate(body):
                    return when
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no answer matching within {timeout}s; latest {self.latest()!r}"
                )
            time.sleep(0.01)
