"""Periodic services: when the next run is due, and what a due run does.

SPEC section 3, `schedule`. A unit with a schedule has one worker, started
by a loop timer rather than by reconcile(): `every` counts from the run
before, `cron` asks `next_cron_time` for the next wall-clock match, and
`run_on_start` makes the first run due at once. A run that finds the
previous one still going is skipped (logged), never queued, so a slow job
cannot pile up. Split from the supervisor because timing is its own job:
reconcile() only says whether a unit's schedule is armed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pyinit.config.model import next_cron_time
from pyinit.supervise.starter import start_worker
from pyinit.supervise.unit import ALIVE

if TYPE_CHECKING:
    from pyinit.supervise.supervisor import Supervisor
    from pyinit.supervise.unit import Unit


def schedule_next_run(supervisor: Supervisor, unit: Unit, *, first: bool = False) -> bool:
    """Arm the timer of the next run; False if the unit has no worker to run."""
    schedule = unit.spec.schedule
    assert schedule is not None
    if unit.spec.workers < 1:
        return False  # workers = 0: defined, but not run (scaling up schedules it)
    if first and schedule.run_on_start:
        delay = 0.0
    elif schedule.every is not None:
        delay = schedule.every
    else:
        assert schedule.cron is not None
        now = datetime.now().astimezone()
        due = next_cron_time(schedule.cron, now)
        if due is None:
            supervisor.log.warning(f"{unit.name}: cron {schedule.cron!r} never matches again")
            return True
        delay = max(0.0, (due - now).total_seconds())
    unit.schedule_timer = supervisor.loop.call_later(delay, lambda: _run_periodic(supervisor, unit))
    return True


def cancel_schedule(unit: Unit) -> None:
    """No run is due any more (the unit was removed, disabled or replaced)."""
    if unit.schedule_timer is not None:
        unit.schedule_timer.cancel()
        unit.schedule_timer = None


def _run_periodic(supervisor: Supervisor, unit: Unit) -> None:
    """The timer fired: start the run unless the last one is still going."""
    unit.schedule_timer = None
    if supervisor.shutting_down or not unit.enabled or supervisor.units.get(unit.name) is not unit:
        return
    worker = unit.workers.get(0)
    if worker is None:
        return
    if worker.state in ALIVE:
        supervisor.log.info(
            f"{unit.name}: previous run still going; this run is skipped",
            service=unit.name,
            event="skipped",
        )
    else:
        worker.cancel_timer()
        start_worker(supervisor, worker)
    schedule_next_run(supervisor, unit)
