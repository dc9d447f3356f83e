"""A small HTTP server for deploy tests: answers `VERSION PID`, stops gracefully.

The listening socket is the one pyinit hands over (LISTEN_FDS=1: fd 3, the
systemd protocol), `--fd N` (circus), or with `--port N` one it binds itself. It answers every
GET with one line, `$APP_VERSION <pid>`, so a test sees which generation
served each request.

Behaviour comes from the environment, which a reload changes:
  APP_VERSION   what to answer (default "v0")
  APP_STARTUP   seconds to wait before serving and sending READY=1 (default 0)
  APP_MODE      serve (default); hang: never serve nor get ready; crash: exit 1 at once
  APP_CRASH_WORKER  crash (as APP_MODE=crash) only in the worker with this PYINIT_WORKER_ID

READY=1 goes to $NOTIFY_SOCKET, if set, once it is about to accept.
SIGTERM: the request in hand is finished, nothing more is accepted, exit 0:
connections still queued stay in the shared socket for the other workers.
The loop waits in select() on the socket and the signal wakeup pipe, so
it never polls.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import time


def notify(text: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(text.encode())


def listening_socket(port: int | None, fd: int | None) -> socket.socket:
    if fd is not None:
        return socket.socket(fileno=fd)  # circus: `--fd $(circus.sockets.web)`
    if port is None:
        if os.environ.get("LISTEN_FDS") != "1":
            sys.exit(f"http_app: no --port and LISTEN_FDS={os.environ.get('LISTEN_FDS')!r}")
        return socket.socket(fileno=3)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def answer(conn: socket.socket, body: bytes) -> None:
    conn.settimeout(5.0)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    conn.sendall(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--fd", type=int)
    args = parser.parse_args()
    mode = os.environ.get("APP_MODE", "serve")
    if os.environ.get("APP_CRASH_WORKER", "-") == os.environ.get("PYINIT_WORKER_ID"):
        mode = "crash"
    if mode == "crash":
        return 1
    stopping = []
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    sock = listening_socket(args.port, args.fd)
    sock.setblocking(False)
    startup = float(os.environ.get("APP_STARTUP", "0"))
    if startup:
        time.sleep(startup)
    if mode == "hang":
        while not stopping:
            select.select([read_end], [], [])
        return 0
    body = f"{os.environ.get('APP_VERSION', 'v0')} {os.getpid()}\n".encode()
    notify("READY=1")
    while not stopping:
        readable, _, _ = select.select([sock, read_end], [], [])
        if read_end in readable:
            os.read(read_end, 64)
            continue
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            continue  # another worker took it
        with conn:
            try:
                answer(conn, body)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
