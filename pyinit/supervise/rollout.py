"""Rolling replacement: new workers in, old workers out, without a moment of nobody serving.

Issue 9. A reload that changes a service, `ctl restart` and `reload =
"restart"` bump the unit's `generation`: its workers are then *stale*.
`strategy = "restart"`: reconcile stops them and starts new ones (a gap).
`strategy = "rolling"`: `step()` replaces them `max_surge` at a time:

    slot worker (old generation, RUNNING)
        -> a *surge* worker (same worker id, new generation) is started beside it
        -> the surge worker is ready (its `ready` check, then `settle` seconds alive)
        -> it takes the slot; the old one is *draining* (its stop signal, SIGKILL
           after its grace) and is forgotten once it exits
    no stale, surge or draining worker left -> the rollout is done

Each step only records state and is driven by reconcile(), so an exit, a
readiness event, a timer or another reload in the middle all land in one
place: a newer reload makes the surge workers stale too (they are drained),
and the slots go on to the newest definition.

Failure: a surge worker that exits, or is not ready within `ready_timeout`,
fails the rollout. Its surge workers are drained, and the unit goes back to
its last fully rolled-out definition (`Unit.stable`; the running Config too,
so the next SIGHUP tries the new one again). Slots already handed over are
rolled back the same way, one at a time; if that fails too, what runs is
kept. The old workers never stopped serving. The failure is logged, sent
upstream as STATUS=, and shown in `ctl status`, where `pyinit ctl reload`
reads it to exit non-zero.

Surge and draining workers live beside the slots (`Unit.surge`,
`Unit.draining`): during a rollout two processes carry one worker id
(SPEC 3), and what is keyed by the slot (scaling, the restart policy,
`after`) must keep seeing the one serving.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from pyinit.config.model import ServiceSpec, Strategy, start_order
from pyinit.supervise.starter import start_worker
from pyinit.supervise.unit import ALIVE, Worker, WorkerState

if TYPE_CHECKING:
    from pyinit.core.model import ExitStatus
    from pyinit.supervise.supervisor import Supervisor
    from pyinit.supervise.unit import Unit

_SERVING = (WorkerState.STARTING, WorkerState.RUNNING)


class RolloutState(enum.Enum):
    WAITING = "waiting"  # for its `after` dependencies (issue 9 item 3)
    ROLLING = "rolling"
    DONE = "done"
    FAILED = "failed"


ACTIVE = frozenset({RolloutState.WAITING, RolloutState.ROLLING})


@dataclass
class Rollout:
    """One replacement of a unit's workers, as `ctl status` and STATUS= report it."""

    number: int  # shared by every unit one reload changed; `ctl reload` follows it
    reason: str  # "reload" or "restart"
    spec: ServiceSpec  # the definition being rolled out
    generation: int
    started_at: float
    total: int  # workers to replace
    state: RolloutState = RolloutState.ROLLING
    replaced: int = 0
    detail: str = ""
    rolling_back: bool = False  # failed, and slots already handed over go back

    def row(self) -> dict[str, object]:
        return {
            "number": self.number,
            "state": self.state.value,
            "replaced": self.replaced,
            "total": self.total,
            "detail": self.detail,
        }


def is_stale(unit: Unit, worker: Worker) -> bool:
    return worker.generation != unit.generation and worker.state in ALIVE


