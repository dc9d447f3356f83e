"""Leave COUNT orphans for pyinit to reap, then print signals like print_signals.py.

Each orphan comes from a double fork: an intermediate process forks it and
exits at once. The orphan waits until it has been re-parented (to PID 1 of its
namespace, or to the nearest child subreaper), prints
`orphan PID ppid NEWPARENT`, and exits, becoming a zombie that only its new
parent can reap. Exit code 0 after SIGTERM.
"""

from __future__ import annotations

import os
import sys
import time

from print_signals import block_all, say, serve


def make_orphan() -> None:
    """Double fork; returns in the original process once the intermediate is reaped."""
    intermediate = os.fork()
    if intermediate == 0:
        try:
            parent = os.getpid()
            if os.fork() == 0:
                deadline = time.monotonic() + 10
                while os.getppid() == parent and time.monotonic() < deadline:
                    time.sleep(0.001)
                say(f"orphan {os.getpid()} ppid {os.getppid()}")
        finally:
            os._exit(0)
    os.waitpid(intermediate, 0)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    block_all()
    for _ in range(count):
        make_orphan()
    serve(exit_on=frozenset({15}), exit_code=0)


if __name__ == "__main__":
    main()
