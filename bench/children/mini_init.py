"""A 40-line Python init: the floor for what pyinit's per-event paths cost in Python.

    python3 -I -S mini_init.py -- COMMAND [ARG...]

Reaps everything, forwards every catchable signal to COMMAND's process
group, exits with COMMAND's status. No options, no logs, no grace timer,
no stray handling: what is left when an init does nothing but its job.
bench_core.py runs it as the `py-init` column.
"""

import os
import select
import signal
import sys


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1 :]
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        signal.signal(signum, lambda *_: None)
    child = os.posix_spawnp(argv[0], argv, os.environ, setsid=True)
    status = None
    while status is None:
        select.select([read_fd], [], [])
        for signum in os.read(read_fd, 65536):
            if signum != signal.SIGCHLD:
                try:
                    os.killpg(child, signum)
                except ProcessLookupError:
                    pass
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == child:
                status = os.waitstatus_to_exitcode(raw)
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
