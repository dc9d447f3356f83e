"""Wire the pieces together for one run: set up, start, loop, exit status.

The order matters and is the point of this module:
1. inherited descriptors are made close-on-exec, so children get 0, 1, 2 only;
2. subreaper and parent-death signal, before any child exists to orphan one;
3. signal handlers, before the child starts, so no signal is missed;
4. the child; 5. the loop, until the policy says it is done.
"""

from __future__ import annotations

import gc
import os

from pyinit import reaper, signals
from pyinit.command import CommandSupervisor
from pyinit.logs import Log
from pyinit.loop import Loop
from pyinit.model import Options
from pyinit.spawn import SpawnError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.services_model import Config
    from pyinit.supervisor import Supervisor


def close_inherited_fds() -> None:
    """Mark every descriptor above stderr close-on-exec (SPEC: security)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return  # no /proc: nothing better to do without guessing a range
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the descriptor listdir itself used, now closed


def run(
    options: Options,
    config: Config | None = None,
    prepare: Callable[[Supervisor], None] | None = None,
) -> int:
    """Run as an init: options.command alone, or the services of `config`
    (with options.command as the main service, if given). Returns pyinit's
    exit status. `prepare` sees the services supervisor before it starts
    (ServiceManager attaches its hooks there)."""
    log = Log(options.log_level, options.log_format)
    close_inherited_fds()
    if os.getpid() != 1:
        try:
            reaper.become_subreaper()
        except OSError as error:
            log.warning(f"cannot become a child subreaper ({error}); orphans will not be reaped")
        if options.pdeathsig:
            reaper.set_parent_death_signal(options.pdeathsig)

    loop = Loop(log)
    supervisor: CommandSupervisor | Supervisor
    if config is None:
        supervisor = CommandSupervisor(options, loop, log)
    else:
        from pyinit.supervisor import Supervisor

        supervisor = Supervisor(config, options, loop, log)
        if prepare is not None:
            prepare(supervisor)
    wakeup_fd = signals.install_wakeup()
    loop.add_reader(wakeup_fd, lambda: supervisor.on_signals(signals.read_wakeup(wakeup_fd)))
    try:
        supervisor.start()
    except SpawnError as error:
        # Worded like a shell's, without "error:" (SPEC section 1).
        os.write(2, f"pyinit: {error}\n".encode("utf-8", "backslashreplace"))
        return error.status
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
    assert supervisor.exit_code is not None
    return supervisor.exit_code
