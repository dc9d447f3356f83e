"""Reload (SIGHUP, `pyinit ctl reload`): re-read, validate, apply only the difference.

Without a config file a reload only runs each unit's reload mode
(`reload_units`). With one:

SPEC section 5. The file is read afresh on every reload (by path, never by a
cached inode or resolved link), which is what a Kubernetes ConfigMap mount
needs: the kubelet swaps a `..data` symlink atomically under the same name.

Invalid: the error (file:line) is logged, STATUS=reload failed is sent
upstream, and nothing running is touched. Valid: `reload_plan.plan()` says
what differs, and this module writes it into the desired state in one go;
the supervisor's reconcile step then moves the workers towards it:

    removed    moved to `retiring`: stopped gracefully, never started again
    added      a new unit, started as soon as its `after` is met
    changed    the new spec and a new generation: its workers are replaced
               (rolling: new ones ready first, rollout.py; the reply names
               the rollout, which `pyinit ctl reload` follows)
    scaled     the new worker count: highest ids stop first, new ids start
    unchanged  their reload mode (reload_signal, Service.reload(), restart)

Nothing is started or stopped while the desired state is half written.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pyinit.config import ConfigError, load
from pyinit.config.model import ReloadMode, ReloadTarget, Strategy, start_order
from pyinit.config.reload_plan import describe, keep_default_outputs, plan
from pyinit.control.server import RELOAD_FAILED
from pyinit.core import signals
from pyinit.supervise.listen import ListenError
from pyinit.supervise.unit import Unit, WorkerState

if TYPE_CHECKING:
    from pyinit.supervise.supervisor import Supervisor


def reload(supervisor: Supervisor) -> str:
    """Re-read the file if there is one and apply the difference; unchanged
    services get their reload mode. Returns a one-line summary."""
    if supervisor.shutting_down:
        return "shutting down: nothing reloaded"
    if supervisor.upstream is not None:
        supervisor.upstream.reloading()
    supervisor.readiness.reloading()
    number = supervisor.rollouts.next_number()
    try:
        if supervisor.config.path is None:
            supervisor.log.info("reloading services", event="reload")
            reload_units(supervisor, list(supervisor.units.values()))
            summary = "reloaded"
        else:
            summary = apply_new_config(supervisor)
    finally:
        supervisor.run_hooks("reload")
        supervisor.reconcile()
    if summary.startswith(RELOAD_FAILED):
        supervisor.counters.reloads_failed += 1
    else:
        supervisor.counters.reloads_ok += 1
    rolling = supervisor.rollouts.pending(number)
    if rolling:  # `pyinit ctl reload` follows it by this number (control/follow.py)
        summary += f"; replacing {', '.join(rolling)} (rollout {number})"
    return summary


def reload_units(supervisor: Supervisor, units: list[Unit]) -> None:
    """Each unit's reload mode: its reload_signal, a restart, or nothing."""
    for unit in units:
        mode = unit.spec.reload
        if unit.main or mode is ReloadMode.NONE:
            continue
        if mode is ReloadMode.RESTART and unit.spec.strategy is Strategy.ROLLING:
            unit.renew()  # replaced one at a time, new ones ready first
            supervisor.rollouts.begin(unit, "reload")
            continue
        for worker in unit.workers.values():
            if worker.state not in (WorkerState.STARTING, WorkerState.RUNNING):
                continue
            if mode is ReloadMode.RESTART:
                # Its exit leaves it STOPPED, and reconcile starts it again.
                supervisor.stop_worker(worker, supervisor.stop_deadline(unit))
            else:
                # A Service class without reload() exits 0 on SIGHUP and is
                # started again, same worker id (SPEC 3).
                worker.restart_on_clean_exit = unit.spec.py_class is not None
                # The main process by default (issue 9.4): a gunicorn master
                # replaces its workers gracefully, where a HUP to its whole
                # group would kill them mid-request.
                to_group = unit.spec.reload_to is ReloadTarget.GROUP
                signals.send(worker.pid, unit.spec.reload_signal, group=to_group)


def apply_new_config(supervisor: Supervisor) -> str:
    """Re-read supervisor.config.path and apply it; returns a one-line summary."""
    log = supervisor.log
    old = supervisor.config
    assert old.path is not None
    try:
        has_main = any(unit.main for unit in supervisor.units.values())
        fmt = supervisor.options.log_format  # what pyinit logs in: shapes default outputs
        new = load(os.environ, old.path, allow_empty=has_main, log_format=fmt)
    except ConfigError as error:
        return _refused(supervisor, str(error))
    new = keep_default_outputs(old, new)
    try:
        # Before anything changes: a port that cannot be bound refuses the
        # whole reload, and what this opened is closed again.
        supervisor.listeners.open(new)
    except ListenError as error:
        return _refused(supervisor, str(error))

    changes = plan(old, new)
    log.info(describe(changes), event="reload")
    units = supervisor.units
    for name in changes.removed:
        unit = units.pop(name, None)
        if unit is not None:
            unit.enabled = False
            supervisor.rollouts.cancel(unit)
            supervisor.retiring.append(unit)
    for name in changes.changed:
        units[name].redefine(new.services[name])
        supervisor.rollouts.begin(units[name], "reload")
    for name in changes.scaled:
        unit = units[name]
        unit.spec = new.services[name]
        if unit.stable[1] == unit.generation:  # no rollout under way: the new count is good
            unit.stable = (unit.spec, unit.generation)

    # The units in the new start order, the main command last.
    main = {name: unit for name, unit in units.items() if unit.main}
    ordered = {
        name: units.get(name) or Unit(new.services[name])
        for layer in start_order(new)
        for name in layer
    }
    units.clear()
    units.update(ordered)
    units.update(main)
    supervisor.config = new
    if "grace" not in supervisor.options.explicit and new.settings.grace is not None:
        supervisor.grace = new.settings.grace
    supervisor.layers = [list(layer) for layer in start_order(new)] + [[n] for n in main]
    reload_units(supervisor, [units[name] for name in changes.unchanged])
    # Workers still running with a removed socket keep their own descriptor.
    supervisor.listeners.close_unused(new)
    return describe(changes)


def _refused(supervisor: Supervisor, reason: str) -> str:
    """Keep the running configuration; say why everywhere a user looks."""
    supervisor.log.error(
        f"reload refused, still running the previous configuration: {reason}",
        event="reload_failed",
    )
    if supervisor.upstream is not None:
        supervisor.upstream.status(f"{RELOAD_FAILED}: {reason}")
    return f"{RELOAD_FAILED}: {reason}"
