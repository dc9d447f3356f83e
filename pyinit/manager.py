"""`ServiceManager`: cotyledon's programmatic API, run by pyinit's supervisor.

For applications that are their own entrypoint (`python app.py` starts
everything). Code written for cotyledon ports by changing the import:

    from pyinit import Service, ServiceManager

    class Printer(Service):
        def run(self):
            print(f"worker {self.worker_id} up", flush=True)

    if __name__ == "__main__":
        manager = ServiceManager()
        manager.add(Printer, workers=2)
        manager.run()          # exits 0 after SIGTERM

Differences from cotyledon, all from one choice (each worker is a fresh
interpreter, never a fork of the manager, so no thread or lock of the
manager leaks into a worker):
* the class must be importable by name: defined in a module, or in the
  main script (re-run as `__mp_main__`, as multiprocessing's spawn does, so
  keep start-up code under `if __name__ == "__main__":`);
* `args` and `kwargs` travel as JSON;
* `on_new_worker(service_id, worker_id)` runs in the manager, after the
  worker was started, not inside the worker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from pyinit.supervisor import Supervisor

Hook = Callable[..., object]


class ServiceManager:
    """Runs `Service` classes as supervised workers in this process's tree."""

    def __init__(
        self, wait_interval: float | None = None, graceful_shutdown_timeout: float = 60
    ) -> None:
        # wait_interval is accepted for cotyledon compatibility; pyinit's loop
        # never polls, so there is nothing to wait between.
        self._grace = graceful_shutdown_timeout
        self._services: dict[str, tuple[str, int, tuple[object, ...], dict[str, object]]] = {}
        self._hooks: dict[str, list[Hook]] = {
            "terminate": [],
            "reload": [],
            "new_worker": [],
            "dead_worker": [],
        }
        self._supervisor: Supervisor | None = None

    def add(
        self,
        service: type,
        workers: int = 1,
        args: Sequence[object] | None = None,
        kwargs: Mapping[str, object] | None = None,
    ) -> str:
        """Register a service class to run as `workers` processes; returns its id."""
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        base = getattr(service, "name", None) or service.__name__
        name = _safe_name(str(base))
        service_id, n = name, 2
        while service_id in self._services:
            service_id, n = f"{name}-{n}", n + 1
        self._services[service_id] = (
            _target(service),
            workers,
            tuple(args or ()),
            dict(kwargs or {}),
        )
        return service_id

    def reconfigure(self, service_id: str, workers: int) -> None:
        """Change a service's number of workers, also while running."""
        if service_id not in self._services:
            raise ValueError(f"no service with id {service_id!r}")
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        target, _, args, kwargs = self._services[service_id]
        self._services[service_id] = (target, workers, args, kwargs)
        if self._supervisor is not None:
            self._supervisor.scale(service_id, workers)

    def register_hooks(
        self,
        on_terminate: Hook | None = None,
        on_reload: Hook | None = None,
        on_new_worker: Hook | None = None,
        on_dead_worker: Hook | None = None,
    ) -> None:
        """Callbacks run in the manager: on SIGTERM, on SIGHUP, after a worker
        starts (service_id, worker_id) and after one dies (service_id,
        worker_id, exit_code). An exception in one is logged, never fatal."""
        for kind, hook in (
            ("terminate", on_terminate),
            ("reload", on_reload),
            ("new_worker", on_new_worker),
            ("dead_worker", on_dead_worker),
        ):
            if hook is not None:
                self._hooks[kind].append(hook)

    def run(self) -> NoReturn:
        """Supervise the services until a stop signal; exit with the status."""
        from pyinit.model import Options
        from pyinit.runner import run
        from pyinit.services_model import Config, ServiceSpec, Settings

        specs = {
            service_id: ServiceSpec(
                name=service_id,
                py_class=target,
                workers=workers,
                args=args,
                kwargs=MappingProxyType(kwargs),
            )
            for service_id, (target, workers, args, kwargs) in self._services.items()
        }
        options = Options()
        options.grace = self._grace
        level = os.environ.get("PYINIT_LOG_LEVEL", "").strip().lower()
        if level in ("debug", "info", "warning", "error"):
            options.log_level = level
        if os.environ.get("PYINIT_LOG_FORMAT", "").strip().lower() == "json":
            options.log_format = "json"
        config = Config(settings=Settings(), services=MappingProxyType(specs))
        sys.stdout.flush()
        sys.exit(run(options, config, prepare=self._attach))

    def _attach(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        supervisor.hooks = self._hooks


def _target(service: type) -> str:
    """How a fresh interpreter finds `service`: `module:Class` or `script.py:Class`."""
    module = service.__module__
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name  # run with `python -m package`
        else:
            module = os.path.abspath(getattr(main, "__file__", "") or "")
            if not module.endswith(".py"):
                raise ValueError(
                    f"{service.__qualname__} is defined in an interactive session;"
                    " define it in a module or a script file"
                )
    return f"{module}:{service.__qualname__}"


def _safe_name(text: str) -> str:
    name = "".join(c if c.isalnum() or c in "_-." else "-" for c in text).strip("-.")
    return name or "service"
