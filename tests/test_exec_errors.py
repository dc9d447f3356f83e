"""A COMMAND that cannot run: 127 when not found, 126 when not executable (as tini).

The message is one line, `pyinit: COMMAND: <strerror>`, and never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.helpers import INSTALLED_ONLY, SUBREAPER_ONLY, assert_no_traceback, base_env, run_init


@INSTALLED_ONLY
@pytest.mark.parametrize("command", ["/nonexistent/dir/cmd", "no-such-command-pyinit-test"])
def test_missing_command_is_127(pyinit_argv: list[str], as_pid1: list[str], command: str) -> None:
    result = run_init([*pyinit_argv, "--", command, "arg"], prefix=as_pid1)
    assert result.returncode == 127, result
    assert f"pyinit: {command}: No such file or directory" in result.stderr, result.stderr
    assert_no_traceback(result.stderr)


@pytest.mark.parametrize("as_pid1", ["subreaper"], indirect=True)
def test_missing_command_with_both_builds(pyinit_argv: list[str], as_pid1: list[str]) -> None:
    result = run_init([*pyinit_argv, "nonexistent-cmd-without-dashdash"])
    assert result.returncode == 127, result
    assert "pyinit: nonexistent-cmd-without-dashdash: No such file or directory" in result.stderr
    assert_no_traceback(result.stderr)


@pytest.fixture
def not_executable(tmp_path: Path) -> Path:
    path = tmp_path / "script.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o644)
    return path


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_not_executable_file_is_126(
    pyinit_argv: list[str], as_pid1: list[str], not_executable: Path
) -> None:
    result = run_init([*pyinit_argv, "--", str(not_executable)])
    assert result.returncode == 126, result
    assert any(line.startswith(f"pyinit: {not_executable}: ") for line in result.stderr), (
        result.stderr
    )
    assert_no_traceback(result.stderr)


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_directory_is_126(pyinit_argv: list[str], as_pid1: list[str], tmp_path: Path) -> None:
    result = run_init([*pyinit_argv, "--", str(tmp_path)])
    assert result.returncode == 126, result
    assert any(line.startswith(f"pyinit: {tmp_path}: ") for line in result.stderr), result.stderr
    assert_no_traceback(result.stderr)


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_not_executable_found_on_path_is_126(
    pyinit_argv: list[str], as_pid1: list[str], not_executable: Path
) -> None:
    """execvp semantics: a match on PATH without the x bit is EACCES, not 'not found'."""
    env = base_env({"PATH": f"{not_executable.parent}{os.pathsep}{os.environ['PATH']}"})
    result = run_init([*pyinit_argv, "--", not_executable.name], env=env)
    assert result.returncode == 126, result
    assert_no_traceback(result.stderr)


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_missing_interpreter_is_127(
    pyinit_argv: list[str], as_pid1: list[str], tmp_path: Path
) -> None:
    """A script whose #! interpreter does not exist fails exec with ENOENT, like tini: 127."""
    script = tmp_path / "bad-interpreter"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    result = run_init([*pyinit_argv, "--", str(script)])
    assert result.returncode == 127, result
    assert_no_traceback(result.stderr)
