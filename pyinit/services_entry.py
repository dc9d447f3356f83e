"""Services mode's way in from the command line: load the configuration, or check it.

Kept out of cli.py so that `pyinit -- COMMAND` never imports the
configuration layer: cli imports this module only when services are
configured or `--check` is given.
"""

from __future__ import annotations

import os
import sys

from pyinit.config import ConfigError, load, merge_settings
from pyinit.config.model import Config
from pyinit.config.plan_text import format_plan
from pyinit.core.logs import fatal
from pyinit.core.model import Options
from pyinit.python.imports import first_import_error

EXIT_USAGE = 2


def _load(options: Options) -> Config | None:
    """The configuration the options name, or None after one error line."""
    try:
        return load(
            os.environ,
            options.config,
            allow_empty=bool(options.command),
            log_format=options.log_format if "log_format" in options.explicit else None,
        )
    except ConfigError as error:
        fatal(str(error))
        return None


def load_config(options: Options, *, verbose: bool) -> Config | None:
    """Load the services; the file's [pyinit] settings fill what flags left unset."""
    config = _load(options)
    if config is None:
        return None
    if verbose:
        options.explicit.add("log_level")  # -v is a flag: it wins over the file
    merge_settings(options, config.settings)
    return config


def check(options: Options) -> int:
    """`pyinit --check`: validate the services configuration, print the plan."""
    for warning in options.warnings:
        sys.stderr.write(f"pyinit: warning: {warning}\n")
    config = _load(options)
    if config is None:
        return EXIT_USAGE
    problem = first_import_error(config)  # py: classes, imported as a worker would
    if problem:
        fatal(problem)
        return EXIT_USAGE
    if options.command:
        sys.stdout.write(f"main command: {' '.join(options.command)}\n")
    sys.stdout.write(format_plan(config) + "\n")
    return 0
