"""pyinit as PID 1 of a real runc container, stopped the way `docker stop` stops it.

Why: every other test runs pyinit as a plain process or under `unshare`; only
here is it the init of a container with its own pid namespace, where the kernel
drops signals PID 1 has no handler for, orphans are reparented to it, and the
container's exit status is its exit status. The "docker stop" here is
`runc kill ID TERM`, then `runc kill ID KILL` after a timeout, as dockerd does.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.helpers import wait_until
from support.oci_bundle import (
    CONTAINER_PYTHON,
    Container,
    pid_namespace_members,
    require_runc,
    running,
)

PYZ_IN_CONTAINER = "/pyinit.pyz"
DOCKER_STOP_TIMEOUT = 5.0  # seconds between TERM and KILL in our `docker stop`
GRACE = 1.0  # pyinit --grace: shorter than DOCKER_STOP_TIMEOUT on purpose
START_TIMEOUT = 15.0  # first output of a fresh container (pyz start-up included)

# Child programs, run by /usr/bin/python3 inside the container. Each prints a
# `ready` line once its signal handling is in place, so the test never signals
# before the child can react.
CHILDREN = {
    "trap_term.py": """\
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print(f"ready pid={os.getpid()}", flush=True)
signal.sigwait({signal.SIGTERM})
print("caught SIGTERM, cleaning up", flush=True)
sys.exit(0)
""",
    "ignore_term.py": """\
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"ready pid={os.getpid()}", flush=True)
while True:
    time.sleep(60)
""",
    "exit_with.py": """\
import os, signal, sys
how, value = sys.argv[1], int(sys.argv[2])
print(f"ready pid={os.getpid()}", flush=True)
if how == "code":
    sys.exit(value)
if value != signal.SIGKILL:
    signal.signal(value, signal.SIG_DFL)
os.kill(os.getpid(), value)
""",
    # Double-forks N orphans: each middle process exits at once, so its child
    # is reparented to the container's PID 1; the orphan waits until that has
    # happened, then exits, and it is PID 1's job to reap it.
    "orphans.py": """\
import os, signal, sys, time
count = int(sys.argv[1])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
orphans = []
for _ in range(count):
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(r)
        middle_pid = os.getpid()
        orphan = os.fork()
        if orphan == 0:
            os.close(w)
            deadline = time.monotonic() + 10
            while os.getppid() == middle_pid and time.monotonic() < deadline:
                time.sleep(0.005)
            os._exit(0)
        os.write(w, str(orphan).encode())
        os._exit(0)
    os.close(w)
    orphans.append(int(os.read(r, 32)))
    os.close(r)
    os.waitpid(middle, 0)
print("orphans " + " ".join(map(str, orphans)), flush=True)
signal.sigwait({signal.SIGTERM})
sys.exit(0)
""",
}
CHILD_FILES = {f"/children/{name}": text for name, text in CHILDREN.items()}


def child(name: str, *args: object) -> list[str]:
    """Command line of one of CHILDREN inside the container."""
    return [CONTAINER_PYTHON, f"/children/{name}.py", *map(str, args)]


def pyinit_cmd(*options: str, command: list[str]) -> list[str]:
    """process.args running the pyz as the container's PID 1."""
    return [CONTAINER_PYTHON, PYZ_IN_CONTAINER, *options, "--", *command]


@pytest.fixture(params=["group", "single-child"])
def mode_options(request) -> list[str]:
    """Run a case in both signalling modes: process group (default) and --single-child."""
    return [] if request.param == "group" else ["--single-child"]


@pytest.fixture
def start_container(tmp_path: Path, pyz_path: Path) -> Iterator[Callable[[list[str]], Container]]:
    """Start containers holding the pyz and the child scripts; destroy them all afterwards."""
    require_runc(tmp_path / "probe")
    with contextlib.ExitStack() as stack:
        count = 0

        def start(args: list[str]) -> Container:
            nonlocal count
            base = tmp_path / f"c{count}"
            count += 1
            base.mkdir()
            files = {PYZ_IN_CONTAINER: pyz_path, **CHILD_FILES}
            return stack.enter_context(running(base, args, files=files))

        yield start


def describe(container: Container) -> str:
    """Output of a container, for assertion messages."""
    return f"stdout={container.stdout.text!r} stderr={container.stderr.text!r}"


