"""cotyledon's own example programs, run under cotyledon and under pyinit (issue 10).

The cotyledon package ships `cotyledon/tests/examples.py` (the programs) and
`test_functional.py` (the scenarios). Each test here runs one scenario twice:
once with the real cotyledon, once with `tests/support/fork_alias` first on
PYTHONPATH, where `import cotyledon` re-exports pyinit's `Service` and
`ServiceManager`. The program is the same file, unchanged. The assertions are
what a user of the program sees, and they must hold for both: the lines the
program itself logs (logger `cotyledon.tests.examples`; each library words
its own log lines differently), the exit status, which workers live, die and
are replaced. The library's own log lines are left out on purpose.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support.helpers import (
    SUPPORT_DIR,
    InitProcess,
    base_env,
    children_of,
    cmdline,
    is_dead,
    proc_stat,
    tagged_pids,
    wait_until,
    zombie_children,
)

REPO_ROOT = SUPPORT_DIR.parent.parent
ALIAS_DIR = SUPPORT_DIR / "fork_alias"
USER_PREFIX = "ERROR:cotyledon.tests.examples:"
IMPLEMENTATIONS = ["cotyledon", "pyinit"]


def examples_py() -> Path:
    spec = importlib.util.find_spec("cotyledon")
    if spec is None or spec.origin is None:
        pytest.fail("cotyledon is not installed: it is in the `test` extra")
    path = Path(spec.origin).parent / "tests" / "examples.py"
    assert path.is_file(), f"{path} missing from the cotyledon package"
    return path


class Example:
    """One run of examples.py `scenario` under `impl`, seen from outside."""

    def __init__(self, impl: str, scenario: str, prefix: tuple[str, ...] = ()) -> None:
        env = base_env()
        if impl == "pyinit":
            env["PYTHONPATH"] = os.pathsep.join([str(ALIAS_DIR), str(REPO_ROOT)])
        self.impl = impl
        self.proc = InitProcess(
            [sys.executable, str(examples_py()), scenario], prefix=list(prefix), env=env
        )

    def exited(self, timeout: float = 15) -> int:
        """Exit status, once stdout is read to its end (workers may write until they exit)."""
        code = self.proc.wait(timeout)
        self.proc._out.closed.wait(5)
        return code

    def user_lines(self) -> list[str]:
        """What the program itself logged, in order."""
        return [
            line[len(USER_PREFIX) :]
            for line in self.proc.stdout_lines
            if line.startswith(USER_PREFIX)
        ]

    def wait_user_lines(self, counts: dict[str, int], since: int = 0, timeout: float = 15) -> None:
        """Wait until the program logged each line at least `counts` times after `since`."""

        def enough() -> bool:
            seen = Counter(self.user_lines()[since:])
            return all(seen[line] >= n for line, n in counts.items())

        wait_until(enough, timeout, lambda: f"{counts} in {self.user_lines()[since:]}")

    def workers(self) -> dict[str, int]:
        """`heavy0` -> pid for the live workers, from either library's process title."""
        found = {}
        for pid in children_of(self.proc.pid):
            stat = proc_stat(pid)
            if stat is None or stat.state == "Z":
                continue
            title = " ".join(cmdline(pid)) + " " + stat.comm
            match = re.search(r"\b(heavy|light|buggy|oslo)(?: worker\(|\[)(\d+)", title)
            if match:
                found[match[1] + match[2]] = pid
        return found

    def wait_workers(self, names: set[str], timeout: float = 15) -> dict[str, int]:
        def have_all() -> dict[str, int] | None:
            found = self.workers()
            return found if names <= set(found) else None

        return wait_until(
            have_all,
            timeout,
            lambda: f"workers {names} (have {self.workers()}; {self.proc.describe()})",
        )

    def wait_replaced(self, name: str, old: int, timeout: float = 15) -> int:
        return wait_until(
            lambda: (pid := self.workers().get(name)) not in (None, old) and pid,
            timeout,
            lambda: f"{name} (pid {old}) replaced: {self.workers()}",
        )

    def close(self) -> None:
        self.proc.close()


@pytest.fixture
def example(request: pytest.FixtureRequest):
    """Factory: example(impl, scenario); every process is cleaned up afterwards."""
    started: list[Example] = []

    def start(impl: str, scenario: str, prefix: tuple[str, ...] = ()) -> Example:
        started.append(Example(impl, scenario, prefix))
        return started[-1]

    yield start
    for run in started:
        run.close()


def all_dead(pids) -> bool:
    return all(is_dead(pid) for pid in pids)


