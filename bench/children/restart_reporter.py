"""Restart-latency worker for bench_services.py.

Usage: restart_reporter.py SOCKET

It runs as one worker of a service under pyinit or supervisord and reports
to the bench over a Unix datagram socket (SOCKET, bound by the bench), one
datagram per event, ASCII:

  start PID PPID NS    first thing after the interpreter is up (NS: time.monotonic_ns())
  exit PID PPID NS     just before exiting, once the bench sent SIGUSR1

The clock is read at the very top, before any other import, so `start`
is as close to "the new process runs Python" as a Python child can get.
SIGUSR1 is blocked (and taken with sigwaitinfo) before `start` is sent, so
the bench's SIGUSR1 can never kill us by default. The exit status is 0: a
clean exit that both supervisors are told to restart anyway.
"""

import time

STARTED_NS = time.monotonic_ns()

import os  # noqa: E402  (after the clock read on purpose)
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    path = sys.argv[1]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.sendto(f"start {os.getpid()} {os.getppid()} {STARTED_NS}".encode(), path)
    signal.sigwaitinfo({signal.SIGUSR1})
    now = time.monotonic_ns()
    sock.sendto(f"exit {os.getpid()} {os.getppid()} {now}".encode(), path)
    os._exit(0)


if __name__ == "__main__":
    main()
