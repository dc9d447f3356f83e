"""`import cotyledon` served by pyinit (test alias; see ../README.md)."""

from pyinit import Service, ServiceManager

__all__ = ["Service", "ServiceManager"]