def started_app(example, impl: str, prefix: tuple[str, ...] = ()) -> tuple[Example, dict]:
    """example_app with its 2 heavy and 1 light workers up and running."""
    app = example(impl, "example_app", prefix)
    app.wait_user_lines({"heavy init": 2, "heavy run": 2})
    return app, app.wait_workers({"heavy0", "heavy1", "light0"})


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_workflow(example, impl):
    """test_functional's test_workflow: reload, restarts with the exit code, SIGTERM."""
    app, workers = started_app(example, impl)
    assert len(app.workers()) == 3  # LigthService was reconfigured from 5 to 1

    mark = len(app.user_lines())
    os.kill(workers["heavy0"], signal.SIGHUP)  # reload() is called, the worker stays
    app.wait_user_lines({"heavy reload": 1}, mark)
    assert app.workers()["heavy0"] == workers["heavy0"]

    os.kill(workers["light0"], signal.SIGHUP)  # no reload(): a fresh worker
    workers["light0"] = app.wait_replaced("light0", workers["light0"])

    mark = len(app.user_lines())
    os.kill(workers["heavy0"], signal.SIGTERM)  # terminate() exits 42; replaced
    app.wait_user_lines({"heavy terminate": 1, "heavy init": 1, "heavy run": 1}, mark)
    assert app.user_lines()[mark:] == ["heavy terminate", "heavy init", "heavy run"]
    workers["heavy0"] = app.wait_replaced("heavy0", workers["heavy0"])

    os.kill(workers["light0"], signal.SIGTERM)  # no terminate(): exits 0; replaced
    workers["light0"] = app.wait_replaced("light0", workers["light0"])
    wait_until(lambda: not zombie_children(app.proc.pid), 5, "dead workers reaped")

    mark = len(app.user_lines())
    app.proc.send(signal.SIGTERM)
    assert app.exited() == 0
    assert sorted(app.user_lines()[mark:]) == [
        "heavy terminate",
        "heavy terminate",
        "master terminate hook",
        "master terminate2 hook",
    ]
    wait_until(lambda: all_dead(workers.values()), 5, "every worker gone")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sigint(example, impl):
    """SIGINT: everything exits at once, without terminate(); the manager with 1."""
    app, workers = started_app(example, impl)
    mark = len(app.user_lines())
    app.proc.send(signal.SIGINT)
    assert app.exited() == 1
    wait_until(lambda: all_dead(workers.values()), 5, "every worker gone")
    assert app.user_lines()[mark:] == []


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sighup(example, impl):
    """SIGHUP to the manager: its reload hook, reload() in each heavy, a fresh light."""
    app, workers = started_app(example, impl)
    mark = len(app.user_lines())
    app.proc.send(signal.SIGHUP)
    app.wait_user_lines({"heavy reload": 2, "master reload hook": 1}, mark)
    app.wait_replaced("light0", workers["light0"])
    assert app.workers()["heavy0"] == workers["heavy0"]
    assert app.workers()["heavy1"] == workers["heavy1"]
    app.proc.send(signal.SIGINT)
    assert app.exited() == 1
    wait_until(lambda: all_dead(app.workers().values()), 5, "every worker gone")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sigkill_of_the_manager(example, impl):
    """The workers notice their manager died and stop gracefully (terminate() runs)."""
    app, workers = started_app(example, impl)
    mark = len(app.user_lines())
    app.proc.send(signal.SIGKILL)
    assert app.exited() == -signal.SIGKILL
    wait_until(lambda: all_dead(workers.values()), 5, "every worker gone")
    assert sorted(app.user_lines()[mark:]) == ["heavy terminate", "heavy terminate"]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_badly_coded_service(example, impl):
    """A service whose run() raises is restarted; SIGTERM still stops all with 0."""
    app = example(impl, "badly_coded_app")
    wait_until(
        lambda: "so badly coded service" in "\n".join(
            app.proc.stdout_lines + app.proc._err.lines
        ),
        15,
        "the worker's exception logged",
    )
    app.proc.send(signal.SIGTERM)
    assert app.exited() == 0
    wait_until(lambda: not children_of(app.proc.pid), 5, "no worker left")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_graceful_timeout_on_sigterm(example, impl):
    """BuggyService's terminate() hangs: graceful_shutdown_timeout=1 ends it."""
    app = example(impl, "buggy_app")
    worker = app.wait_workers({"buggy0"})["buggy0"]
    started = time.monotonic()
    app.proc.send(signal.SIGTERM)
    assert app.exited() == 0
    assert 0.9 <= time.monotonic() - started < 5
    assert is_dead(worker)
    assert "time.sleep done" not in app.user_lines()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_graceful_timeout_after_sigkill_of_the_manager(example, impl):
    """The orphaned BuggyService still honours its graceful_shutdown_timeout."""
    app = example(impl, "buggy_app")
    worker = app.wait_workers({"buggy0"})["buggy0"]
    app.proc.send(signal.SIGKILL)
    assert app.exited() == -signal.SIGKILL
    wait_until(lambda: is_dead(worker), 5, "the buggy worker gone")
    assert "time.sleep done" not in app.user_lines()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_oslo_config_glue(example, impl):
    """oslo_app: the glue's options are listed and logged at start."""
    app = example(impl, "oslo_app")
    wait_until(
        lambda: any(line.endswith(":Full set of CONF:") for line in app.proc.stdout_lines),
        15,
        "the options logged",
    )
    app.wait_workers({"oslo0"})
    app.proc.send(signal.SIGTERM)
    assert app.exited() == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sigterm_during_start_up(example, impl):
    """A SIGTERM 10 ms into start-up: a clean exit 0, no worker left behind.

    The example's 10 ms timer can fire before `ServiceManager()` installed any
    handler, when the machine is busy: then the default action kills the
    process (143), under cotyledon as under pyinit (measured with two cores
    busy: 2/20 and 1/20 runs). That race is the example's, so a run killed
    that way is retried; test_service_manager's early-term test covers the
    same behaviour deterministically.
    """
    for _attempt in range(3):
        app = example(impl, "sigterm_during_init")
        code = app.exited()
        if code != -signal.SIGTERM:
            break
    assert code == 0
    wait_until(lambda: not tagged_pids(app.proc.tag), 5, "no worker left")


def test_workflow_as_pid1_leaves_no_zombie(example):
    """pyinit's manager as PID 1 of a PID namespace: restarts leave no zombie."""
    app, workers = started_app(example, "pyinit", ("unshare", "--pid", "--fork", "--mount-proc"))
    os.kill(workers["light0"], signal.SIGTERM)
    app.wait_replaced("light0", workers["light0"])
    os.kill(workers["heavy1"], signal.SIGKILL)
    app.wait_replaced("heavy1", workers["heavy1"])
    wait_until(lambda: not zombie_children(app.proc.pid), 5, "dead workers reaped")
    app.proc.send(signal.SIGTERM)
    assert app.exited() == 0
