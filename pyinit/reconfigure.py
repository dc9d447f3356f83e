"""Reload with a config file: re-read, validate, apply only the difference.

SPEC section 5. The file is read afresh on every reload (by path, never by a
cached inode or resolved link), which is what a Kubernetes ConfigMap mount
needs: the kubelet swaps a `..data` symlink atomically under the same name.

Invalid: the error (file:line) is logged, STATUS=reload failed is sent
upstream, and nothing running is touched. Valid: `reload_plan.plan()` says
what differs and this module applies it to the supervisor:

    removed    stopped gracefully (stop_signal, SIGKILL after grace), forgotten
    added      started as soon as their `after` is met
    changed    restarted with the new definition
    scaled     worker count changed: highest ids stop first, new ids start
    unchanged  their reload mode (reload_signal, Service.reload(), restart)
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from pyinit.unit import Unit, WorkerState

if TYPE_CHECKING:
    from pyinit.supervisor import Supervisor


def apply_new_config(supervisor: Supervisor) -> str:
    """Re-read supervisor.config.path and apply it; returns a one-line summary."""
    from pyinit.config import ConfigError, load
    from pyinit.reload_plan import describe, plan
    from pyinit.services_model import start_order

    log = supervisor.log
    old = supervisor.config
    assert old.path is not None
    try:
        new = load(os.environ, old.path)
    except ConfigError as error:
        log.error(f"reload refused, still running the previous configuration: {error}")
        if supervisor.upstream is not None:
            supervisor.upstream.status(f"reload failed: {error}")
        return f"reload failed: {error}"

    changes = plan(old, new)
    summary = describe(changes)
    log.info(summary, event="reload")
    now = time.monotonic()
    units = supervisor.units

    for name in changes.removed:
        supervisor.stop_service(name)  # their exits still reach the reaper
        del units[name]
    for name in changes.changed:
        unit = units[name]
        unit.spec = new.services[name]
        supervisor.scale(name, unit.spec.workers)
        for worker in unit.alive_workers():
            if worker.state is not WorkerState.STOPPING:
                worker.after_exit = "respawn"
                supervisor.stop_worker(worker, now + supervisor.grace_of(unit))
    for name, (_, workers) in changes.scaled.items():
        units[name].spec = new.services[name]
        supervisor.scale(name, workers)
    supervisor.reload_units([units[name] for name in changes.unchanged if name in units])

    # New units go in before the main command, which stays last.
    main = {name: unit for name, unit in units.items() if unit.main}
    for name in main:
        del units[name]
    for name in changes.added:
        units[name] = Unit(new.services[name])
    units.update(main)
    supervisor.config = new
    if "grace" not in supervisor.options.explicit and new.settings.grace is not None:
        supervisor.grace = new.settings.grace
    supervisor.layers = [list(layer) for layer in start_order(new)] + [[n] for n in main]
    supervisor.start_due_units()
    return summary
