"""Resource usage of a process (RSS, CPU seconds) for `pyinit ctl status` rows.

psutil when it loads (imported on first use: only status needs it, and the
pyz carries it for some architectures only), else /proc, which says the
same things on Linux.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pyinit._bootstrap import import_psutil

if TYPE_CHECKING:
    from types import ModuleType

    from pyinit.core.logs import Log

_psutil: ModuleType | None = None
_psutil_tried = False


def process_usage(pid: int, log: Log | None = None) -> tuple[int | None, float | None]:
    """(RSS bytes, CPU seconds user + system) of `pid`; (None, None) if unknown.

    psutil when it loads (imported on first use: only status needs it), else
    /proc, which says the same things on Linux.
    """
    global _psutil, _psutil_tried
    if pid <= 0:
        return None, None
    if not _psutil_tried:
        _psutil_tried = True
        _psutil, why = import_psutil()
        if log is not None:
            log.debug(f"psutil {why}" if _psutil else f"psutil unavailable ({why}); reading /proc")
    if _psutil is not None:
        try:
            process = _psutil.Process(pid)
            with process.oneshot():
                times = process.cpu_times()
                return int(process.memory_info().rss), float(times.user + times.system)
        except _psutil.Error:
            return None, None
    return usage_from_proc(pid)


def usage_from_proc(pid: int) -> tuple[int | None, float | None]:
    """The /proc fallback of `process_usage`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            line = file.read()
        with open(f"/proc/{pid}/statm", "rb") as file:
            resident_pages = int(file.read().split()[1])
        # The command name (field 2) may hold spaces and ')': split after the last ')'.
        fields = line[line.rindex(b")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    except (OSError, ValueError, IndexError):
        return None, None
    return resident_pages * os.sysconf("SC_PAGE_SIZE"), ticks / os.sysconf("SC_CLK_TCK")
