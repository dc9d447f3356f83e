"""oslo.service's shape: `launch(conf, service, workers=N)` and `ServiceBase`.

    from pyinit import ServiceBase, launch

    class Api(ServiceBase):
        def start(self): ...        # in each worker, then wait() in a thread
        def stop(self): ...         # on SIGTERM; wait() should then return
        def wait(self): ...
        def reset(self): ...        # on SIGHUP

    launcher = launch(conf, Api(conf), workers=2)
    launcher.wait()                 # returns 0 after SIGTERM stopped everything

As in oslo.service, `service` is an instance, not a class: it is built once
in the launching process and forked into each worker, which then calls
`start()` and `wait()` on its copy. The workers are supervised by
`ServiceManager` (manager.py), so signals, restarts and exit statuses are
cotyledon's, which oslo.service's ProcessLauncher shares for SIGTERM, SIGINT
and SIGHUP. Unlike oslo.service, workers=1 forks one worker too (cotyledon's
"same code path when workers=1"), and nothing here needs eventlet.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from pyinit.python.manager import ServiceManager


class ServiceBase:
    """oslo.service's base class for a service: start, stop, wait, reset.

    The defaults make a service that does nothing until it is stopped:
    `wait()` blocks until `stop()` was called.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        # oslo's examples call super().__init__(conf): accept and ignore it.
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start the service's work (in the worker, before `wait()`)."""

    def stop(self, graceful: bool = False) -> None:
        """Stop the service: called on SIGTERM; `wait()` should return soon after."""
        self._stopped.set()

    def wait(self) -> None:
        """Block until the service is done (runs in a thread of the worker)."""
        self._stopped.wait()

    def reset(self) -> None:
        """Reload: called on SIGHUP; the worker keeps running."""


class ServiceLauncher:
    """What `launch()` returns: `wait()` runs the workers, `stop()`/`restart()` steer them."""

    def __init__(
        self, conf: Any, service: object, workers: int = 1, restart_method: str = "reload"
    ) -> None:
        if restart_method not in ("reload", "mutate"):
            raise ValueError(f"restart_method must be 'reload' or 'mutate', not {restart_method!r}")
        self.conf = conf
        self.service = service
        self._manager = ServiceManager(graceful_shutdown_timeout=_grace(conf))
        self._manager._register(
            lambda worker_id: service, workers, None, None, type(service).__name__
        )
        method = "mutate_config_files" if restart_method == "mutate" else "reload_config_files"
        reload_files = getattr(conf, method, None)
        if callable(reload_files):
            self._manager.register_hooks(on_reload=reload_files)

    def wait(self) -> int:
        """Run and supervise the workers until stopped; the exit status (0 after SIGTERM)."""
        return self._manager._serve()

    def stop(self) -> None:
        """Stop every worker gracefully, as SIGTERM does."""
        self._manager.shutdown()

    def restart(self) -> None:
        """Reload, as SIGHUP does: the config files, then reset() in every worker."""
        os.kill(os.getpid(), signal.SIGHUP)


def launch(
    conf: Any, service: object, workers: int | None = 1, restart_method: str = "reload"
) -> ServiceLauncher:
    """Run `service` (an instance with start/stop/wait/reset) in `workers` forked workers."""
    if workers is None:
        workers = 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, not {workers!r}")
    if isinstance(service, type):
        raise TypeError(f"launch() takes a service instance, not the class {service.__name__}")
    if not all(callable(getattr(service, m, None)) for m in ("start", "stop", "wait")):
        raise TypeError(f"{type(service).__name__} is not a service: it needs start, stop, wait")
    return ServiceLauncher(conf, service, workers, restart_method)


def _grace(conf: Any) -> float:
    """oslo.service's graceful_shutdown_timeout option when conf has it, else 60 s."""
    try:
        value = conf.graceful_shutdown_timeout
    except Exception:  # no such option registered (oslo.config raises its own error)
        return 60.0
    return float(value) if isinstance(value, int | float) and value >= 0 else 60.0
