"""Single-command mode: what tini and dumb-init do, plus a kill timeout.

States of the one child, and what moves between them:

    RUNNING --stop signal (TERM/INT/QUIT) forwarded--> RUNNING, kill timer armed
    RUNNING --child exits, group mode--> DRAINING: SIGTERM to what is left of
            its process group, kill timer armed (if not already)
    RUNNING --child exits, --single-child--> DONE
    DRAINING --group empty--> DONE
    any --kill timer fires--> SIGKILL to the group (or child); a last short
            timer makes sure pyinit exits even if something cannot die

A stop says what it waits for (issue 11), as services mode does: a moment
into the grace, if anything is still running, one info line names it and
when SIGKILL comes; at the end one line says what was stopped, how long it
took, what had to be killed, and the exit status. Quiet when all goes well,
as tini is: a stop that ends before the moment comes logs its summary at
debug level; one that needed SIGKILL, at warning.

Without /proc (issue 7, item 5) the strays of DRAINING cannot be listed:
as PID 1 `kill(-1, ...)` reaches them anyway; as a subreaper pyinit says it
cannot see them rather than claiming they "survived SIGKILL".

"Group empty" is asked of the kernel (`killpg(pgid, 0)` -> ESRCH) after each
reap. Group members that outlive their parent are reparented to pyinit (PID
1 or subreaper), so their deaths reach the reaper as SIGCHLD and no polling
is needed.
"""

import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py
import time

from pyinit.core import reaper, signals
from pyinit.core.model import KILL_SETTLE_SECONDS, ExitStatus, Options
from pyinit.core.spawn import spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop, Timer
    from pyinit.core.notify import Upstream

#: How far into the grace a stop says what it still waits for (half the grace if less).
WAIT_REPORT_SECONDS = 1.0


