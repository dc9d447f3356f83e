"""`oslo_service.service` served by pyinit (test alias): launch() and ServiceBase."""

from pyinit import ServiceBase, launch

__all__ = ["ServiceBase", "launch"]
