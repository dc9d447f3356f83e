"""A services-mode stop says what it waits for, and how it ended (issue 11).

pyinit runs as PID 1 of a PID namespace with JSON logs; one service
ignores SIGTERM (grace 1.5 s), two stop at once. A moment into the grace
one `stop_wait` record names the stubborn worker and when SIGKILL comes;
the last record, `stopped`, counts the workers, the time, what had to be
killed and the exit status.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from support.helpers import PID1_ONLY, StartInit
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
