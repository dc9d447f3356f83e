"""A Python `Service` that serves `$APP_VERSION <pid>` from the socket pyinit holds.

For tests/test_rolling.py: the `py:` twin of http_app.py. It takes its
socket as a Service does (`self.sockets`, issue 9 item 1), answers each
connection with one HTTP response, says READY=1 once it accepts, and on
the stop signal finishes the request in hand and returns: the connections
still queued stay in the shared socket for the other workers.
"""

from __future__ import annotations

import os
import select
import threading

from http_app import answer

from pyinit import Service


class VersionServer(Service):
    name = "version-server"

    def __init__(self, worker_id: int) -> None:
        super().__init__(worker_id)
        self._wake_read, self._wake_write = os.pipe()
        self._stopping = False
        self._done = threading.Event()

    def run(self) -> None:
        try:
            self._serve()
        finally:
            self._done.set()

    def _serve(self) -> None:
        sock = self.sockets[0]
        sock.setblocking(False)
        body = f"{os.environ.get('APP_VERSION', 'v0')} {os.getpid()}\n".encode()
        self.notify_ready()
        while not self._stopping:
            readable, _, _ = select.select([sock, self._wake_read], [], [])
            if self._wake_read in readable:
                break
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            with conn:
                try:
                    answer(conn, body)
                except OSError:
                    pass

    def terminate(self) -> None:
        self._stopping = True
        os.write(self._wake_write, b"x")
        # The worker exits when this returns, run() or not (as cotyledon):
        # wait for the request in hand.
        self._done.wait(5)
