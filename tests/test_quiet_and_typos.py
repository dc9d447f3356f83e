"""Quiet where tini is quiet, and typos in PYINIT_* names said out loud (issue 11).

Single-command mode at the default log level writes nothing of its own when
all goes well, so `docker logs` shows the app; a failing COMMAND is one line.
A PYINIT_* variable pyinit does not know gets one warning with the closest
name, and is otherwise ignored.
"""

from __future__ import annotations

import pytest
from support.helpers import INSTALLED_ONLY, base_env, run_init


@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_a_successful_command_leaves_stderr_to_the_app(
    pyinit_argv: list[str], as_pid1: list[str]
) -> None:
    result = run_init([*pyinit_argv, "--", "sh", "-c", "echo app >&2"], prefix=as_pid1)
    assert result.returncode == 0, result
    assert result.stderr == ["app"], result.stderr


@INSTALLED_ONLY
def test_a_failing_command_is_one_line(pyinit_argv: list[str], as_pid1: list[str]) -> None:
    result = run_init([*pyinit_argv, "--", "sh", "-c", "exit 3"], prefix=as_pid1)
    assert result.returncode == 3, result
    assert len(result.stderr) == 1 and "exit status 3" in result.stderr[0], result.stderr


@INSTALLED_ONLY
def test_debug_still_tells_the_whole_story(pyinit_argv: list[str], as_pid1: list[str]) -> None:
    result = run_init([*pyinit_argv, "-v", "--", "true"], prefix=as_pid1)
    assert result.returncode == 0, result
    assert any("started 'true'" in line for line in result.stderr), result.stderr
    assert any("ended: exit status 0" in line for line in result.stderr), result.stderr


@INSTALLED_ONLY
def test_a_mistyped_variable_gets_a_warning_with_the_closest_name(
    pyinit_argv: list[str], as_pid1: list[str]
) -> None:
    env = base_env({"PYINIT_GRAC": "1"})
    result = run_init([*pyinit_argv, "--", "true"], prefix=as_pid1, env=env)
    assert result.returncode == 0, result
    assert result.stderr == [
        "pyinit: warning: unknown variable 'PYINIT_GRAC' is ignored; did you mean PYINIT_GRACE?"
    ], result.stderr


@INSTALLED_ONLY
def test_check_warns_about_a_mistyped_variable_too(pyinit_argv: list[str]) -> None:
    env = base_env({"PYINIT_SERVICES": "a: sleep 1", "PYINIT_LOG_FORMT": "json"})
    result = run_init([*pyinit_argv, "--check"], env=env)
    assert result.returncode == 0, result
    assert any("PYINIT_LOG_FORMT" in line and "PYINIT_LOG_FORMAT" in line for line in result.stderr)
