"""Harness for behaviour tests: run the real pyinit, read /proc, wait with deadlines.

Modelled on dumb-init's ``testing/`` (``print_signals``, ``pid_tree``,
``process_state``) and supervisor's end-to-end ``expect_exact``: every wait has
a deadline, every process a test starts is killed on teardown, and no test
synchronises with a bare ``sleep``.

How pyinit is found: ``InitProcess`` starts ``prefix + argv``. With no prefix
pyinit is the process we started. With a prefix (``unshare --pid --fork
--mount-proc``, or a launcher) pyinit is ``depth`` generations below it, found
through ``/proc/<pid>/task/<tid>/children``. Signals always go to pyinit's own
pid: util-linux ``unshare`` ignores SIGTERM/SIGINT while it waits.

How cleanup finds everything: each ``InitProcess`` puts a unique tag in the
environment; teardown kills the /proc tree below the started process and any
process whose environment carries the tag (orphans that left the tree).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

SUPPORT_DIR = Path(__file__).resolve().parent
TAG_VAR = "PIT_TREE_TAG"
DEFAULT_TIMEOUT = 10.0

T = TypeVar("T")

# Shortcuts for tests that need one combination of the conftest matrix only.
INSTALLED_ONLY = pytest.mark.parametrize("pyinit_argv", ["installed"], indirect=True)
PYZ_ONLY = pytest.mark.parametrize("pyinit_argv", ["pyz"], indirect=True)
SUBREAPER_ONLY = pytest.mark.parametrize("as_pid1", ["subreaper"], indirect=True)
PID1_ONLY = pytest.mark.parametrize("as_pid1", ["pid1"], indirect=True)


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    message: str | Callable[[], str] = "condition",
    interval: float = 0.01,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Raises AssertionError naming ``message`` when ``timeout`` seconds pass; a
    callable message is evaluated then, so it can describe the final state.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for: {text}")
        time.sleep(interval)


def stays_true(
    predicate: Callable[[], object], duration: float, message: str, interval: float = 0.02
) -> None:
    """Assert ``predicate`` holds during the whole observation window.

    This is how a test shows that something does *not* happen (a dropped
    signal does not start the grace timer, grace 0 never kills).
    """
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert predicate(), f"stopped holding before {duration}s: {message}"
        time.sleep(interval)
    assert predicate(), f"stopped holding at {duration}s: {message}"


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcStat:
    """The few fields of /proc/<pid>/stat the tests look at."""

    pid: int
    comm: str
    state: str  # R, S, D, T (stopped), t, Z (zombie), X
    ppid: int
    pgrp: int
    session: int


def proc_stat(pid: int) -> ProcStat | None:
    """Read /proc/<pid>/stat; None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: split at the last ')'.
    head, _, rest = raw.rpartition(")")
    comm = head.partition("(")[2]
    fields = rest.split()
    return ProcStat(
        pid=pid,
        comm=comm,
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
    )


