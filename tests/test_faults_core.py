"""Issue 7, "PID 1 that cannot be broken": the single-command and PID 1 items.

Each test runs the real pyinit (the installed command and the pyz), as PID 1
of a fresh PID namespace where it applies, and each failed on the code
before its fix (the item number is in the test's name).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import UNSHARE_PREFIX
from support.helpers import (
    PID1_ONLY,
    StartInit,
    assert_no_traceback,
    base_env,
    children_of,
    kill_quietly,
    print_signals,
    proc_stat,
    support_script,
    wait_until,
    zombie_children,
)

READY = r"ready \(pid: \d+\)"
TIMEOUT = 10


def run(argv: list[str], timeout: float = TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    """Run to completion with a deadline (the tests' own subprocess calls)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def sh_quote(words: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(w) for w in words)


# -- item 4: fds 0, 1, 2 closed at start -------------------------------------------------


@PID1_ONLY
def test_issue_7_item_4_std_fds_closed_at_start(pyinit_argv: list[str], as_pid1) -> None:
    """With 0, 1, 2 closed, the wakeup pipe landed on 1/2: pyinit read its own
    log lines as signals, spun at 96% CPU and never reaped the child."""
    script = f"exec 0<&- 1>&- 2>&-; exec {sh_quote([*pyinit_argv, '--', 'sh', '-c', 'exit 7'])}"
    done = run([*as_pid1, "sh", "-c", script], timeout=TIMEOUT)
    assert done.returncode == 7


# -- item 9: signals blocked by the parent --------------------------------------------------


def _blocking_launcher(blocked: list[int], argv: list[str]) -> list[str]:
    """argv that execs `argv` with `blocked` signals blocked (as a careless parent would)."""
    code = (
        "import os, signal, sys; "
        f"signal.pthread_sigmask(signal.SIG_BLOCK, {[int(s) for s in blocked]!r}); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-S", "-c", code, *argv]


@PID1_ONLY
def test_issue_7_item_9_blocked_sigterm_is_still_forwarded(
    pyinit_argv: list[str], as_pid1, start_init: StartInit
) -> None:
    """A SIGTERM blocked by pyinit's parent stayed pending in pyinit: never
    forwarded, and pyinit exited 0 when the child ended on its own."""
    argv = _blocking_launcher([signal.SIGTERM], [*pyinit_argv, "--", *print_signals()])
    proc = start_init(argv, prefix=as_pid1)
    proc.expect_line(READY)
    proc.send(signal.SIGTERM)
    assert proc.next_line(5) == str(int(signal.SIGTERM))


# -- item 10: the child gets the dispositions and mask pyinit started with ---------------


def _sig_line(argv: list[str], field: str, prelude: str = "") -> str:
    script = f"{prelude}exec {sh_quote([*argv, '--', 'grep', field, '/proc/self/status'])}"
    done = run(["sh", "-c", script])
    return next(line for line in done.stdout.splitlines() if line.startswith(field))


def test_issue_7_item_10_child_keeps_ignored_signals_like_tini(pyinit_argv: list[str]) -> None:
    """`(trap '' INT; pyinit -- grep SigIgn ...)` showed 32/33 ignored and INT
    not; tini shows exactly the INT that the shell ignored."""
    ours = _sig_line(pyinit_argv, "SigIgn", "trap '' INT; ")
    tini = _sig_line(["tini", "-s"], "SigIgn", "trap '' INT; ")
    assert ours == tini
    assert ours.split()[1].endswith("0002")
    assert _sig_line(pyinit_argv, "SigIgn") == _sig_line(["tini", "-s"], "SigIgn")


def test_issue_7_item_10_child_gets_the_original_mask(pyinit_argv: list[str]) -> None:
    """The mask pyinit started with is the child's (as tini), though pyinit unblocks."""
    argv = _blocking_launcher([signal.SIGUSR1, signal.SIGUSR2], pyinit_argv)
    ours = _sig_line(argv, "SigBlk")
    tini = _sig_line(_blocking_launcher([signal.SIGUSR1, signal.SIGUSR2], ["tini", "-s"]), "SigBlk")
    assert ours == tini
    assert int(ours.split()[1], 16) == (1 << 9) | (1 << 11)


# -- item 7: pyinit's own SIGPIPE -------------------------------------------------------------


@PID1_ONLY
def test_issue_7_item_7_own_sigpipe_is_not_forwarded(pyinit_argv: list[str], as_pid1) -> None:
    """`pyinit -- sleep 2 2>&1 | true` exited 141 after 30 ms: the SIGPIPE of
    pyinit's own log write went to the child."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads pyinit's output: its first log line raises SIGPIPE
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*as_pid1, *pyinit_argv, "--", "sleep", "1"],
            stdout=write_end,
            stderr=write_end,
            timeout=TIMEOUT,
            env=base_env(),
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0
    assert time.monotonic() - started >= 0.9


@PID1_ONLY
def test_issue_7_item_7_sigpipe_sent_by_others_is_forwarded(
    pyinit_argv: list[str], as_pid1, start_init: StartInit
) -> None:
    proc = start_init([*pyinit_argv, "--", *print_signals()], prefix=as_pid1)
    proc.expect_line(READY)
    proc.send(signal.SIGPIPE)
    assert proc.next_line() == str(int(signal.SIGPIPE))


# -- item 21: one error, one line ------------------------------------------------------------


def test_issue_7_item_21_flag_value_with_newline_is_one_line(pyinit_argv: list[str]) -> None:
    done = run([*pyinit_argv, "--grace", "5\npyinit: info: fake", "--", "true"], env=base_env())
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pyinit: error: --grace ")


def test_issue_7_item_21_variable_value_with_newline_is_one_line(pyinit_argv: list[str]) -> None:
    env = base_env({"PYINIT_GRACE": "5\npyinit: info: fake"})
    done = run([*pyinit_argv, "--", "true"], env=env)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_issue_7_item_21_command_name_cannot_forge_a_line(pyinit_argv: list[str]) -> None:
    done = run([*pyinit_argv, "--", "nosuch\npyinit: info: fake"], env=base_env())
    assert done.returncode == 127
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pyinit: nosuch")


# -- item 2: nobody reads pyinit's stderr --------------------------------------------------


@PID1_ONLY
def test_issue_7_item_2_full_stderr_does_not_stop_reaping_nor_sigterm(
    pyinit_argv: list[str], as_pid1
) -> None:
    """A full stderr pipe froze the loop: 57 zombies in 5 s and SIGTERM ignored.

    3,000 orphans at debug level fill the 64 KiB pipe many times over; pyinit
    must reap them all, obey SIGTERM, and say how many lines it dropped.
    """
    err_read, err_write = os.pipe()
    proc = subprocess.Popen(
        [*as_pid1, *pyinit_argv, "-v", "--", *support_script("storm.py", "3000", "100")],
        stdout=subprocess.PIPE,
        stderr=err_write,
        env=base_env(),
    )
    os.close(err_write)
    pyinit = 0  # the namespace's init: killing it ends everything in it
    try:
        assert proc.stdout is not None
        ready = select.select([proc.stdout], [], [], TIMEOUT)[0]
        assert ready and proc.stdout.readline().startswith(b"storm done"), "storm not done"
        pyinit = wait_until(lambda: children_of(proc.pid), 5, "pyinit under unshare")[0]
        wait_until(lambda: not zombie_children(pyinit), 5, "every orphan reaped")
        time.sleep(0.5)  # a window where nobody reads: lines are dropped (not a sync point)
        os.kill(pyinit, signal.SIGTERM)
        stderr = _drain(proc, err_read)
        assert proc.returncode == 3  # storm.py exits 3 after SIGTERM
    finally:
        if pyinit:
            kill_quietly(pyinit)
        proc.kill()
        proc.wait(5)
        os.close(err_read)
    assert "log line(s) dropped: stderr was full" in stderr
    assert_no_traceback(stderr.splitlines())


def _drain(proc: subprocess.Popen, fd: int) -> str:
    """Read `fd` until pyinit exits (and its end of the pipe closes)."""
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    proc.wait(TIMEOUT)
    return b"".join(chunks).decode(errors="replace")


SERVICE_CHATTER = "import sys\nwhile True:\n    sys.stdout.write('x' * 100 + '\\n')\n"


@PID1_ONLY
def test_issue_7_item_2_full_stdout_does_not_block_the_output_relay(
    pyinit_argv: list[str], as_pid1, tmp_path: Path
) -> None:
    """A service in prefix mode writes without end and nobody reads pyinit's
    stdout: the relay stops reading (back-pressure), the loop goes on, and
    SIGTERM ends pyinit in bounded time."""
    chatter = tmp_path / "chatter.py"
    chatter.write_text(SERVICE_CHATTER)
    config = tmp_path / "pyinit.toml"
    config.write_text(
        f'[services.chatty]\ncmd = [{sys.executable!r}, {str(chatter)!r}]\noutput = "prefix"\n'
    )
    out_read, out_write = os.pipe()
    proc = subprocess.Popen(
        [*as_pid1, *pyinit_argv, "--grace", "2", "--config", str(config)],
        stdout=out_write,
        stderr=subprocess.PIPE,
        env=base_env(),
    )
    os.close(out_write)
    pyinit = 0  # the namespace's init: killing it ends everything in it
    try:
        pyinit = wait_until(lambda: children_of(proc.pid), 5, "pyinit under unshare")[0]
        wait_until(lambda: _pipe_stalled(out_read), TIMEOUT, "pyinit's stdout to fill up")
        wait_until(lambda: proc_stat(pyinit).state == "S", 5, "pyinit to sleep in its loop")
        # The relay must be waiting in epoll, not stuck in write(2): a single
        # sample may catch a non-blocking write in passing, so look for a
        # moment outside pipe_write within a deadline.
        wait_until(lambda: "pipe_write" not in _wchan(pyinit), 5, "pyinit outside write(2)")
        os.kill(pyinit, signal.SIGTERM)
        proc.wait(TIMEOUT)
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
    finally:
        if pyinit:
            kill_quietly(pyinit)
        proc.kill()
        proc.wait(5)
        os.close(out_read)
    assert proc.returncode in (0, 143), stderr
    assert_no_traceback(stderr.splitlines())


def _pipe_bytes(fd: int) -> int:
    import fcntl

    FIONREAD = 0x541B
    buf = bytearray(4)
    fcntl.ioctl(fd, FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def _pipe_stalled(fd: int) -> bool:
    """Full, as far as the writer can tell: over 16 KiB queued and no growth for
    0.3 s. (A byte count near 64 KiB is not a test: a pipe is 16 page slots,
    and small writes can fill every slot with pages that are not full.)"""
    before = _pipe_bytes(fd)
    time.sleep(0.3)  # the sampling interval of this check, not a wait for a condition
    return before > 16384 and _pipe_bytes(fd) == before


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


# -- item 8: signal storms ------------------------------------------------------------------


RT_COUNT = 100_000


def _count_lines(stream, wanted: str, total: int, deadline: float) -> int:
    """Count lines equal to `wanted` until `total` seen or the deadline passes."""
    seen = 0
    fd = stream.fileno()
    buffer = b""
    needle = wanted.encode()
    while seen < total and time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        buffer += chunk
        lines = buffer.split(b"\n")
        buffer = lines.pop()
        seen += sum(1 for line in lines if line == needle)
    return seen


def _send_storm(pid: int, signum: int, count: int, progress: list[int] | None = None) -> None:
    """kill() `count` times; a full real-time queue (EAGAIN) is retried.
    Stops early when `pid` is gone; `progress[0]` counts what was sent."""
    sent = 0
    while sent < count:
        try:
            os.kill(pid, signum)
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
        except ProcessLookupError:
            return
        if progress is not None:
            progress[0] = sent


@PID1_ONLY
def test_issue_7_item_8_rt_signal_storm_loses_nothing(pyinit_argv: list[str], as_pid1) -> None:
    """100,000 of one real-time signal: 65,536 reached the child (the wakeup
    pipe overflowed); tini forwards all 100,000."""
    proc = subprocess.Popen(
        [*as_pid1, *pyinit_argv, "--", *print_signals()],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=base_env(),
    )
    pyinit = 0  # the namespace's init: killing it ends everything in it
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], TIMEOUT)[0], "child not ready"
        assert proc.stdout.readline().startswith(b"ready")
        pyinit = wait_until(lambda: children_of(proc.pid), 5, "pyinit under unshare")[0]
        rt = signal.SIGRTMIN + 1
        counted: list[int] = []
        reader = threading.Thread(
            target=lambda: counted.append(
                _count_lines(proc.stdout, str(int(rt)), RT_COUNT, time.monotonic() + 30)
            )
        )
        reader.start()
        _send_storm(pyinit, rt, RT_COUNT)
        reader.join(35)
    finally:
        if pyinit:
            kill_quietly(pyinit)
        proc.kill()
        proc.wait(5)
    assert counted == [RT_COUNT]


@PID1_ONLY
def test_issue_7_item_8_sigterm_during_a_storm_always_ends_pyinit(
    pyinit_argv: list[str], as_pid1, start_init: StartInit
) -> None:
    """SIGTERM was ignored in 3 of 9 storms: its byte fell off a full pipe."""
    for _ in range(3):
        proc = start_init(
            [*pyinit_argv, "--grace", "30", "--", *print_signals("--exit-on", "15")],
            prefix=as_pid1,
        )
        proc.expect_line(READY)
        rt = signal.SIGRTMIN + 2
        progress = [0]
        storm = threading.Thread(target=_send_storm, args=(proc.pid, rt, 300_000, progress))
        storm.start()
        wait_until(lambda p=progress: p[0] >= 100_000, 20, "100,000 signals sent")
        proc.send(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0
        finally:
            storm.join(60)


# -- item 5: no /proc -------------------------------------------------------------------------


NO_PROC_PREFIX = ["unshare", "--pid", "--fork", "--mount"]


@PID1_ONLY
def test_issue_7_item_5_without_proc_strays_are_stopped(pyinit_argv: list[str], as_pid1) -> None:
    """Without /proc, command mode took 7.3 s and logged "survived SIGKILL":
    the setsid'd daemon its child left behind could not be found."""
    daemon = "setsid sh -c 'trap \"\" TERM; sleep 60' & sleep 0.2; exit 0"
    pyinit = [*pyinit_argv, "--grace", "1", "--", "sh", "-c", daemon]
    script = f"umount -l /proc && exec {sh_quote(pyinit)}"
    started = time.monotonic()
    done = run([*NO_PROC_PREFIX, "sh", "-c", script], env=base_env())
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 4, done.stderr  # grace 1 s, then SIGKILL reaches it
    assert "survived SIGKILL" not in done.stderr
    assert_no_traceback(done.stderr.splitlines())


# -- item 1: out of file descriptors ------------------------------------------------------


@pytest.mark.parametrize("limit", [5, 6])
def test_issue_7_item_1_low_nofile_limit_is_one_line_or_works(
    pyinit_argv: list[str], limit: int
) -> None:
    """RLIMIT_NOFILE 5 crashed start-up with a traceback."""
    script = f"ulimit -n {limit}; exec {sh_quote([*pyinit_argv, '--', 'sh', '-c', 'exit 4'])}"
    done = run(["sh", "-c", script], env=base_env())
    assert_no_traceback(done.stderr.splitlines())
    if done.returncode != 4:
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("pyinit: error: ")


def test_issue_7_item_1_internal_error_without_traceback_module_is_logged(
    tmp_path: Path,
) -> None:
    """Log.exception imported `traceback` lazily; when that import failed (out
    of fds), the loop's own error handler raised and PID 1 died."""
    code = (
        "import sys\n"
        "sys.modules['traceback'] = None  # import traceback -> ImportError\n"
        "from pyinit.core.logs import Log\n"
        "try:\n"
        "    raise RuntimeError('boom')\n"
        "except RuntimeError:\n"
        "    Log().exception('internal error in the event loop; carrying on')\n"
        "print('alive')\n"
    )
    done = run([sys.executable, "-c", code])
    assert done.stdout == "alive\n", done.stderr
    assert "internal error in the event loop" in done.stderr
    assert "boom" in done.stderr


# -- item 11: a controlling terminal for the child -----------------------------------------


TTY_PROBE = (
    "import os\n"
    "fd = os.open('/dev/tty', os.O_RDWR)\n"
    "print('foreground' if os.tcgetpgrp(fd) == os.getpgrp() else 'background', flush=True)\n"
)


@PID1_ONLY
def test_issue_7_item_11_child_gets_the_terminal(pyinit_argv: list[str], as_pid1) -> None:
    """In the default (setsid) mode the child had no controlling terminal:
    /dev/tty gave ENXIO and an interactive shell had no job control. pyinit
    runs here as `docker run -it` runs it: session leader of the terminal."""
    master, slave = os.openpty()
    argv = [*UNSHARE_PREFIX, "setsid", "-c", *pyinit_argv, "--", sys.executable, "-c", TTY_PROBE]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=base_env())
    os.close(slave)
    output = b""
    try:
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            if time.monotonic() > deadline:
                break
            if select.select([master], [], [], 0.1)[0]:
                try:
                    output += os.read(master, 4096)
                except OSError:  # EIO: every slave closed
                    break
        proc.wait(TIMEOUT)
    finally:
        proc.kill()
        proc.wait(5)
        os.close(master)
    text = output.decode(errors="replace")
    assert "foreground" in text and "background" not in text, text
    assert "No such device" not in text, text
    assert proc.returncode == 0, text
