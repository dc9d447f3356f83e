"""READY=1 sender for bench_notify.py.

Usage: notify_ready.py REPORT_FILE

It runs as a `ready = "notify"` service under pyinit. It reads
time.monotonic_ns() just before it sends READY=1 as one raw AF_UNIX datagram
to $NOTIFY_SOCKET (no sdnotify, no systemd-notify: nothing but the send
between the clock read and the kernel), then writes `PID NS` to REPORT_FILE
(after the send, so the write is not part of the measured time), and waits
for a signal. The default SIGTERM action ends it.
"""

import os
import signal
import socket
import sys
import time


def main() -> None:
    report, address = sys.argv[1], os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    payload = b"READY=1"
    sent_ns = time.monotonic_ns()
    sock.sendto(payload, address)
    with open(report + ".tmp", "w") as handle:
        handle.write(f"{os.getpid()} {sent_ns}\n")
    os.rename(report + ".tmp", report)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
