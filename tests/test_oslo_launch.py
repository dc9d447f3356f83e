"""oslo.service's shape: `pyinit.launch(conf, service, workers=N)` (issue 10).

The quickstart of oslo.service's documentation runs with `from oslo_service
import service` served by pyinit (tests/support/fork_alias), as a real
process, as PID 1 of a PID namespace and not.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest
from support.helpers import (
    SUPPORT_DIR,
    InitProcess,
    assert_no_traceback,
    base_env,
    children_of,
    is_dead,
    wait_until,
    zombie_children,
)

REPO_ROOT = SUPPORT_DIR.parent.parent
QUICKSTART = SUPPORT_DIR / "fork_oslo_quickstart.py"


def start_quickstart(prefix=()) -> InitProcess:
    env = base_env(
        {"PYTHONPATH": os.pathsep.join([str(SUPPORT_DIR / "fork_alias"), str(REPO_ROOT)])}
    )
    return InitProcess([sys.executable, str(QUICKSTART)], prefix=list(prefix), env=env)


def started_workers(proc: InitProcess, count: int) -> list[int]:
    """Host pids of the launcher's live children, once `count` said they started."""
    wait_until(
        lambda: len([line for line in proc.stdout_lines if line.endswith(" starting...")]) >= count,
        15,
        lambda: f"{count} workers starting ({proc.describe()})",
    )
    return wait_until(
        lambda: len(kids := [k for k in children_of(proc.pid) if not is_dead(k)]) == 2 and kids,
        5,
        "two live workers",
    )


@pytest.mark.parametrize("as_pid1", ["pid1", "subreaper"], indirect=True)
def test_oslo_quickstart_runs_2_workers_and_stops_cleanly_on_sigterm(as_pid1):
    with start_quickstart(as_pid1) as proc:
        workers = started_workers(proc, 2)
        proc.send(signal.SIGTERM)
        assert proc.wait(15) == 0
        proc._out.closed.wait(5)  # read stdout to its end
        lines = proc.stdout_lines
        # The quickstart's print() calls share one pipe: count, do not split lines.
        assert "\n".join(lines).count(" stopping...") == 2
        assert lines[-1] == "All services stopped."
        assert "Service initialized with 2 workers." in lines
        assert all(is_dead(pid) for pid in workers)
        assert_no_traceback(proc.stderr_lines())


def test_a_killed_oslo_worker_is_replaced_and_reaped():
    with start_quickstart() as proc:
        first = started_workers(proc, 2)
        os.kill(first[0], signal.SIGKILL)
        after = started_workers(proc, 3)
        assert first[0] not in after and first[1] in after
        wait_until(lambda: not zombie_children(proc.pid), 5, "the dead worker reaped")
        proc.send(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_launch_refuses_a_class_and_bad_workers():
    code = (
        "import pyinit\n"
        "class S(pyinit.ServiceBase): pass\n"
        "bad_calls = (lambda: pyinit.launch(None, S),\n"
        "             lambda: pyinit.launch(None, S(), workers=0))\n"
        "for bad in bad_calls:\n"
        "    try:\n"
        "        bad()\n"
        "    except (TypeError, ValueError) as error:\n"
        "        print(type(error).__name__)\n"
    )
    env = base_env({"PYTHONPATH": str(REPO_ROOT)})
    with InitProcess([sys.executable, "-c", code], env=env) as proc:
        assert proc.wait(15) == 0
        assert proc.stdout_lines == ["TypeError", "ValueError"]
