"""pyinit: PID 1 for containers whose image already has Python.

This module stays tiny on purpose: `pyinit` is imported on every start-up of
the init, so it must not pull in anything the single-command path does not use.
The public API is imported on first use: `Service` and `ServiceManager`
(cotyledon's shape), `ServiceBase`, `launch` and `ServiceLauncher`
(oslo.service's), `listen_sockets()` (the sockets pyinit holds for a
service), and the `pyinit.oslo_config_glue` module.
"""

__version__ = "0.1.0"

__all__ = [
    "Service",
    "ServiceBase",
    "ServiceLauncher",
    "ServiceManager",
    "__version__",
    "launch",
    "listen_sockets",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.python.launcher import ServiceBase, ServiceLauncher, launch
    from pyinit.python.manager import ServiceManager
    from pyinit.python.service import Service
    from pyinit.python.sockets import listen_sockets


def __getattr__(name: str) -> object:
    """`pyinit.Service`, `pyinit.ServiceManager`, ..., imported when first asked for."""
    if name == "Service":
        from pyinit.python.service import Service

        return Service
    if name == "ServiceManager":
        from pyinit.python.manager import ServiceManager

        return ServiceManager
    if name == "listen_sockets":
        from pyinit.python.sockets import listen_sockets

        return listen_sockets
    if name in ("ServiceBase", "ServiceLauncher", "launch"):
        from pyinit.python import launcher

        return getattr(launcher, name)
    raise AttributeError(f"module 'pyinit' has no attribute {name!r}")
