"""When a worker counts as ready, and what pyinit tells upstream about it.

SPEC section 4. A started worker is STARTING until its readiness says so:
at once (`ready = "none"`), on READY=1 from any process of the service
(pyinit's own NOTIFY_SOCKET, the sender identified by the kernel), or when
a tcp/file/exec probe passes (probes.py). Probes run only while the
worker is not ready, so nothing polls once it is. `ready_timeout` and
`watchdog` turn silence into a failure, which the restart policy handles.

Upstream (systemd, podman) hears STATUS=N/M on every change and READY=1
once every unit is satisfied, again after each reload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinit.config.model import ReadinessKind
from pyinit.core.spawn import SpawnError, spawn
from pyinit.supervise.notify_socket import resolve_sender
from pyinit.supervise.probes import Probe
from pyinit.supervise.unit import WorkerState

if TYPE_CHECKING:
    from pyinit.supervise.supervisor import Supervisor
    from pyinit.supervise.unit import Worker


class ReadinessWatch:
    """Readiness of every worker of one supervisor, and the upstream report."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.checks: dict[int, Worker] = {}  # exec readiness checks running, by pid
        self._ready_sent = False
        self._status_text = ""

    def watch(self, worker: Worker) -> None:
        """STARTING: ready at once (ready = none), or when a check or READY=1 says so."""
        supervisor = self._supervisor
        spec = worker.unit.spec
        kind = spec.ready.kind
        if kind is ReadinessKind.NONE:
            self.mark_ready(worker)
            return
        if spec.ready_timeout > 0:
            worker.ready_timer = supervisor.loop.call_later(
                spec.ready_timeout, lambda: self._not_ready_in_time(worker)
            )
        if kind is not ReadinessKind.NOTIFY:  # notify: READY=1 arrives on the socket
            probe = Probe(
                supervisor.loop,
                spec.ready,
                on_ready=lambda: self.mark_ready(worker),
                spawn_check=lambda argv: self._spawn_check(argv, worker),
                log=supervisor.log,
                label=worker.label,
            )
            worker.probe = probe
            probe.start()

    def mark_ready(self, worker: Worker) -> None:
        """STARTING -> RUNNING: the worker is up; what waited for it may start."""
        if worker.state is not WorkerState.STARTING:
            return
        worker.state = WorkerState.RUNNING
        worker.stop_watching()
        spec = worker.unit.spec
        if spec.ready.kind is not ReadinessKind.NONE:
            self._supervisor.log.info(
                f"{worker.label}: ready", service=spec.name, worker=worker.worker_id, event="ready"
            )
        if spec.watchdog:
            self._arm_watchdog(worker)
        self._supervisor.reconcile()  # what waited for it may start

    def on_notify(self, sender_pid: int, fields: dict[str, str]) -> None:
        """A datagram on pyinit's notify socket; the kernel says who sent it."""
        supervisor = self._supervisor
        worker = resolve_sender(sender_pid, supervisor.by_pid)
        if worker is None:
            supervisor.log.debug(f"notify message from pid {sender_pid}, not a service: ignored")
            return
        if fields.get("READY") == "1":
            self.mark_ready(worker)
        if fields.get("WATCHDOG") == "1" and worker.watchdog_timer is not None:
            self._arm_watchdog(worker)
        if "STATUS" in fields:
            worker.status_text = fields["STATUS"]
        extend = fields.get("EXTEND_TIMEOUT_USEC", "")
        if extend.isdigit() and worker.state is WorkerState.STOPPING:
            # A Service's graceful_shutdown_timeout: move the SIGKILL deadline.
            worker.cancel_timer()
            if int(extend) < 2**64 - 1:
                worker.timer = supervisor.loop.call_later(
                    int(extend) / 1e6, lambda: supervisor.kill_worker(worker)
                )

    def report(self) -> None:
        """Tell upstream: STATUS=N/M services ready, and READY=1 once all are."""
        supervisor = self._supervisor
        if supervisor.shutting_down:
            return
        units = list(supervisor.units.values())
        ready = sum(1 for unit in units if unit.is_satisfied())
        text = f"{ready}/{len(units)} services ready"
        upstream = supervisor.upstream
        if upstream is not None:
            if text != self._status_text:
                upstream.status(text)
            if ready == len(units) and not self._ready_sent:
                upstream.ready()
        if ready == len(units) and not self._ready_sent:
            self._ready_sent = True
            supervisor.log.info("all services ready", event="ready")
        self._status_text = text

    def reloading(self) -> None:
        """READY=1 is sent again once everything is ready after the reload."""
        self._ready_sent = False

    def _not_ready_in_time(self, worker: Worker) -> None:
        worker.ready_timer = None
        if worker.state is not WorkerState.STARTING:
            return
        timeout = worker.unit.spec.ready_timeout
        self._fail(worker, f"not ready within {timeout:g} s", "ready_timeout")

    def _arm_watchdog(self, worker: Worker) -> None:
        if worker.watchdog_timer is not None:
            worker.watchdog_timer.cancel()
        assert worker.unit.spec.watchdog is not None
        worker.watchdog_timer = self._supervisor.loop.call_later(
            worker.unit.spec.watchdog, lambda: self._watchdog_expired(worker)
        )

    def _watchdog_expired(self, worker: Worker) -> None:
        worker.watchdog_timer = None
        if worker.state is not WorkerState.RUNNING:
            return
        self._fail(worker, f"no WATCHDOG=1 for {worker.unit.spec.watchdog:g} s", "watchdog")

    def _fail(self, worker: Worker, why: str, event: str) -> None:
        """Stop a live worker as a failure: its exit goes through the restart policy."""
        supervisor = self._supervisor
        supervisor.log.error(
            f"{worker.label}: {why}; restarting it",
            service=worker.unit.name,
            worker=worker.worker_id,
            event=event,
        )
        supervisor.stop_worker(worker, supervisor.stop_deadline(worker.unit))
        worker.failing = True

    def _spawn_check(self, argv: list[str], worker: Worker) -> int:
        """Start an exec readiness check; its exit reaches the probe through the reaper."""
        try:
            pid = spawn(argv, new_session=True)
        except SpawnError as error:
            self._supervisor.log.warning(f"{worker.label}: readiness check cannot start: {error}")
            return 0
        self.checks[pid] = worker
        return pid
