"""Services configuration: compact form and TOML -> one builder -> the frozen model.

`load` is the way in; `pyinit.config.model` holds what it returns, and
`pyinit.config.reload_plan` compares two of them for a reload.
"""

from pyinit.config.errors import ConfigError
from pyinit.config.load import load, load_toml, merge_settings, parse_config, parse_services

__all__ = ["ConfigError", "load", "load_toml", "merge_settings", "parse_config", "parse_services"]
