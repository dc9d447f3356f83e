"""Fixtures shared by the behaviour tests: which pyinit to run, and how.

The matrix (dumb-init's ``both_setsid_modes`` idea):
  - ``pyinit_argv``: "installed" (the ``pyinit`` console script) or "pyz"
    (``python pyinit.pyz``, built once per session unless PYINIT_PYZ names one);
  - ``as_pid1``: "pid1" (a prefix running pyinit as PID 1 of a new PID namespace)
    or "subreaper" (no prefix: pyinit is a child subreaper).
A test that only needs one combination narrows it with
``@pytest.mark.parametrize("pyinit_argv", ["installed"], indirect=True)``
(``support.helpers.INSTALLED_ONLY`` and friends).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
# `from support.helpers import ...` must work whatever pytest's import mode is.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from support.helpers import InitProcess, wait_until  # noqa: E402,F401  (re-exported for other tests)

UNSHARE_PREFIX = ["unshare", "--pid", "--fork", "--mount-proc"]
_unshare_probe: str | None = None  # None: not probed; "": works; else why not


def _unshare_problem() -> str:
    """Why ``unshare --pid --fork --mount-proc`` cannot run here ("" if it can); probed once."""
    global _unshare_probe
    if _unshare_probe is None:
        try:
            done = subprocess.run([*UNSHARE_PREFIX, "true"], capture_output=True, timeout=10)
            _unshare_probe = (
                ""
                if done.returncode == 0
                else (f"exit {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _unshare_probe = repr(exc)
    return _unshare_probe


@pytest.fixture(scope="session")
def pyz_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zipapp under test: $PYINIT_PYZ, else built once from this checkout."""
    given = os.environ.get("PYINIT_PYZ")
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"PYINIT_PYZ={given} is not a file")
        return path
    out = tmp_path_factory.mktemp("pyz") / "pyinit.pyz"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "build_zipapp.py"), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 or not out.is_file():
        pytest.fail(f"build_zipapp.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return out


def installed_pyinit() -> str:
    """Path of the installed ``pyinit`` command, or fail the test clearly.

    The directory of this interpreter is searched before PATH so that a pyenv
    shim (a bash script that forks helpers before exec'ing the real script,
    and costs ~50 ms) is not what we measure or walk in /proc.
    """
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which("pyinit", path=search)
    if path is None:
        pytest.fail("`pyinit` is not installed: the README's test command installs it (.venv)")
    return path


@pytest.fixture(params=["installed", "pyz"])
def pyinit_argv(request: pytest.FixtureRequest) -> list[str]:
    """argv prefix that runs pyinit: the installed command or ``python pyinit.pyz``."""
    if request.param == "installed":
        return [installed_pyinit()]
    if request.param == "pyz":
        return [sys.executable, str(request.getfixturevalue("pyz_path"))]
    raise ValueError(f"unknown pyinit_argv variant {request.param!r}")


@pytest.fixture(params=["pid1", "subreaper"])
def as_pid1(request: pytest.FixtureRequest) -> list[str]:
    """Prefix that runs pyinit as PID 1 (new PID namespace), or nothing (subreaper)."""
    if request.param == "pid1":
        problem = _unshare_problem()
        if problem:
            pytest.skip(f"cannot run as PID 1: `{' '.join(UNSHARE_PREFIX)} true` failed: {problem}")
        return list(UNSHARE_PREFIX)
    if request.param == "subreaper":
        return []
    raise ValueError(f"unknown as_pid1 variant {request.param!r}")


@pytest.fixture
def start_init() -> Iterator[Callable[..., InitProcess]]:
    """Factory for ``InitProcess``; everything it started is killed on teardown."""
    started: list[InitProcess] = []

    def start(argv: list[str], **kwargs) -> InitProcess:
        proc = InitProcess(argv, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()
