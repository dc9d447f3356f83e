"""pyinit's own log lines: on stderr, text (`pyinit...`) or one JSON object a line.

JSON records always carry time, level and message (SPEC section 7); the child's
own output is not touched (it goes to stdout here, which must stay raw).
"""

from __future__ import annotations

import json
import signal
from datetime import datetime

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    SUBREAPER_ONLY,
    StartInit,
    base_env,
    print_signals,
    run_init,
)

READY = r"ready \(pid: \d+\)"
LEVELS = {"debug", "info", "warning", "error", "critical"}


def json_records(lines: list[str]) -> list[dict]:
    """Parse every stderr line as one JSON object carrying time, level and message."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"stderr line is not JSON: {line!r}")
        assert isinstance(record, dict), line
        missing = {"time", "level", "message"} - record.keys()
        assert not missing, f"{line!r} lacks {missing}"
        assert str(record["level"]).lower() in LEVELS, line
        assert isinstance(record["message"], str) and record["message"], line
        datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
        records.append(record)
    return records


@SUBREAPER_ONLY
@pytest.mark.parametrize("how", ["flag", "variable"])
def test_json_lines_with_verbose(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, how: str
) -> None:
    args, env = (
        (["--log-format", "json"], {}) if how == "flag" else ([], {"PYINIT_LOG_FORMAT": "json"})
    )
    proc = start_init(
        [*pyinit_argv, "-v", *args, "--", *print_signals("--exit-on", "15", "--exit-code", "4")],
        env=base_env(env),
    )
    proc.expect_line(READY)
    proc.send(signal.SIGUSR1)
    assert proc.next_line() == "10"
    proc.send(signal.SIGTERM)
    assert proc.next_line() == "15"
    assert proc.wait(5) == 4
    records = json_records(proc.stderr_lines())
    assert len(records) >= 2, "expected at least the start and the exit to be logged"
    assert any(str(r["level"]).lower() == "debug" for r in records), "-v logged nothing at debug"
    assert proc.stdout_lines == [proc.stdout_lines[0], "10", "15"], "child output was altered"


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_json_exit_record_carries_exit_code(pyinit_argv: list[str], as_pid1: list[str]) -> None:
    result = run_init([*pyinit_argv, "--log-format=json", "--", "sh", "-c", "exit 3"])
    assert result.returncode == 3
    records = json_records(result.stderr)
    assert any(r.get("exit_code") == 3 for r in records), records


@INSTALLED_ONLY
@SUBREAPER_ONLY
@pytest.mark.parametrize("args", [[], ["-v"], ["--log-level", "debug"], ["--log-format", "text"]])
def test_text_lines_start_with_pyinit(
    pyinit_argv: list[str], as_pid1: list[str], args: list[str]
) -> None:
    result = run_init([*pyinit_argv, *args, "--", "sh", "-c", "kill -USR2 $$"])
    assert result.returncode == 128 + signal.SIGUSR2
    assert result.stderr, "nothing logged at all"
    assert all(line.startswith("pyinit") for line in result.stderr), result.stderr


@INSTALLED_ONLY
@SUBREAPER_ONLY
@pytest.mark.parametrize("how", ["flag", "variable"])
def test_log_level_error_is_quiet_on_success(
    pyinit_argv: list[str], as_pid1: list[str], how: str
) -> None:
    args, env = (
        (["--log-level", "error"], {}) if how == "flag" else ([], {"PYINIT_LOG_LEVEL": "error"})
    )
    result = run_init([*pyinit_argv, *args, "--", "sh", "-c", "exit 0"], env=base_env(env))
    assert result.returncode == 0
    assert result.stderr == []
