"""Create COUNT orphaned zombies as fast as fork allows, then print signals.

In batches of BATCH: a spawner process forks BATCH children that exit at once
and then exits itself without reaping them, so BATCH zombies are re-parented
to pyinit in one go (a SIGCHLD storm). Prints `storm done COUNT`, then behaves
like print_signals.py and exits 3 after SIGTERM.
"""

from __future__ import annotations

import os
import sys

from print_signals import block_all, say, serve


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    block_all()
    made = 0
    while made < count:
        size = min(batch, count - made)
        spawner = os.fork()
        if spawner == 0:
            try:
                for _ in range(size):
                    if os.fork() == 0:
                        os._exit(0)
            finally:
                os._exit(0)
        os.waitpid(spawner, 0)
        made += size
    say(f"storm done {made}")
    serve(exit_on=frozenset({15}), exit_code=3)


if __name__ == "__main__":
    main()
