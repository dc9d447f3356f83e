"""The sockets services mode opens: notify, `pyinit ctl`, the health port, upstream.

Split from the supervisor because none of them decides anything: each turns
outside traffic into a call on the supervisor (READY=1 -> readiness, a ctl
verb -> verbs.Controls) or reports to the outside (sd_notify upstream and
its watchdog). A socket that cannot be opened is logged, never fatal: PID 1
runs its services without it, and the log line says what is lost.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pyinit.control.health import HealthServer
from pyinit.control.protocol import default_socket_path
from pyinit.control.server import ControlServer
from pyinit.supervise.notify_socket import Downstream, default_notify_path
from pyinit.supervise.process import wants_notify
from pyinit.supervise.verbs import Controls

if TYPE_CHECKING:
    from pyinit.supervise.supervisor import Supervisor


def open_endpoints(supervisor: Supervisor) -> None:
    """Open the notify socket (if a service needs it), the ctl socket and health port,
    and start the upstream watchdog."""
    if any(wants_notify(u.spec) for u in supervisor.units.values()):
        _open_notify_socket(supervisor)
    _start_servers(supervisor)
    upstream = supervisor.upstream
    if upstream is not None:
        interval = upstream.watchdog_interval()
        if interval:
            _upstream_watchdog(supervisor, interval)


def close_endpoints(supervisor: Supervisor) -> None:
    """At exit: remove the sockets pyinit created."""
    for server in supervisor.servers:
        try:
            server.close()  # type: ignore[attr-defined]
        except OSError:
            pass


def _open_notify_socket(supervisor: Supervisor) -> None:
    try:
        readiness = supervisor.readiness
        downstream = Downstream(
            supervisor.loop, default_notify_path(), readiness.on_notify, supervisor.log
        )
    except OSError as error:  # out of fds, say: services with ready=notify never get ready
        supervisor.log.error(f"no notify socket ({error}); READY=1 from services cannot arrive")
        return
    supervisor.downstream = downstream
    supervisor.servers.append(downstream)


def _start_servers(supervisor: Supervisor) -> None:
    """`pyinit ctl` and the health port; a failure here is logged, not fatal."""
    log = supervisor.log
    options = supervisor.options
    path = options.ctl_socket or default_socket_path(os.environ)
    try:
        supervisor.servers.append(ControlServer(supervisor.loop, path, Controls(supervisor), log))
    except OSError as error:
        log.warning(f"no control socket at {path} ({error}); pyinit ctl cannot reach us")
    if options.health_port is not None:
        address, port = options.health_port
        try:
            controls = Controls(supervisor)
            health = HealthServer(
                supervisor.loop, address, port, controls, log, metrics=controls
            )
            supervisor.servers.append(health)
        except OSError as error:
            log.error(f"cannot serve health probes on {address}:{port}: {error}")


def _upstream_watchdog(supervisor: Supervisor, interval: float) -> None:
    assert supervisor.upstream is not None
    supervisor.upstream.watchdog()
    supervisor.loop.call_later(interval, lambda: _upstream_watchdog(supervisor, interval))