def test_docker_stop_lets_a_trapping_child_exit_cleanly(start_container, mode_options):
    """TERM reaches the child through pyinit; the container exits 0 before any KILL."""
    container = start_container(
        pyinit_cmd("--grace", "30", *mode_options, command=child("trap_term"))
    )
    container.stdout.expect(r"^ready pid=", START_TIMEOUT)

    status, needed_kill = container.stop(DOCKER_STOP_TIMEOUT)

    assert not needed_kill, describe(container)
    assert status == 0, describe(container)
    container.stdout.join(5)
    assert "caught SIGTERM, cleaning up" in container.stdout.lines, describe(container)


@pytest.mark.parametrize(
    ("how", "value", "expected"),
    [
        ("code", 0, 0),
        ("code", 3, 3),
        ("signal", signal.SIGUSR1, 128 + signal.SIGUSR1),
        ("signal", signal.SIGKILL, 128 + signal.SIGKILL),
    ],
    ids=["exit-0", "exit-3", "killed-by-SIGUSR1", "killed-by-SIGKILL"],
)
def test_container_exit_status_is_the_childs(start_container, how, value, expected):
    """`runc run` (what `docker wait` reports) exits with the child's code, 128+N for signal N."""
    container = start_container(pyinit_cmd(command=child("exit_with", how, int(value))))

    status = container.wait(START_TIMEOUT)

    assert status == expected, describe(container)
    assert container.stdout.expect(r"^ready pid=", 5)


def test_child_ignoring_term_is_killed_after_pyinit_grace(start_container, mode_options):
    """pyinit's own --grace SIGKILLs a TERM-ignoring child before docker's timeout; exit 137."""
    container = start_container(
        pyinit_cmd("--grace", str(GRACE), *mode_options, command=child("ignore_term"))
    )
    container.stdout.expect(r"^ready pid=", START_TIMEOUT)

    started = time.monotonic()
    status, needed_kill = container.stop(DOCKER_STOP_TIMEOUT)
    elapsed = time.monotonic() - started

    assert not needed_kill, f"docker-stop had to SIGKILL the container; {describe(container)}"
    assert status == 128 + signal.SIGKILL, describe(container)
    assert elapsed >= GRACE * 0.9, (
        f"child was killed {elapsed:.2f}s after TERM, before the {GRACE}s grace"
    )


def orphan_ns_pids(container: Container) -> list[int]:
    """Pids (in the container's namespace) of the orphans the orphans.py child reported."""
    match = container.stdout.expect(r"^orphans ((?:\d+ ?)+)$", START_TIMEOUT)
    return [int(pid) for pid in match.group(1).split()]


def zombies_of_init(init_pid: int) -> list[int]:
    """Namespace pids of zombies whose parent is the container's init (host pid init_pid)."""
    return [
        inner
        for inner, state, ppid in pid_namespace_members(init_pid).values()
        if state == "Z" and ppid == init_pid
    ]


def test_orphans_are_reaped_while_the_container_runs(start_container, mode_options):
    """Double-forked orphans that exit are reaped by pyinit as PID 1: no zombie stays behind."""
    container = start_container(
        pyinit_cmd("--grace", "5", *mode_options, command=child("orphans", 5))
    )
    init_pid = container.init_host_pid()
    orphans = orphan_ns_pids(container)
    assert len(orphans) == 5

    def orphans_gone() -> bool:
        alive = {inner for inner, _, _ in pid_namespace_members(init_pid).values()}
        return not alive.intersection(orphans)

    wait_until(
        orphans_gone, 10, f"orphans {orphans} reaped; zombies of init: {zombies_of_init(init_pid)}"
    )
    assert zombies_of_init(init_pid) == []
    state = container.state()
    assert state is not None and state["status"] == "running", "container stopped before the check"

    status, needed_kill = container.stop(DOCKER_STOP_TIMEOUT)
    assert (status, needed_kill) == (0, False), describe(container)


def test_zombie_check_detects_an_init_that_does_not_reap(start_container):
    """Control for the reaping test: under an init that never reaps, the orphans stay zombies."""
    non_reaping_init = [
        CONTAINER_PYTHON,
        "-c",
        "import subprocess, sys; subprocess.call(sys.argv[1:])",
    ]
    container = start_container(non_reaping_init + child("orphans", 3))
    init_pid = container.init_host_pid()
    orphans = orphan_ns_pids(container)

    wait_until(
        lambda: sorted(zombies_of_init(init_pid)) == sorted(orphans),
        10,
        f"orphans {orphans} as zombies of init",
    )
