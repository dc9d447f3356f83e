"""Print every signal this process receives: `ready (pid: N)`, then one number a line.

dumb-init's testing/print_signals, but with every catchable signal blocked and
collected by sigwaitinfo instead of a 10 ms poll: a signal is printed once,
when it arrives, and nothing else can kill or stop us except SIGKILL/SIGSTOP.
Dispositions are reset to SIG_DFL first, because an inherited SIG_IGN would
make the kernel discard the signal even while it is blocked.

Options:
  --tag NAME         prefix every line with `NAME: ` (several printers share stdout)
  --spawn-child TAG  start a second printer (tag TAG) in our process group first
  --exit-on SIG      after printing signal SIG, exit (repeatable)
  --exit-code N      the status for --exit-on (default 0)
  --catch-chld       print SIGCHLD too (off: a --spawn-child printer would see it)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

# SIGCHLD stays out unless asked for: a printer with --spawn-child would print it.
CATCHABLE = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def block_all() -> set[int]:
    """Reset every disposition to default, then block every catchable signal."""
    for signum in CATCHABLE:
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_BLOCK, CATCHABLE)
    return CATCHABLE


def say(line: str) -> None:
    """Write one whole line in one write(2): several printers share a pipe."""
    os.write(1, f"{line}\n".encode())


def serve(tag: str = "", exit_on: frozenset[int] = frozenset(), exit_code: int = 0) -> None:
    """Print `ready`, then each signal as it arrives (signals must be blocked already)."""
    prefix = f"{tag}: " if tag else ""
    say(f"{prefix}ready (pid: {os.getpid()})")
    while True:
        signum = signal.sigwaitinfo(CATCHABLE).si_signo
        say(f"{prefix}{signum}")
        if signum in exit_on:
            sys.exit(exit_code)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", default="")
    parser.add_argument("--spawn-child", metavar="TAG")
    parser.add_argument("--exit-on", type=int, action="append", default=[])
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--catch-chld", action="store_true")
    args = parser.parse_args()
    if args.catch_chld:
        CATCHABLE.add(signal.SIGCHLD)
    block_all()
    if args.spawn_child:
        # Same process group and stdout; the test waits for both `ready` lines.
        subprocess.Popen([sys.executable, "-S", __file__, "--tag", args.spawn_child])
    serve(args.tag, frozenset(args.exit_on), args.exit_code)


if __name__ == "__main__":
    main()
