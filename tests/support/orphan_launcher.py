"""Run ARGV below a parent the test can kill, inside a subreaper that outlives it.

    launcher (child subreaper) -> parent (pauses forever) -> ARGV (pyinit)

Killing `parent` is "pyinit's parent dies" (what --pdeathsig is for). ARGV is
then re-parented to this launcher rather than to the machine's PID 1, so the
launcher can reap it and exit with its status (128+N if signal N killed it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> None:
    argv = sys.argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"orphan_launcher: prctl: {os.strerror(ctypes.get_errno())}")
    read_end, write_end = os.pipe()
    parent = os.fork()
    if parent == 0:
        try:
            os.close(read_end)
            target = os.fork()
            if target == 0:
                os.execvp(argv[0], argv)
            os.write(write_end, f"{target}\n".encode())
            os.close(write_end)
            while True:
                signal.pause()
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        target = int(pipe.readline())
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == target:
            code = os.waitstatus_to_exitcode(status)
            sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
