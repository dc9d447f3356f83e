"""A service for the services-mode tests: it reports what happens to it in a log file.

Each event is one line appended to LOG with one write(2) (O_APPEND), so many
services and workers can share one file:

    NAME start TIME PID WORKER_ID PGID
    NAME signal SIGNUM TIME PID
    NAME stop TIME PID            (SIGTERM received; exits 0 after --stop-delay)

TIME is time.monotonic() (one clock for the whole machine, PID namespaces
included). PID is the pid as the process sees it (inside a PID namespace, the
namespace's pid). Signals are caught by real handlers, not blocked, so a
SIGKILL test sees the default disposition of everything else.

Options:
  --log PATH            the event file (required)
  --name NAME           the name in the events (default: svc)
  --exit CODE           exit with CODE right after the start event
  --exit-if-exists PATH like --exit 1, but only while PATH exists
  --run SECONDS         exit 0 after SECONDS (default: run until stopped)
  --ignore-term         log SIGTERM but keep running (only SIGKILL ends it)
  --stop-delay SECONDS  after SIGTERM, wait this long before exiting
  --child               fork a second reporter (NAME.child) into our process group
  --daemon MARKER       double fork a daemon in its own session that ignores SIGTERM
                        and sleeps with MARKER in its argv (it must not outlive pyinit)
  --say TEXT            print TEXT on stdout after starting
  --flood BYTES         write BYTES of numbered lines to stdout (and 3 lines to
                        stderr) as fast as possible, then exit 0
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

REPORTED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
FLOOD_LINE = 1000  # bytes per flood line, newline included


class Reporter:
    """Appends event lines to the log; one instance per process."""

    def __init__(self, path: str, name: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.name = name

    def event(self, *fields: object) -> None:
        line = " ".join([self.name, *(str(f) for f in fields)]) + "\n"
        os.write(self.fd, line.encode())


def install_handlers(rep: Reporter, args: argparse.Namespace) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        rep.event("signal", signum, time.monotonic(), os.getpid())

    def on_term(signum: int, _frame: object) -> None:
        rep.event("signal", signum, time.monotonic(), os.getpid())
        if args.ignore_term:
            return
        rep.event("stop", time.monotonic(), os.getpid())
        if args.stop_delay:
            time.sleep(args.stop_delay)
        os._exit(0)

    for signum in REPORTED:
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGTERM, on_term)


def start_daemon(marker: str) -> None:
    """Double fork: the grandchild is re-parented, in its own session, deaf to SIGTERM."""
    first = os.fork()
    if first:
        os.waitpid(first, 0)
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # survives exec
    code = "import time; time.sleep(3600)"
    os.execv(sys.executable, [sys.executable, "-S", "-c", code, marker])


def flood(total: int) -> None:
    """Numbered lines of FLOOD_LINE bytes, written in big chunks that split lines."""
    count = total // FLOOD_LINE
    chunk: list[bytes] = []
    size = 0
    out = sys.stdout.buffer
    for number in range(count):
        head = f"line {number:08d} "
        chunk.append((head + "x" * (FLOOD_LINE - len(head) - 1) + "\n").encode())
        size += FLOOD_LINE
        if size >= 300_000:  # not a multiple of the line length: lines straddle writes
            data = b"".join(chunk)
            out.write(data[:150_001])
            out.flush()
            out.write(data[150_001:])
            out.flush()
            chunk, size = [], 0
    out.write(b"".join(chunk))
    out.write(f"end {count}\n".encode())
    out.flush()
    for number in range(3):
        sys.stderr.write(f"err {number}\n")
    sys.stderr.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--name", default="svc")
    parser.add_argument("--exit", type=int)
    parser.add_argument("--exit-if-exists")
    parser.add_argument("--run", type=float)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--stop-delay", type=float, default=0.0)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--daemon")
    parser.add_argument("--say")
    parser.add_argument("--flood", type=int)
    args = parser.parse_args()

    rep = Reporter(args.log, args.name)
    install_handlers(rep, args)
    if args.daemon:
        start_daemon(args.daemon)
    if args.child and os.fork() == 0:
        rep.name += ".child"
    worker = os.environ.get("PYINIT_WORKER_ID", "-")
    rep.event("start", time.monotonic(), os.getpid(), worker, os.getpgrp())
    if args.say:
        print(args.say, flush=True)
    if args.flood is not None:
        flood(args.flood)
        return
    if args.exit is not None:
        sys.exit(args.exit)
    if args.exit_if_exists and os.path.exists(args.exit_if_exists):
        sys.exit(1)
    if args.run is not None:
        time.sleep(args.run)
        return
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
