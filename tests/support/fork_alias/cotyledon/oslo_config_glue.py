"""`cotyledon.oslo_config_glue` served by pyinit (test alias)."""

from pyinit.oslo_config_glue import (  # noqa: F401
    link,
    list_opts,
    load_options,
    register_opts,
    setup,
    unregister_opts,
)
