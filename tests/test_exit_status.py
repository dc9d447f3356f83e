"""pyinit exits with its command's status: N for exit(N), 128+N for death by signal N.

Every code 0..255 runs once with the installed command (concurrently, to stay
fast); a sample runs across the whole matrix (installed/pyz x PID 1/subreaper).
The pyz must also survive a hostile PYTHONPATH and another working directory.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    PYZ_ONLY,
    SUBREAPER_ONLY,
    assert_no_traceback,
    base_env,
    run_init,
)

SAMPLE_CODES = [0, 1, 2, 3, 126, 127, 128, 129, 254, 255]
SAMPLE_SIGNALS = [1, 2, 3, 9, 15, 31]


def exits_with(code: int) -> list[str]:
    """A command that exits with ``code``."""
    return ["sh", "-c", f"exit {code}"]


def killed_by(signum: int) -> list[str]:
    """A command that kills itself with ``signum`` (no core file left behind)."""
    return ["sh", "-c", f"ulimit -c 0; kill -{signum} $$"]


def statuses(
    pyinit_argv: list[str],
    commands: dict[object, list[str]],
    *,
    prefix: list[str] = (),
    env: dict[str, str] | None = None,
    extra: list[str] = (),
) -> dict[object, int]:
    """Run pyinit once per command, a few at a time, and return each status."""

    def one(cmd: list[str]) -> int:
        result = run_init([*pyinit_argv, *extra, "--", *cmd], prefix=prefix, env=env)
        assert_no_traceback(result.stderr)
        return result.returncode

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(one, cmd) for key, cmd in commands.items()}
        return {key: future.result() for key, future in futures.items()}


@INSTALLED_ONLY
def test_every_exit_code_is_propagated(pyinit_argv: list[str]) -> None:
    got = statuses(pyinit_argv, {code: exits_with(code) for code in range(256)})
    wrong = {code: status for code, status in got.items() if status != code}
    assert not wrong, f"exit code -> pyinit status, where they differ: {wrong}"


def test_sampled_statuses_across_matrix(pyinit_argv: list[str], as_pid1: list[str]) -> None:
    commands: dict[object, list[str]] = {("exit", c): exits_with(c) for c in SAMPLE_CODES}
    commands.update({("signal", n): killed_by(n) for n in SAMPLE_SIGNALS})
    got = statuses(pyinit_argv, commands, prefix=as_pid1)
    expected = {("exit", c): c for c in SAMPLE_CODES}
    expected.update({("signal", n): 128 + n for n in SAMPLE_SIGNALS})
    assert got == expected


@INSTALLED_ONLY
def test_death_by_every_fatal_signal_is_128_plus_n(pyinit_argv: list[str]) -> None:
    fatal = [n for n in range(1, 32) if n not in (17, 18, 19, 20, 21, 22, 23, 28)]
    got = statuses(pyinit_argv, {n: killed_by(n) for n in fatal})
    assert got == {n: 128 + n for n in fatal}


@INSTALLED_ONLY
@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["-e", "3"], {}, {"exit3": 0, "exit4": 4, "term": 143}),
        (["--remap-exit", "143"], {}, {"exit3": 3, "exit4": 4, "term": 0}),
        (["--remap-exit=143", "-e", "4"], {}, {"exit3": 3, "exit4": 0, "term": 0}),
        ([], {"PYINIT_REMAP_EXIT": "143,3"}, {"exit3": 0, "exit4": 4, "term": 0}),
        # A flag replaces the variable's list, it does not add to it.
        (["-e", "4"], {"PYINIT_REMAP_EXIT": "143,3"}, {"exit3": 3, "exit4": 0, "term": 143}),
    ],
    ids=["flag-code", "flag-143", "two-flags", "variable", "flag-replaces-variable"],
)
def test_remap_exit(
    pyinit_argv: list[str], args: list[str], env: dict[str, str], expected: dict[str, int]
) -> None:
    commands = {"exit3": exits_with(3), "exit4": exits_with(4), "term": killed_by(15)}
    got = statuses(pyinit_argv, commands, env=base_env(env), extra=args)
    assert got == expected


@INSTALLED_ONLY
def test_remap_exit_applies_to_sigkill_status(pyinit_argv: list[str]) -> None:
    got = statuses(
        pyinit_argv, {"kill": killed_by(9)}, env=base_env({"PYINIT_REMAP_EXIT": "143,137"})
    )
    assert got == {"kill": 0}


# --------------------------------------------------------------------------- the pyz


@pytest.fixture
def hostile_pythonpath(tmp_path: Path) -> Path:
    """A PYTHONPATH directory whose modules shadow the stdlib and explode on import."""
    root = tmp_path / "shadow"
    (root / "logging").mkdir(parents=True)
    bomb = "raise RuntimeError('shadowed stdlib module imported: {}')\n"
    for name in ("selectors", "subprocess", "signal", "argparse", "json", "tomllib", "ctypes"):
        (root / f"{name}.py").write_text(bomb.format(name))
    (root / "logging" / "__init__.py").write_text(bomb.format("logging"))
    (root / "sitecustomize.py").write_text(bomb.format("sitecustomize"))
    (root / "usercustomize.py").write_text(bomb.format("usercustomize"))
    return root


@PYZ_ONLY
@SUBREAPER_ONLY
def test_pyz_from_another_cwd(pyinit_argv: list[str], as_pid1: list[str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_init([*pyinit_argv, "--", "sh", "-c", "pwd; exit 5"], cwd=elsewhere)
    assert result.returncode == 5
    assert result.stdout == [str(elsewhere)]
    assert_no_traceback(result.stderr)


@PYZ_ONLY
@SUBREAPER_ONLY
def test_pyz_with_hostile_pythonpath(
    pyinit_argv: list[str], as_pid1: list[str], hostile_pythonpath: Path, tmp_path: Path
) -> None:
    """Shadowed selectors/subprocess/logging/json and a sitecustomize that raises.

    The JSON log format is asked for, so the logging and json pyinit uses must
    be the real ones. Python itself may still report the broken sitecustomize.
    """
    env = base_env({"PYTHONPATH": str(hostile_pythonpath)})
    command = ["sh", "-c", 'echo "$PYTHONPATH"; exit 7']
    result = run_init([*pyinit_argv, "--log-format", "json", "--", *command], env=env, cwd=tmp_path)
    assert result.returncode == 7, result
    # The child still gets the user's environment untouched.
    assert result.stdout == [str(hostile_pythonpath)]
    assert_no_traceback(result.stderr)
    records = [json.loads(line) for line in result.stderr if line.startswith("{")]
    assert any(r.get("exit_code") == 7 for r in records), result.stderr


@PYZ_ONLY
@SUBREAPER_ONLY
def test_pyz_with_hostile_pythonpath_killed_child(
    pyinit_argv: list[str], as_pid1: list[str], hostile_pythonpath: Path
) -> None:
    env = base_env({"PYTHONPATH": str(hostile_pythonpath)})
    result = run_init([*pyinit_argv, "--", *killed_by(15)], env=env)
    assert result.returncode == 143, result
    assert_no_traceback(result.stderr)


def test_pyz_runs_as_an_executable(pyz_path: Path, tmp_path: Path) -> None:
    """`./pyinit.pyz CMD` through its /bin/sh launcher."""
    assert os.access(pyz_path, os.X_OK), f"{pyz_path} is not executable"
    assert pyz_path.read_bytes().startswith(b"#!/bin/sh\n")
    result = run_init([str(pyz_path), "--", *exits_with(42)], cwd=tmp_path)
    assert result.returncode == 42, result
    assert_no_traceback(result.stderr)


def test_pyz_launcher_runs_the_interpreter_isolated(pyz_path: Path, tmp_path: Path) -> None:
    """Run as a program (by a relative path, from another directory), PID 1's
    interpreter gets -I -S: no site, no PYTHONPATH."""
    relative = os.path.relpath(pyz_path, tmp_path)
    script = 'tr "\\0" " " < /proc/$PPID/cmdline'
    result = run_init([relative, "--", "sh", "-c", script], cwd=tmp_path)
    assert result.returncode == 0, result
    words = " ".join(result.stdout).split()
    assert "-I" in words and "-S" in words, result.stdout


def test_pyz_under_system_python(pyz_path: Path) -> None:
    """The interpreter a container has (Debian's python3), not the dev one."""
    python = "/usr/bin/python3"
    if not os.path.exists(python) or os.path.realpath(python) == os.path.realpath(sys.executable):
        pytest.skip("no separate system python3")
    result = run_init([python, str(pyz_path), "--", *killed_by(2)])
    assert result.returncode == 130, result
    assert_no_traceback(result.stderr)
