"""Wire the pieces together for one run: set up, start, loop, exit status.

The order matters and is the point of this module:
0. fds 0, 1 and 2 exist (on /dev/null if they were closed), before any other
   descriptor is opened, or the wakeup pipe would land on them (item 4);
1. in services mode, inherited descriptors are made close-on-exec, so
   children get 0, 1, 2 only (single-command mode needs no pass over them:
   `spawn` closes everything above 2 in the child, ~80 us saved);
2. subreaper and parent-death signal, before any child exists to orphan one;
3. signal handlers, before the child starts, so no signal is missed;
4. the child; 5. the loop, until the policy says it is done.
"""

import gc
import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py

from pyinit.core import reaper, signals
from pyinit.core.logs import Log, fatal
from pyinit.core.loop import Loop
from pyinit.core.model import Options
from pyinit.core.spawn import SpawnError
from pyinit.single.command import CommandSupervisor

EMFILE = 24  # errno.EMFILE (Linux): the errno module costs ~50 us to import

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.config.model import Config
    from pyinit.supervise.supervisor import Supervisor


def open_standard_fds() -> None:
    """Reopen whichever of fds 0, 1, 2 is closed on /dev/null.

    open() returns the lowest free descriptor: while that is 0, 1 or 2 it
    fills a hole. Otherwise pyinit's own pipes would become its stdout or
    stderr, and its log lines would be read back as signal numbers.
    """
    while True:
        try:
            fd = posix.open("/dev/null", posix.O_RDWR)
        except OSError:
            return  # no /dev/null: nothing better to put there
        if fd > 2:
            posix.close(fd)
            return
        posix.set_inheritable(fd, True)  # the child gets it as its own 0/1/2


def close_inherited_fds() -> None:
    """Mark every descriptor above stderr close-on-exec (SPEC: security)."""
    try:
        names = posix.listdir("/proc/self/fd")
    except OSError:
        return  # no /proc: nothing better to do without guessing a range
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                posix.set_inheritable(fd, False)
            except OSError:
                pass  # the descriptor listdir itself used, now closed


def run(
    options: Options,
    config: "Config | None" = None,
    prepare: "Callable[[Supervisor], None] | None" = None,
) -> int:
    """Run as an init: options.command alone, or the services of `config`
    (with options.command as the main service, if given). Returns pyinit's
    exit status. `prepare` sees the services supervisor before it starts
    (ServiceManager attaches its hooks there)."""
    open_standard_fds()
    log = Log(options.log_level, options.log_format)
    for warning in options.warnings:
        log.warning(warning, event="config_warning")
    if config is not None:
        close_inherited_fds()
    if posix.getpid() != 1:
        try:
            reaper.become_subreaper()
        except OSError as error:
            log.warning(f"cannot become a child subreaper ({error}); orphans will not be reaped")
        if options.pdeathsig:
            reaper.set_parent_death_signal(options.pdeathsig)

    try:
        loop = Loop(log)
        wakeup_fd = signals.install_wakeup()
    except OSError as error:
        return _setup_failed(error)
    supervisor: CommandSupervisor | Supervisor
    if config is None:
        supervisor = CommandSupervisor(options, loop, log)
    else:
        from pyinit.supervise import supervisor as services  # services mode only

        supervisor = services.Supervisor(config, options, loop, log)
        problem = supervisor.open_sockets()
        if problem is not None:
            fatal(problem)  # a port in use: one line, exit 2, nothing started
            return 2
        if prepare is not None:
            prepare(supervisor)
    loop.add_reader(wakeup_fd, lambda: supervisor.on_signals(signals.read_wakeup(wakeup_fd)))
    try:
        supervisor.start()
    except SpawnError as error:
        # Worded like a shell's, without "error:" (SPEC section 1).
        log.write_line(f"pyinit: {error}")
        return error.status
    except OSError as error:  # out of descriptors for the exec-error pipe...
        return _setup_failed(error)
    signals.grow_wakeup_pipe()  # after the start: it overlaps the command's (see there)
    # Start-up objects live as long as pyinit: move them out of the
    # collector's sight (freeze), then collect normally, since a long-lived
    # PID 1 must not let reference cycles pile up.
    gc.freeze()
    gc.enable()
    # A child may have died before the loop runs: its SIGCHLD byte is already
    # in the pipe, so the first poll sees it. Nothing to special-case.
    try:
        loop.run()
    finally:
        if config is not None:
            supervisor.close()  # type: ignore[union-attr]
        log.finish()
    assert supervisor.exit_code is not None
    return supervisor.exit_code


def _setup_failed(error: OSError) -> int:
    """Start-up could not get what an init needs (file descriptors): one line, exit 2."""
    from pyinit.core.logs import fatal

    if error.errno == EMFILE:
        fatal(
            "too many open files: pyinit needs 7 file descriptors to start"
            " (raise the RLIMIT_NOFILE limit, ulimit -n)"
        )
    else:
        fatal(f"cannot start: {error}")
    return 2
