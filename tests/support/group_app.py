"""A service's main process with a child in its process group, both recording SIGHUP.

`group_app.py LOG TAG`: the main process starts a copy of itself as
`--child` (same process group, as gunicorn's workers are), and each
appends `TAG ROLE start PID` once running and `TAG ROLE hup PID` for each
SIGHUP to LOG. SIGTERM ends both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def record(log: str, line: str) -> None:
    with open(log, "a") as out:
        out.write(line + "\n")


def main() -> None:
    log, tag = sys.argv[1], sys.argv[2]
    role = "child" if "--child" in sys.argv else "main"
    signal.signal(signal.SIGHUP, lambda *_: record(log, f"{tag} {role} hup {os.getpid()}"))
    child = None
    if role == "main":
        child = subprocess.Popen([sys.executable, "-S", __file__, log, tag, "--child"])

    def stop(*_: object) -> None:
        if child is not None:
            child.terminate()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    record(log, f"{tag} {role} start {os.getpid()}")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
