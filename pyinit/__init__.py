"""pyinit: PID 1 for containers whose image already has Python.

This module stays tiny on purpose: `pyinit` is imported on every start-up of
the init, so it must not pull in anything the single-command path does not use.
"""

__version__ = "0.1.0"

__all__ = ["Service", "__version__"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.service import Service


def __getattr__(name: str) -> object:
    """`pyinit.Service` without importing pyinit.service on the init's start-up path."""
    if name == "Service":
        from pyinit import service

        return service.Service
    raise AttributeError(f"module 'pyinit' has no attribute {name!r}")
