"""cotyledon's `oslo_config_glue`, for `pyinit.ServiceManager`: options from an oslo.config object.

    from oslo_config import cfg
    from pyinit import ServiceManager, oslo_config_glue

    conf = cfg.ConfigOpts()
    conf(project="myapp")
    manager = ServiceManager()
    oslo_config_glue.setup(manager, conf)   # registers and reads the options

Options (in the DEFAULT group): `graceful_shutdown_timeout` (seconds, 0:
wait forever; the manager's) and `log_options` (log every option's value at
DEBUG when the manager and each worker start, and after a reload).

On SIGHUP the manager re-reads the configuration files in an on_reload
hook (`reload_method` "reload", or "mutate" for oslo's mutable options), and
each worker does so before its service's own `reload()` runs.
Workers are forked, so the `ConfigOpts` object they use is the manager's,
as it was when they started.

oslo.config is the application's dependency, not pyinit's: it is imported
when one of these functions is first called.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pyinit.python.manager import ServiceManager

LOG = logging.getLogger(__name__)

ReloadMethod = Literal["reload", "mutate"]
_opts: list[Any] = []


def _service_opts() -> list[Any]:
    """The two options, built on first use (importing oslo.config then)."""
    if not _opts:
        import importlib

        cfg: Any = importlib.import_module("oslo_config.cfg")
        _opts.extend(
            [
                cfg.BoolOpt(
                    "log_options",
                    default=True,
                    mutable=True,
                    help="Enables or disables logging values of all registered options"
                    " when starting a service (at DEBUG level).",
                ),
                cfg.IntOpt(
                    "graceful_shutdown_timeout",
                    mutable=True,
                    default=60,
                    help="Specify a timeout after which a gracefully shutdown server"
                    " will exit. Zero value means endless wait.",
                ),
            ]
        )
    return _opts


def list_opts() -> list[tuple[None, list[Any]]]:
    """Entry point for oslo-config-generator."""
    return [(None, copy.deepcopy(_service_opts()))]


def register_opts(conf: Any) -> None:
    conf.register_opts(_service_opts())


def unregister_opts(conf: Any) -> None:
    conf.unregister_opts(_service_opts())


def load_options(service_manager: ServiceManager, conf: Any) -> None:
    """Apply the options to the manager (and log them, with log_options)."""
    service_manager._graceful_shutdown_timeout = conf.graceful_shutdown_timeout
    _log_options(conf)


def link(
    service_manager: ServiceManager, conf: Any, reload_method: ReloadMethod = "reload"
) -> None:
    """Apply the options now, and re-read the files on reload; `register_opts()` first."""
    load_options(service_manager, conf)

    def reload_manager() -> None:
        _reload_files(conf, reload_method)
        load_options(service_manager, conf)

    service_manager.register_hooks(
        on_new_worker=functools.partial(_new_worker, conf, reload_method),
        on_reload=reload_manager,
    )


def setup(
    service_manager: ServiceManager, conf: Any, reload_method: ReloadMethod = "reload"
) -> None:
    """Register the options on `conf` and link them to `service_manager`."""
    register_opts(conf)
    link(service_manager, conf, reload_method)


def _new_worker(
    conf: Any, reload_method: ReloadMethod, service_id: str, worker_id: int, service: Any
) -> None:
    """In each new worker: log the options; its reload() re-reads the files first."""
    _log_options(conf)
    own_reload = getattr(type(service), "reload", None)
    if own_reload is None:
        return

    def reload() -> None:
        _reload_files(conf, reload_method)
        _log_options(conf)
        own_reload(service)

    service.reload = reload


def _reload_files(conf: Any, reload_method: ReloadMethod) -> None:
    if reload_method == "mutate":
        conf.mutate_config_files()
    else:
        conf.reload_config_files()


def _log_options(conf: Any) -> None:
    if conf.log_options:
        LOG.debug("Full set of CONF:")
        conf.log_opt_values(LOG, logging.DEBUG)