class CommandSupervisor:
    """Runs COMMAND, forwards signals to it, and decides pyinit's exit status."""

    def __init__(self, options: Options, loop: "Loop", log: "Log") -> None:
        self.options = options
        self.loop = loop
        self.log = log
        self.pid = 0
        self.status: ExitStatus | None = None
        self.exit_code: int | None = None
        self._kill_timer: Timer | None = None
        self._cleaning_up = False
        self._blind_warned = False
        self._stop_began: float | None = None  # monotonic time of the first stop step
        self._waited = False  # the "waiting for" line was logged
        self._killed = False  # SIGKILL had to be sent
        self.upstream: Upstream | None = None
        # The SIGHUP and SIGCONT the kernel sends when we hand the terminal
        # over (dumb-init #136): dropped once each, never forwarded.
        self._ignore_once: set[int] = set()

    # -- start ---------------------------------------------------------------

    def start(self) -> None:
        """Spawn COMMAND. Raises SpawnError (exit 126/127) if it cannot run.

        Under systemd or `podman --sdnotify=container` (NOTIFY_SOCKET set), the
        child does not see that socket, and pyinit reports READY=1 once the
        child runs: with one command there is nothing else to wait for.
        """
        argv = self.options.command
        env = None
        if b"NOTIFY_SOCKET" in posix.environ:  # bytes: the os-less view (core/__init__)
            import os

            from pyinit.core.notify import Upstream

            self.upstream = Upstream.from_environ(os.environ)
            env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        new_session = not self.options.single_child
        take_tty = new_session and posix.isatty(0)
        if take_tty:
            from pyinit.core.spawn import release_terminal

            if release_terminal():
                self._ignore_once = {signals.SIGHUP, signals.SIGCONT}
        self.pid = spawn(argv, new_session=new_session, env=env, take_tty=take_tty)
        # Quiet where tini is quiet: `docker logs` shows the app, and pyinit
        # speaks up only when something is wrong (issue 11).
        self.log.debug(f"started {argv[0]!r} (pid {self.pid})", event="started", pid=self.pid)
        if self.upstream is not None:
            self.upstream.ready()
            interval = self.upstream.watchdog_interval()
            if interval:
                self._upstream_watchdog(interval)

    def _upstream_watchdog(self, interval: float) -> None:
        assert self.upstream is not None
        self.upstream.watchdog()
        self.loop.call_later(interval, lambda: self._upstream_watchdog(interval))

    # -- events --------------------------------------------------------------

    def on_signals(self, received: bytes) -> None:
        """Handle a batch of signal numbers read from the wakeup pipe, in order."""
        reap_needed = False
        for signum in received:
            if signum == signals.SIGCHLD:
                reap_needed = True
            elif signum in self._ignore_once:
                self._ignore_once.discard(signum)
            else:
                self._forward(signum)
        if reap_needed:
            self._reap()

    def _forward(self, signum: int) -> None:
        job_control = signum in signals.JOB_CONTROL_SIGNALS
        if signum in self.options.rewrite:
            target = self.options.rewrite[signum]
        elif job_control and not self.options.single_child:
            target = signals.SIGSTOP
        else:
            target = signum
        # Send first, describe later: this is the latency users measure.
        if target:
            self._send(target)
            if signum in signals.STOP_SIGNALS:
                self._arm_kill_timer()
                if self.upstream is not None:
                    self.upstream.stopping()
        if self.log.enabled("debug"):
            received = signals.signal_name(signum)
            if target:
                sent = signals.signal_name(target)
                message = f"forwarded {sent} (received {received})"
                self.log.debug(message, event="forward", signal=sent)
            else:
                self.log.debug(f"dropped {received}", event="drop", signal=received)
        if job_control:
            # Stop ourselves as the shell asked; SIGCONT resumes us and is
            # then forwarded. As PID 1 the kernel ignores this, as it should.
            posix.kill(posix.getpid(), signals.SIGSTOP)

    def _send(self, signum: int) -> None:
        """Signal the child's group, or the child alone with --single-child."""
        if self.options.single_child:
            if self.status is None:
                signals.send(self.pid, signum)
        else:
            signals.send(self.pid, signum, group=True)

    def _reap(self) -> None:
        # The per-orphan path is the hot one of a zombie storm (item 28): no
        # ExitStatus, no message, unless debug logging is on.
        debug = self.log.enabled("debug")
        child = self.pid
        for pid, raw in reaper.reap_raw():
            if pid == child:
                status = ExitStatus.from_wait_status(raw)
                self.status = status
                log = self.log.info if status.shell_code else self.log.debug  # a failure: say so
                log(
                    f"{self.options.command[0]!r} (pid {pid}) ended: {status.describe()}",
                    event="exited",
                    pid=pid,
                    exit_code=status.code,
                    signal=status.signal,
                )
            elif debug:
                described = ExitStatus.from_wait_status(raw).describe()
                self.log.debug(f"reaped orphan pid {pid} ({described})", event="reaped", pid=pid)
        if self.status is not None:
            self._after_child_exit()

    # -- ending --------------------------------------------------------------

    def _after_child_exit(self) -> None:
        if self.options.single_child:
            self._finish()
            return
        group_alive = self._group_alive()
        if not group_alive and not reaper.has_children():
            self._finish()
            return
        if self._cleaning_up:
            return
        # DRAINING: TERM to what is left of the group, and to descendants that
        # left it (a setsid'd daemon): nothing outlives pyinit.
        self._cleaning_up = True
        self.log.info(
            f"pid {self.pid} left processes behind; sending SIGTERM to its group"
            " and to other descendants",
            event="stopping_group",
            pid=self.pid,
        )
        self._send(signals.SIGTERM)
        self._signal_strays(signals.SIGTERM)
        self._arm_kill_timer()

    def _signal_strays(self, signum: int) -> None:
        """Signal every descendant, those that left the child's group (a
        setsid'd daemon) included: reaper.signal_descendants. Without /proc,
        and not PID 1, they cannot be found: say so once."""
        try:
            reaper.signal_descendants(signum)
        except reaper.ProcUnreadable as error:
            if not self._blind_warned:
                self._blind_warned = True
                self.log.warning(
                    f"{error.strerror}: descendants that left pid {self.pid}'s group"
                    " cannot be found or signalled",
                    event="no_proc",
                    pid=self.pid,
                )

    def _group_alive(self) -> bool:
        try:
            posix.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _arm_kill_timer(self) -> None:
        grace = self.options.grace
        if self._stop_began is None:  # the stop begins: say later what it waits for
            self._stop_began = time.monotonic()
            delay = min(grace / 2, WAIT_REPORT_SECONDS) if grace > 0 else WAIT_REPORT_SECONDS
            self.loop.call_later(delay, self._report_waiting)
        if self._kill_timer is not None or grace <= 0:
            return
        self._kill_timer = self.loop.call_at(time.monotonic() + grace, self._on_grace_expired)

    def _report_waiting(self) -> None:
        """One line, a moment into the grace: who is still running, when SIGKILL comes."""
        if self.exit_code is not None or self._killed:
            return
        if self._kill_timer is None:
            when = "no SIGKILL: grace 0 waits forever"
        else:
            when = f"SIGKILL in {max(self._kill_timer.when - time.monotonic(), 0):.1f} s"
        self._waited = True
        message = f"waiting for {self._still_running()} to stop; {when}"
        self.log.info(message, event="stop_wait", pid=self.pid)

    def _still_running(self) -> str:
        """`'app' (pid 7) and 2 other process(es)`, from /proc when it can be read."""
        try:
            others = len(reaper.descendants(posix.getpid())) - (self.status is None)
        except reaper.ProcUnreadable:
            others = -1  # unknown
        if self.status is None:
            child = f"{self.options.command[0]!r} (pid {self.pid})"
            return f"{child} and {others} other process(es)" if others > 0 else child
        left = f"{others} process(es)" if others >= 0 else "the processes"
        return f"{left} left by {self.options.command[0]!r} (pid {self.pid})"

    def _summarize(self, code: int) -> None:
        """The stop's last line: what, how long, what was killed, the exit status."""
        assert self._stop_began is not None
        took = time.monotonic() - self._stop_began
        what = "child" if self.options.single_child else "process group"
        killed = f"SIGKILL needed for the {what}" if self._killed else "none killed"
        message = (
            f"stopped {self.options.command[0]!r} (pid {self.pid}) in {took:.2f} s;"
            f" {killed}; exit status {code}"
        )
        log = (
            self.log.warning if self._killed else self.log.info if self._waited else self.log.debug
        )
        log(message, event="stopped", pid=self.pid, exit_code=code)

    def _on_grace_expired(self) -> None:
        if self.exit_code is not None:
            return
        what = "child" if self.options.single_child else "process group"
        self.log.warning(
            f"{what} of pid {self.pid} still running {self.options.grace:g} s after the stop "
            "signal; sending SIGKILL",
            event="killed",
            pid=self.pid,
            signal="SIGKILL",
        )
        self._killed = True
        self._send(signals.SIGKILL)
        if self.status is not None:
            self._signal_strays(signals.SIGKILL)
        self.loop.call_later(KILL_SETTLE_SECONDS, self._on_kill_settle_expired)

    def _on_kill_settle_expired(self) -> None:
        if self.exit_code is None:
            self.log.error(
                f"processes of pid {self.pid} survived SIGKILL for"
                f" {KILL_SETTLE_SECONDS:g} s; exiting anyway",
                event="abandoned",
                pid=self.pid,
            )
            if self.status is None:
                self.status = ExitStatus(None, signals.SIGKILL)
            self._finish()

    def _finish(self) -> None:
        assert self.status is not None
        code = self.status.shell_code
        if code in self.options.remap_exit:
            self.log.debug(f"exit status {code} remapped to 0", event="remap", exit_code=code)
            code = 0
        self.exit_code = code
        if self._stop_began is not None:
            self._summarize(code)
        self.loop.stop()