def process_state(pid: int) -> str | None:
    """One-letter state of ``pid`` (``T`` stopped, ``Z`` zombie), None if gone."""
    stat = proc_stat(pid)
    return stat.state if stat else None


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists at all (reaped, not a zombie)."""
    return proc_stat(pid) is None


def is_dead(pid: int) -> bool:
    """True when ``pid`` is gone or a zombie (dead but maybe not reaped)."""
    return process_state(pid) in (None, "Z", "X")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, from every thread's ``children`` file."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return kids
    for tid in tids:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        kids.extend(int(k) for k in text.split())
    return kids


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for kid in children_of(todo.pop(0)):
            if kid not in found:
                found.append(kid)
                todo.append(kid)
    return found


def zombie_children(pid: int) -> list[int]:
    """Children of ``pid`` that are zombies: exited and not (yet) reaped."""
    return [k for k in children_of(pid) if process_state(k) == "Z"]


def cmdline(pid: int) -> list[str]:
    """argv of ``pid`` ([] when gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def find_descendant(root: int, argv_part: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> int:
    """Host pid of the descendant of ``root`` whose argv contains ``argv_part`` (consecutively)."""
    part = list(argv_part)

    def look() -> int | None:
        for pid in descendants(root):
            argv = cmdline(pid)
            if any(argv[i : i + len(part)] == part for i in range(len(argv))):
                return pid
        return None

    return wait_until(look, timeout, f"a descendant of {root} running {part!r}")


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries ``TAG_VAR=tag`` (see module docstring)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry))
    return found


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` unless ``pid`` is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- commands


def support_script(name: str, *args: str) -> list[str]:
    """argv running tests/support/``name`` with this interpreter (-S: fast start)."""
    return [sys.executable, "-S", str(SUPPORT_DIR / name), *args]


def print_signals(*args: str) -> list[str]:
    """argv of the signal-printing child (see print_signals.py)."""
    return support_script("print_signals.py", *args)


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any PYINIT_* variable, plus ``extra``.

    The test run itself may carry PYINIT_PYZ and the like; pyinit must only see
    the variables a test means to give it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYINIT_")}
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- pyinit


class _LineReader:
    """Reads a pipe in a thread into a queue, so readers can use deadlines."""

    _EOF = object()

    def __init__(self, stream, name: str) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._stream = stream
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"read-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in self._stream:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                self.lines.append(line)
                self._queue.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.closed.set()
            self._queue.put(self._EOF)

    def get(self, timeout: float) -> str | None:
        """Next line; None at end of file. Raises queue.Empty after ``timeout``."""
        item = self._queue.get(timeout=timeout)
        if item is self._EOF:
            self._queue.put(item)  # stay at EOF for later readers
            return None
        return item

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@dataclass(frozen=True)
class Result:
    """What a finished pyinit run left behind."""

    returncode: int
    stdout: list[str]
    stderr: list[str]
    elapsed: float


class InitProcess:
    """pyinit started as a real subprocess, observed through pipes and /proc.

    ``argv`` is the pyinit command line, ``prefix`` what runs it (``unshare
    ...`` for PID 1, a launcher). ``depth`` is how many generations below the
    started process pyinit is (default: 1 with a prefix, else 0).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        prefix: Sequence[str] = (),
        depth: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        stdin=subprocess.DEVNULL,
    ) -> None:
        self.argv = [*prefix, *argv]
        self.depth = depth if depth is not None else (1 if prefix else 0)
        self.tag = uuid.uuid4().hex
        full_env = dict(base_env() if env is None else env)
        full_env[TAG_VAR] = self.tag
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
        )
        self._out = _LineReader(self.popen.stdout, "stdout")
        self._err = _LineReader(self.popen.stderr, "stderr")
        self._pid: int | None = None
        self.ended_at: float | None = None

    # -- identity

    @property
    def pid(self) -> int:
        """pyinit's pid as seen from here (the host pid under unshare)."""
        if self._pid is None:
            pid = self.popen.pid
            for _ in range(self.depth):
                parent = pid
                kids = wait_until(
                    lambda parent=parent: children_of(parent),
                    DEFAULT_TIMEOUT,
                    lambda parent=parent: f"a child of pid {parent} ({self.describe()})",
                )
                assert len(kids) == 1, f"expected one child of {parent}, got {kids}"
                pid = kids[0]
            self._pid = pid
        return self._pid

    def child_pid(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Host pid of pyinit's direct child (the COMMAND)."""
        kids = wait_until(
            lambda: [k for k in children_of(self.pid) if not is_dead(k)],
            timeout,
            lambda: f"pyinit's child ({self.describe()})",
        )
        assert len(kids) == 1, f"expected pyinit to have one child, got {kids}"
        return kids[0]

    # -- acting

    def send(self, sig: int) -> None:
        """Send ``sig`` to pyinit itself."""
        os.kill(self.pid, sig)

    # -- reading

    def next_line(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The next stdout line, strictly; fails at EOF or after ``timeout``."""
        try:
            line = self._out.get(timeout)
        except queue.Empty:
            raise AssertionError(f"no stdout line within {timeout}s ({self.describe()})") from None
        if line is None:
            raise AssertionError(f"stdout closed while waiting for a line ({self.describe()})")
        return line

    def expect_line(self, pattern: str, timeout: float = DEFAULT_TIMEOUT) -> re.Match:
        """Read stdout until a line fully matches the regex ``pattern``."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            try:
                line = self._out.get(max(deadline - time.monotonic(), 0))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(
                    f"no stdout line matching {pattern!r} within {timeout}s; "
                    f"skipped {skipped} ({self.describe()})"
                )
            match = re.fullmatch(pattern, line)
            if match:
                return match
            skipped.append(line)

    def expect_lines(
        self, patterns: Iterable[str], timeout: float = DEFAULT_TIMEOUT, strict: bool = False
    ) -> dict[str, re.Match]:
        """Read stdout until each regex in ``patterns`` matched one line, in any order.

        With ``strict``, a line matching none of them (or one already seen) fails.
        """
        wanted = list(patterns)
        found: dict[str, re.Match] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(wanted):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"missing lines {set(wanted) - set(found)} ({self.describe()})"
                )
            line = self.next_line(remaining)
            for pattern in wanted:
                match = re.fullmatch(pattern, line)
                if match and pattern not in found:
                    found[pattern] = match
                    break
            else:
                if strict:
                    raise AssertionError(
                        f"unexpected line {line!r} while waiting for "
                        f"{set(wanted) - set(found)} ({self.describe()})"
                    )
        return found

    @property
    def stdout_lines(self) -> list[str]:
        """Every stdout line read so far."""
        return list(self._out.lines)

    def stderr_lines(self, timeout: float = 2.0) -> list[str]:
        """stderr lines, after waiting up to ``timeout`` for the pipe to close."""
        self._err.closed.wait(timeout)
        return list(self._err.lines)

    # -- ending

    def poll(self) -> int | None:
        """Return code of the started process, or None while it runs."""
        code = self.popen.poll()
        if code is not None and self.ended_at is None:
            self.ended_at = time.monotonic()
        return code

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the started process to exit and return its status."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pyinit did not exit within {timeout}s ({self.describe()})"
            ) from None
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        return code

    def result(self, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """Wait for exit, then collect the output."""
        code = self.wait(timeout)
        self._out.closed.wait(2.0)
        return Result(code, self.stdout_lines, self.stderr_lines(), self.ended_at - self.started_at)

    def describe(self) -> str:
        """Context for failure messages: output so far and the process tree."""
        tree = []
        for pid in [self.popen.pid, *descendants(self.popen.pid)]:
            stat = proc_stat(pid)
            if stat:
                tree.append(f"{pid}:{stat.state}:{' '.join(cmdline(pid))[:60] or stat.comm}")
        return (
            f"argv={self.argv!r} returncode={self.popen.returncode} "
            f"stdout={self._out.lines[-20:]!r} stderr={self._err.lines[-20:]!r} tree={tree}"
        )

    def close(self) -> None:
        """Kill every process this run started, leaves first, then reap ours."""
        root = self.popen.pid
        known = [root, *descendants(root)]
        extra = [p for p in tagged_pids(self.tag) if p not in known]
        pyinit = self._pid
        # Leaves first while pyinit lives, so it (subreaper or PID 1) reaps them.
        victims = [p for p in [*reversed(known), *extra] if p not in (root, pyinit)]
        for pid in victims:
            kill_quietly(pid)
        try:
            wait_until(lambda: all(is_dead(p) for p in victims), 2.0, "descendants to die")
        except AssertionError:
            pass
        for pid in (pyinit, root):
            if pid is not None:
                kill_quietly(pid)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for reader in (self._out, self._err):
            reader.join(1.0)
        for stream in (self.popen.stdout, self.popen.stderr):
            stream.close()

    def __enter__(self) -> InitProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


StartInit = Callable[..., InitProcess]
"""Type of the conftest ``start_init`` fixture: ``start_init(argv, **InitProcess kwargs)``."""


def run_init(
    argv: Sequence[str],
    *,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Result:
    """Run pyinit to completion and return its status and output; always cleans up."""
    with InitProcess(argv, prefix=prefix, env=env, cwd=cwd) as proc:
        return proc.result(timeout)


def assert_no_traceback(lines: Iterable[str]) -> None:
    """pyinit never prints a Python traceback, whatever the input."""
    text = "\n".join(lines)
    assert "Traceback" not in text, f"traceback on stderr:\n{text}"
