"""`pyinit --check`: import each Python service class the way its worker would.

A typo in `py:myapp.workers:Indexer` used to pass --check and fail only when
the worker started (issue 7.26). PID 1 never imports user code (worker.py),
and --check follows the same rule: each class is imported in a fresh
interpreter started exactly as a worker is (same interpreter, pyinit's
package root on sys.path behind the application's, the service's `cwd`,
`env` and so its `PYTHONPATH`), which imports the module and looks the class
up, without constructing it. The children run side by side, each bounded by
IMPORT_TIMEOUT.

Only --check does this: start stays fast, and a worker that cannot import
its class already says why in its log and exits 1.

Not covered: `user`/`group` (the import runs as the user running --check).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

from pyinit.config.model import Config, ServiceSpec
from pyinit.python.command import package_root, settle_sys_path

#: Seconds one import may take (a module that connects somewhere at import time).
IMPORT_TIMEOUT = 20.0

#: The child's program: argv is ROOT module:Class. Mirrors command.BOOTSTRAP.
_CHILD = (
    "import sys;sys.path.insert(0,sys.argv[1]);"
    "import pyinit.python.imports as c;c.child_main(sys.argv[1],sys.argv[2])"
)


def first_import_error(config: Config) -> str | None:
    """One line naming the first service (in config order) whose class cannot be imported."""
    root = package_root()
    children = [(spec, _start(spec, root)) for spec in config.services.values() if spec.py_class]
    deadline = time.monotonic() + IMPORT_TIMEOUT
    problems: list[str] = []
    for spec, child in children:
        problem = _outcome(spec, child, deadline)
        if problem:
            problems.append(problem)
    return problems[0] if problems else None


def _start(spec: ServiceSpec, root: str) -> subprocess.Popen[bytes] | OSError:
    env = dict(os.environ)
    env.update(spec.env)
    try:
        return subprocess.Popen(
            [sys.executable or "python3", "-c", _CHILD, root, spec.py_class or ""],
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as error:
        return error


def _outcome(spec: ServiceSpec, child: subprocess.Popen[bytes] | OSError, deadline: float) -> str:
    where = f"{spec.origin} ({spec.name})" if spec.origin else spec.name
    if isinstance(child, OSError):
        return f"{where}: cannot check py:{spec.py_class}: {child.strerror or child}"
    try:
        _, err = child.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return f"{where}: importing py:{spec.py_class} took over {IMPORT_TIMEOUT:g} s"
    if child.returncode == 0:
        return ""
    lines = err.decode("utf-8", "replace").strip().splitlines()
    reason = lines[-1] if lines else f"exit status {child.returncode}"
    return f"{where}: cannot import py:{spec.py_class}: {reason}"


def child_main(root: str, target: str) -> None:
    """In the child: import `module:Class` as a worker would; the last stderr line says why not."""
    settle_sys_path(root)
    module_name, _, attribute = target.rpartition(":")
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except BaseException as error:  # the user's module may raise anything, SystemExit too
        message = " ".join(str(error).split())
        sys.stderr.write(f"{type(error).__name__}: {message}\n")
        sys.exit(1)
    if not callable(found):
        sys.stderr.write(f"{target} is not a class\n")
        sys.exit(1)