class Rollouts:
    """The rolling replacements of one supervisor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.count = 0  # the last rollout number handed out

    # -- starting one --------------------------------------------------------------

    def next_number(self) -> int:
        self.count += 1
        return self.count

    def begin(self, unit: Unit, reason: str) -> None:
        """The unit's generation was just bumped: record rollout number `count` on it."""
        if unit.spec.strategy is not Strategy.ROLLING:
            unit.stable = (unit.spec, unit.generation)
            return
        total = sum(
            1
            for w in unit.workers.values()
            if w.state is WorkerState.RUNNING and w.generation != unit.generation
        )
        rollout = Rollout(self.count, reason, unit.spec, unit.generation, time.monotonic(), total)
        unit.rollout = rollout
        if not total:  # nothing serves yet (not started, stopped, starting): nothing to roll
            rollout.state = RolloutState.DONE
            rollout.detail = "nothing running to replace"
            unit.stable = (unit.spec, unit.generation)

    def pending(self, number: int) -> list[str]:
        """Units whose rollout `number` is still under way."""
        return [
            unit.name
            for unit in self._supervisor.units.values()
            if unit.rollout is not None
            and unit.rollout.number == number
            and unit.rollout.state in ACTIVE
        ]

    # -- the reconcile step --------------------------------------------------------

    def replace_stale(self, unit: Unit) -> bool:
        """Workers of an older generation: rolled (`step`), or stopped to start
        afresh (strategy restart). False while the new definition waits for
        its `after` (item 3): until then nothing of the unit starts or stops."""
        supervisor = self._supervisor
        stale = [w for w in unit.workers.values() if is_stale(unit, w)]
        if stale or unit.surge:
            blockers = [
                name
                for name in unit.spec.after
                if (dependency := supervisor.units.get(name)) is None
                or not dependency.is_satisfied()
                or self.replacing(dependency)
            ]
            if blockers:
                self._wait_for(unit, blockers)
                return False
        if unit.spec.strategy is Strategy.ROLLING:
            self.step(unit)
            return True
        for worker in stale:
            if worker.state in _SERVING:
                supervisor.stop_worker(worker, supervisor.stop_deadline(unit))
        return True

    def replacing(self, unit: Unit) -> bool:
        """Is anything of `unit` being replaced (so what names it in `after` waits)?"""
        return bool(unit.surge) or any(is_stale(unit, w) for w in unit.workers.values())

    def _wait_for(self, unit: Unit, blockers: list[str]) -> None:
        """Stale workers whose new definition waits for `after` (item 3): nothing moves yet."""
        rollout = unit.rollout
        if rollout is not None and rollout.state in ACTIVE:
            rollout.state = RolloutState.WAITING
            rollout.detail = f"waiting for {', '.join(blockers)}"

    def step(self, unit: Unit) -> None:
        """Move one rolling unit's replacement along; called by reconcile()."""
        supervisor = self._supervisor
        spec = unit.spec
        rollout = unit.rollout
        if rollout is not None and rollout.state is RolloutState.WAITING:
            rollout.state, rollout.detail = RolloutState.ROLLING, ""
        for worker_id, worker in list(unit.surge.items()):
            if worker.generation != unit.generation or worker_id >= spec.workers:
                del unit.surge[worker_id]  # superseded by a newer reload, or scaled away
                self._drain(unit, worker)
        for worker_id, worker in sorted(unit.surge.items()):
            self._maybe_hand_over(unit, worker_id, worker)
        stale = [
            w for i, w in sorted(unit.workers.items()) if i < spec.workers and is_stale(unit, w)
        ]
        for worker in stale:
            if worker.state is WorkerState.STARTING and worker.worker_id not in unit.surge:
                # Not serving yet: nothing to keep up, replace it in place.
                supervisor.stop_worker(worker, supervisor.stop_deadline(unit))
        waiting = [
            w for w in stale if w.state is WorkerState.RUNNING and w.worker_id not in unit.surge
        ]
        while waiting and len(unit.surge) < max(1, spec.max_surge):
            old = waiting.pop(0)
            new = Worker(unit, old.worker_id)
            unit.surge[old.worker_id] = new
            start_worker(supervisor, new)
        self._maybe_done(unit, stale)

    def _maybe_hand_over(self, unit: Unit, worker_id: int, new: Worker) -> None:
        """A ready, settled surge worker takes its slot; the old one drains."""
        supervisor = self._supervisor
        old = unit.workers.get(worker_id)
        if old is not None and old.state in _SERVING and new.state is not WorkerState.RUNNING:
            return  # not ready yet: readiness.mark_ready() calls reconcile when it is
        if old is not None and old.state in _SERVING:
            settle_end = new.started_at + unit.spec.settle
            if time.monotonic() < settle_end:
                if new.timer is None:
                    new.timer = supervisor.loop.call_at(settle_end, lambda: self._settled(new))
                return
        # Ready and settled (or the old one is gone anyway): the slot is the new one's.
        del unit.surge[worker_id]
        unit.workers[worker_id] = new
        if old is None:
            return
        if old.state in ALIVE:
            self._drain(unit, old)
        else:
            old.cancel_timer()  # BACKOFF: its restart is the new worker
        rollout = unit.rollout
        if rollout is not None and new.generation == rollout.generation:
            rollout.replaced += 1
        supervisor.log.info(
            f"{new.label}: pid {new.pid} took over from pid {old.pid or '-'}",
            service=unit.name,
            worker=worker_id,
            pid=new.pid,
            event="replaced",
        )

    def _settled(self, worker: Worker) -> None:
        worker.timer = None
        self._supervisor.reconcile()

    def _drain(self, unit: Unit, worker: Worker) -> None:
        """Stop a worker that no slot holds any more; forgotten once it exits."""
        supervisor = self._supervisor
        worker.stop_watching()
        if worker.state in _SERVING:
            supervisor.stop_worker(worker, supervisor.stop_deadline(unit))
        if worker.state is WorkerState.STOPPING:
            unit.draining.append(worker)
        else:
            worker.cancel_timer()  # never started (spawn failed): nothing to wait for

    def _maybe_done(self, unit: Unit, stale: list[Worker]) -> None:
        rollout = unit.rollout
        if rollout is None:
            return
        busy = bool(stale or unit.surge or unit.draining)
        if rollout.state is RolloutState.FAILED and rollout.rolling_back and not busy:
            rollout.rolling_back = False
            if rollout.replaced:
                self._supervisor.log.info(
                    f"{unit.name}: rolled back to the previous definition",
                    service=unit.name,
                    event="rolled_back",
                )
        if rollout.state not in ACTIVE:
            return
        if busy:
            total = rollout.total
            rollout.detail = f"{rollout.replaced}/{total} replaced" if total else ""
            return
        rollout.state = RolloutState.DONE
        took = time.monotonic() - rollout.started_at
        rollout.detail = f"{rollout.replaced} worker(s) replaced in {took:.2f} s"
        unit.stable = (unit.spec, unit.generation)
        self._supervisor.log.info(
            f"{unit.name}: {rollout.reason} rolled out: {rollout.detail}",
            service=unit.name,
            event="rolled_out",
        )

    # -- exits and failures -------------------------------------------------------------

    def on_exit(self, worker: Worker, status: ExitStatus) -> bool:
        """A surge or draining worker ended; True if it was one (nothing else to do)."""
        unit = worker.unit
        if worker in unit.draining:
            unit.draining.remove(worker)
            worker.state = WorkerState.STOPPED  # STOPPING -> STOPPED, and forgotten
            return True
        if unit.surge.get(worker.worker_id) is not worker:
            return False
        del unit.surge[worker.worker_id]
        worker.state = WorkerState.STOPPED
        if not self._supervisor.shutting_down:
            self.fail(unit, f"new worker {worker.label} {status.describe()} before it was ready")
        return True

    def not_ready(self, worker: Worker, why: str) -> bool:
        """ready_timeout of a surge worker: the rollout failed. False: not a surge worker."""
        unit = worker.unit
        if unit.surge.get(worker.worker_id) is not worker:
            return False
        self.fail(unit, f"new worker {worker.label} {why}")
        return True

    def fail(self, unit: Unit, why: str) -> None:
        """Drain the surge, keep the old workers, go back to the last good definition."""
        supervisor = self._supervisor
        for worker in list(unit.surge.values()):
            self._drain(unit, worker)
        unit.surge.clear()
        rollout = unit.rollout
        if rollout is not None and rollout.rolling_back:
            self._keep_what_runs(unit, why)
            return
        stable_spec, stable_generation = unit.stable
        if rollout is not None:
            rollout.state = RolloutState.FAILED
            rollout.detail = why
            rollout.rolling_back = True
        # Back to the stable definition under a fresh generation number (one
        # is never reused: a later reload must not take the failed workers
        # for its own). Its workers keep running; those of the failed
        # generation are now stale and are rolled back one at a time, unless
        # it was a restart, whose new workers are as good as the old.
        failed_spec, failed_generation = unit.spec, unit.generation
        fresh = unit.generation + 1
        for worker in unit.all_workers():
            if worker.generation == stable_generation or (
                failed_spec == stable_spec and worker.generation == failed_generation
            ):
                worker.generation = fresh
        unit.spec, unit.generation = stable_spec, fresh
        unit.stable = (stable_spec, fresh)
        self._restore_config(unit, failed_spec)
        what = rollout.reason if rollout is not None else "replacement"
        kept = sum(1 for w in unit.workers.values() if w.state in _SERVING)
        supervisor.log.error(
            f"{unit.name}: {what} failed: {why}; keeping the previous definition"
            f" ({kept} worker(s) serving)",
            service=unit.name,
            event="reload_failed",
        )
        if supervisor.upstream is not None:
            supervisor.upstream.status(f"{what} failed: {unit.name}: {why}")
        supervisor.reconcile()

    def _keep_what_runs(self, unit: Unit, why: str) -> None:
        """Rolling back failed too: stop trying, the workers that run are kept as they are."""
        for worker in unit.workers.values():
            if is_stale(unit, worker):
                worker.generation = unit.generation
        self._supervisor.log.error(
            f"{unit.name}: rolling back failed too ({why}); keeping the workers that run",
            service=unit.name,
            event="reload_failed",
        )

    def _restore_config(self, unit: Unit, failed: ServiceSpec) -> None:
        """The running Config says the old definition again, so the next SIGHUP retries."""
        supervisor = self._supervisor
        config = supervisor.config
        if config.services.get(unit.name) != failed:
            return  # a ctl restart, or a service the file does not define
        services = dict(config.services)
        services[unit.name] = unit.spec
        candidate = dataclasses.replace(config, services=MappingProxyType(services))
        try:
            start_order(candidate)
        except ValueError:
            # The old `after` names a service this reload removed: keep the new order.
            services[unit.name] = dataclasses.replace(unit.spec, after=failed.after)
            candidate = dataclasses.replace(config, services=MappingProxyType(services))
        supervisor.config = candidate

    def cancel(self, unit: Unit) -> None:
        """`ctl stop` or removal: surge workers go, a rollout under way ends as failed."""
        for worker in list(unit.surge.values()):
            self._drain(unit, worker)
        unit.surge.clear()
        rollout = unit.rollout
        if rollout is not None and rollout.state in ACTIVE:
            rollout.state = RolloutState.FAILED
            rollout.detail = "cancelled: the service was stopped"

    # -- reporting ----------------------------------------------------------------------

    def describe(self) -> str:
        """What STATUS= adds while rollouts run or after the latest failed."""
        notes = []
        for unit in self._supervisor.units.values():
            rollout = unit.rollout
            if rollout is None:
                continue
            if rollout.state is RolloutState.ROLLING:
                notes.append(f"replacing {unit.name} ({rollout.replaced}/{rollout.total})")
            elif rollout.state is RolloutState.WAITING:
                notes.append(f"{unit.name} {rollout.detail}")
            elif rollout.state is RolloutState.FAILED and rollout.number == self.count:
                notes.append(f"{rollout.reason} failed: {unit.name}: {rollout.detail}")
        return "; ".join(notes)
