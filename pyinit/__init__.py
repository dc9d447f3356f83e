"""pyinit: PID 1 for containers whose image already has Python.

This module stays tiny on purpose: `pyinit` is imported on every start-up of
the init, so it must not pull in anything the single-command path does not use.
"""

__version__ = "0.1.0"
