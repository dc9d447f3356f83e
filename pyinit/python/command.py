"""How PID 1 starts a `py:` worker: its command line, environment and exit statuses.

The supervisor side of the contract with pyinit/python/worker.py, kept apart
so that PID 1 (supervise/process.py) and `pyinit --check` (imports.py) get
the command line without importing the worker's machinery (threads, queues,
the service shapes).

Contract with the supervisor
----------------------------
argv::

    <sys.executable> -c BOOTSTRAP ROOT NAME[ID] module:Class

ROOT is the directory (or zip, when pyinit runs from the pyz) holding the
`pyinit` package. BOOTSTRAP puts ROOT first on sys.path just long enough to
import the worker module, then `settle_sys_path()` moves it to the *end*: the
pyz also carries psutil, sdnotify, cronsim and python-json-logger, and the
application's own copies (its PYTHONPATH, its site-packages) must win.
`NAME[ID]` is there for `ps`; the worker also writes it, cut to 15 bytes, to
/proc/self/comm.

Environment added (`extra_env`): PYINIT_WORKER_ID, PYINIT_SERVICE_NAME, and
PYINIT_SERVICE_ARGS = JSON `{"args": [...], "kwargs": {...}}` (values JSON
cannot carry, such as TOML dates, are passed as strings). The worker removes
PYINIT_SERVICE_ARGS from its own environment; the other two stay for the
application and its children. NOTIFY_SOCKET, cwd and PYTHONPATH come from the
supervisor's spawn like any service's.

Exit status: 0 after a stop signal (or a SIGHUP with no reload method) once
the stop completed, or when an oslo-style `wait()` returned by itself; N for
`SystemExit(N)` from user code; 1 for an exception in user code (import,
constructor, run/terminate/reload, start/stop/wait/reset), logged with its
traceback, or when `graceful_shutdown_timeout` ran out; 2 for a malformed
command line or environment (a pyinit bug, not the user's).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

#: The `-c` program. Kept short: it is what `ps` shows before NAME[ID].
BOOTSTRAP = "import sys;sys.path.insert(0,sys.argv[1]);import pyinit.python.worker as w;w.main()"

ENV_WORKER_ID = "PYINIT_WORKER_ID"
ENV_SERVICE_NAME = "PYINIT_SERVICE_NAME"
ENV_SERVICE_ARGS = "PYINIT_SERVICE_ARGS"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def package_root() -> str:
    """The sys.path entry that holds the `pyinit` package: a directory, or the pyz.

    Found from this module rather than by importing `pyinit`, which would
    make the package's lazy API and its workers import each other.
    """
    loader = __spec__.loader if __spec__ is not None else None
    archive = getattr(loader, "archive", None)
    if isinstance(archive, str):  # zipimporter: pyinit runs from the pyz
        return os.path.abspath(archive)
    here = os.path.abspath(__file__)  # ROOT/pyinit/python/command.py
    return os.path.dirname(os.path.dirname(os.path.dirname(here)))


def command_line(
    target: str,
    service: str,
    worker_id: int,
    args: tuple[object, ...],
    kwargs: Mapping[str, object],
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for worker `worker_id` of `service` running `target`.

    `target` is "module:Class" (a dotted attribute path after the colon is
    allowed). See the module docstring for the shape of both.
    """
    title = f"{service}[{worker_id}]"
    argv = [sys.executable or "python3", "-c", BOOTSTRAP, package_root(), title, target]
    payload = json.dumps({"args": list(args), "kwargs": dict(kwargs)}, default=str)
    env = {ENV_WORKER_ID: str(worker_id), ENV_SERVICE_NAME: service, ENV_SERVICE_ARGS: payload}
    return argv, env


def settle_sys_path(root: str) -> None:
    """Move ROOT from the front of sys.path (where BOOTSTRAP put it) to the end.

    pyinit's own modules are imported by then and found through
    `pyinit.__path__`, so later `import pyinit.x` still gets this pyinit;
    anything else the pyz carries comes after the application's copies.
    """
    if sys.path and sys.path[0] == root:
        del sys.path[0]
    if root not in sys.path:
        sys.path.append(root)
