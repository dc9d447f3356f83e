"""`import oslo_service` served by pyinit (test alias; see ../README.md)."""
