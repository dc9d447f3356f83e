"""Orphan factory for the zombie-storm stage of bench_core.py.

Usage: zombie_storm.py COUNT

COUNT times: fork a grandchild that forks a great-grandchild and exits at
once. We reap the grandchild ourselves; the great-grandchild is orphaned and
reparented to the nearest reaper (the init, PID 1 of the namespace), whose
job is to reap it. Whether the great-grandchild dies before or after its
parent makes no difference: a zombie is reparented like a live process.

stdout protocol (one line each, flushed):
  start PID                   before the loop
  loop_end NS_END NS_START    time.monotonic_ns() after and before the loop
Then we sleep until killed, so the only child left to the init is us.
"""

import os
import signal
import sys
import time


def main() -> None:
    count = int(sys.argv[1])
    print(f"start {os.getpid()}", flush=True)
    started = time.monotonic_ns()
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            # Grandchild: nothing may return from here, or it would run the loop.
            try:
                if os.fork() == 0:
                    os._exit(0)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    print(f"loop_end {time.monotonic_ns()} {started}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
