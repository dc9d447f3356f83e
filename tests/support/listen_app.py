"""Servers that take their socket from pyinit (tests/test_listen.py).

As a command (`listen_app.py [--say TEXT] [--marker FILE] [--linger SECONDS]`):
accepts on fds 3.. and answers each connection (or datagram) with one JSON line of
what it was given (its pid, LISTEN_*, uid, its open fds, the socket's
address), then closes it. On SIGTERM it writes `--marker` (if given), stops
accepting for `--linger` seconds (a slow shutdown, so a test can connect
while no worker accepts), and exits 0.

As a `py:` class (`listen_app:HttpService`): a stdlib HTTP server on the
service's first socket, taken in the two lines the README shows; GET
answers the same JSON plus the worker id.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def open_fds() -> list[int]:
    """This process's open fds, without the one listdir used for itself."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        found.append(int(name))
    return sorted(found)


def facts(sock: socket.socket) -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "listen_pid": os.environ.get("LISTEN_PID"),
        "listen_fds": os.environ.get("LISTEN_FDS"),
        "listen_fdnames": os.environ.get("LISTEN_FDNAMES"),
        "uid": os.getuid(),
        "say": os.environ.get("SAY", ""),
        "fds": open_fds(),
        "sockname": str(sock.getsockname()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--marker")
    parser.add_argument("--linger", type=float, default=0.0)
    args = parser.parse_args()
    # The fds listing above must show what pyinit passed, not our own extras.
    sockets = [socket.socket(fileno=fd) for fd in range(3, 3 + int(os.environ["LISTEN_FDS"]))]
    known = facts(sockets[0])

    state = {"busy": False, "stopping": False}

    def leave() -> None:
        if args.marker:
            with open(args.marker, "a") as marker:
                marker.write(f"{os.getpid()}\n")
        time.sleep(args.linger)  # not accepting: connections wait in the queue
        os._exit(0)

    def stop(signum: int, frame: object) -> None:
        # Graceful: a request being answered is finished first.
        state["stopping"] = True
        if not state["busy"]:
            leave()

    signal.signal(signal.SIGTERM, stop)
    while True:
        ready, _, _ = select.select(sockets, [], [])
        state["busy"] = True
        sock = ready[0]
        answer = json.dumps(dict(known, sockname=str(sock.getsockname()))).encode() + b"\n"
        if sock.type == socket.SOCK_DGRAM:
            _, peer = sock.recvfrom(512)
            sock.sendto(answer, peer)
        else:
            conn, _ = sock.accept()
            with conn:
                conn.sendall(answer)
        state["busy"] = False
        if state["stopping"]:
            leave()


try:
    from pyinit import Service
except ImportError:  # run as a plain command, pyinit not importable: only main() is used
    Service = object  # type: ignore[assignment,misc]


class HttpService(Service):  # type: ignore[misc,valid-type]
    def run(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = dict(facts(self.server.socket), worker=service.worker_id)  # type: ignore[attr-defined]
                body["count"] = len(service.sockets)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        # The README's two lines: no bind, then pyinit's socket.
        self.server = ThreadingHTTPServer(("", 0), Handler, bind_and_activate=False)
        self.server.socket = self.sockets[0]
        self.server.serve_forever()

    def terminate(self) -> None:
        self.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
