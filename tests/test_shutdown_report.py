"""A stop says what it waits for, and how it ended (issue 11): services mode,
and single-command mode, which stays quiet when the stop is quick.

pyinit runs as PID 1 of a PID namespace with JSON logs; one service
ignores SIGTERM (grace 1.5 s), two stop at once. A moment into the grace
one `stop_wait` record names the stubborn worker and when SIGKILL comes;
the last record, `stopped`, counts the workers, the time, what had to be
killed and the exit status.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path

import pytest
from support.helpers import PID1_ONLY, StartInit, print_signals
from support.svc_helpers import Events, services_env, svc


def records(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_stop_names_who_it_waits_for_and_sums_up(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = (
        f"deaf[grace=1.5]: {svc(events.path, 'deaf', '--ignore-term')};"
        f" polite[2]: {svc(events.path, 'polite')}"
    )
    proc = start_init(
        [*pyinit_argv, "--log-format", "json"], prefix=as_pid1, env=services_env(spec)
    )
    events.context = proc.describe
    events.wait_starts("deaf", 1)
    events.wait_starts("polite", 2)
    proc.send(signal.SIGTERM)
    result = proc.result(10)
    assert result.returncode == 0, result
    logged = records(result.stderr)
    waits = [r for r in logged if r.get("event") == "stop_wait"]
    assert len(waits) == 1, logged
    assert "deaf[0]" in str(waits[0]["message"]) and "SIGKILL in" in str(waits[0]["message"])
    assert "polite" not in str(waits[0]["message"]), "the polite ones had stopped by then"
    last = logged[-1]
    assert last.get("event") == "stopped", logged
    message = str(last["message"])
    assert message.startswith("stopped 3 worker(s) in "), message
    assert "SIGKILL needed for deaf[0]" in message and "exit status 0" in message, message
    assert last.get("exit_code") == 0


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed"], indirect=True)
def test_a_quick_stop_says_nothing_was_killed_and_waits_for_nobody(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = f"polite[2]: {svc(events.path, 'polite')}"
    proc = start_init([*pyinit_argv], prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    events.wait_starts("polite", 2)
    proc.send(signal.SIGTERM)
    result = proc.result(10)
    assert result.returncode == 0, result
    assert not any("waiting for" in line for line in result.stderr), result.stderr
    assert "none killed; exit status 0" in result.stderr[-1], result.stderr


# -- single-command mode: the same two lines, quiet when the stop is quick -------------

# A child that takes 1.2 s to stop after SIGTERM, then exits with status 5.
SLOW_STOPPER = [
    sys.executable,
    "-c",
    "import signal, sys, time\n"
    "def stop(*_):\n    time.sleep(1.2)\n    sys.exit(5)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print('ready', flush=True)\n"
    "while True:\n    signal.pause()\n",
]


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_single_stop_past_the_grace_names_the_child_and_warns(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init(
        [*pyinit_argv, "--log-format", "json", "--grace", "1.5", "--", *print_signals()],
        prefix=as_pid1,
    )
    proc.expect_line(r"ready \(pid: \d+\)")
    proc.send(signal.SIGTERM)
    result = proc.result(10)
    assert result.returncode == 128 + signal.SIGKILL, result
    logged = records(result.stderr)
    waits = [r for r in logged if r.get("event") == "stop_wait"]
    assert len(waits) == 1 and waits[0]["level"] == "info", logged
    message = str(waits[0]["message"])
    assert message.startswith("waiting for '"), message
    assert re.search(r"\(pid \d+\) to stop; SIGKILL in 0\.\d s$", message), message
    last = logged[-1]
    assert last.get("event") == "stopped" and last["level"] == "warning", logged
    text = str(last["message"])
    assert "SIGKILL needed for the process group; exit status 137" in text, text
    assert last.get("exit_code") == 137


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed"], indirect=True)
def test_single_slow_but_graceful_stop_says_so_at_info(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    proc = start_init([*pyinit_argv, "--grace", "5", "--", *SLOW_STOPPER], prefix=as_pid1)
    proc.expect_line("ready")
    proc.send(signal.SIGTERM)
    result = proc.result(10)
    assert result.returncode == 5, result
    waits = [line for line in result.stderr if "waiting for" in line]
    assert len(waits) == 1 and waits[0].startswith("pyinit: info: waiting for "), result.stderr
    assert re.search(r"\(pid \d+\) to stop; SIGKILL in [34]\.\d s$", waits[0]), waits
    summary = result.stderr[-1]
    assert summary.startswith("pyinit: info: stopped "), result.stderr
    assert summary.endswith("none killed; exit status 5"), summary
    took = float(summary.split(" in ")[1].split(" s;")[0])
    assert 1.1 <= took < 3, summary


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed"], indirect=True)
def test_single_quick_stop_is_quiet_unless_verbose(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    for verbose in ([], ["-v"]):
        proc = start_init([*pyinit_argv, *verbose, "--", "sh", "-c", "echo up; exec sleep 60"],
                          prefix=as_pid1)  # fmt: skip
        proc.expect_line("up")
        proc.send(signal.SIGTERM)
        result = proc.result(10)
        assert result.returncode == 128 + signal.SIGTERM, result
        assert not any("waiting for" in line for line in result.stderr), result.stderr
        stopped = [line for line in result.stderr if " stopped 'sh' " in line]
        if verbose:
            assert len(stopped) == 1 and stopped[0].startswith("pyinit: debug: "), result.stderr
            assert stopped[0].endswith("none killed; exit status 143"), stopped
        else:
            assert stopped == [], result.stderr
